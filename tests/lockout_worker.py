"""A second process for tests/test_lockout.py: second-factor attempts at a given instant.

``python -m tests.lockout_worker DATABASE_URL ISO_TIME SECRET CLIENT ATTEMPT...`` where each
ATTEMPT is ``wrong`` or ``right``; prints one JSON object per attempt (outcome, retry_after in
seconds) on a line. Time is frozen at ISO_TIME in this process, as the app sees it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from freezegun import freeze_time

from flask_domainguard.twofactor import verify
from tests.twofactor_helpers import SiteUser, code_at, create_site, site_config, site_db, site_guard


def main(argv: list[str]) -> int:
    url, when, secret, client, *attempts = argv
    with tempfile.TemporaryDirectory() as tmp:
        app = create_site(site_config(url, Path(tmp)))
        with app.app_context(), freeze_time(datetime.fromisoformat(when)):
            user = site_db.session.get(SiteUser, 1)
            for attempt in attempts:
                code = code_at(secret)
                if attempt == "wrong":
                    code = f"{(int(code) + 1) % 1_000_000:06d}"
                result = verify.verify_totp(site_guard, user, code, client=client)
                retry = result.retry_after.total_seconds() if result.retry_after else None
                print(json.dumps({"outcome": result.outcome.value, "retry_after": retry}))
        with app.app_context():
            site_db.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
