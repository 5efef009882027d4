"""What the evidence rule costs honest users: resets refused on healthy domains when the status
source fails a share of lookups, and how many resets the sweep's recent checks answer alone.

N users, each with one verified address on its own healthy domain. A real sweep checks every
domain at the start of a recheck cycle (so each is next due ``DOMAINGUARD_RECHECK_AFTER`` later,
with its jitter); then each user asks for one reset at a uniformly random moment of that
cycle, through ``guard.reset_decision`` with the app's defaults. The status source fails each
lookup with probability ``--fail`` (independently, as an overloaded API does). Prints one JSON
line per failure rate::

    python benchmarks/reset_evidence_bench.py --users 5000 --fail 0.01 0.10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from freezegun import freeze_time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flask_domainguard.status.observation import Observation  # noqa: E402
from tests import hostapp  # noqa: E402

START = datetime(2025, 3, 3, 9, 0, tzinfo=timezone.utc)


class FlakyBackend:
    """Healthy answers for every domain, failing each lookup with probability ``FAIL``."""

    name = "flaky"
    FAIL = 0.0
    attempts = 0
    failures = 0
    rng = random.Random(7)

    def __init__(self, settings: Any) -> None:
        pass

    async def observe(
        self, domain: str, *, client: Any = None, timeout: float | None = None
    ) -> Observation:
        FlakyBackend.attempts += 1
        if FlakyBackend.rng.random() < FlakyBackend.FAIL:
            FlakyBackend.failures += 1
            return Observation.failed(domain, "HTTP 503", source="flaky")
        return Observation(
            domain=domain,
            registered=True,
            statuses=frozenset({"active"}),
            expires_at=START + timedelta(days=400),
            registered_at=datetime(2008, 1, 1, tzinfo=timezone.utc),
            source="flaky",
        )

    def server_key(self, domain: str) -> str:
        return "flaky"

    async def aclose(self) -> None:
        return None


def run(users: int, fail: float, seed: int) -> dict[str, Any]:
    from benchmarks.reset_evidence_bench import FlakyBackend  # the class the app loads
    from flask_domainguard.sweep import Sweep

    with tempfile.TemporaryDirectory(prefix="reset-evidence-") as tmp:
        app = hostapp.create_app(
            {
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/bench.db",
                "DOMAINGUARD_STATUS_BACKEND": "benchmarks.reset_evidence_bench:FlakyBackend",
            }
        )
        guard = hostapp.guard
        rng = random.Random(seed)
        with app.app_context(), freeze_time(START) as clock:
            hostapp.db.create_all()
            FlakyBackend.FAIL = 0.0
            addresses = []
            for i in range(users):
                user = hostapp.User(email=None)
                hostapp.db.session.add(user)
                hostapp.db.session.flush()
                row = guard.add_address(user, f"owner{i}@shop{i}.example", verified=True)
                row.verified_at = datetime(2016, 1, 1, tzinfo=timezone.utc)
                addresses.append(row.address)
            hostapp.db.session.commit()
            Sweep(guard).run()
            cycle = guard.settings.recheck_after
            asks = sorted((rng.random() * cycle, address) for address in addresses)
            FlakyBackend.FAIL, FlakyBackend.attempts, FlakyBackend.failures = fail, 0, 0
            FlakyBackend.rng = random.Random(seed + 1)
            allowed = refused = 0
            reasons: dict[str, int] = {}
            for offset, address in asks:
                clock.move_to(START + offset)
                decision = guard.reset_decision(address)
                allowed += decision.allowed
                refused += not decision.allowed
                reasons[decision.reason] = reasons.get(decision.reason, 0) + 1
            looked_up = len(asks) - _answered_by_evidence(asks, guard.settings)
            hostapp.db.session.remove()
            hostapp.db.engine.dispose()
    return {
        "users": users,
        "fail_rate": fail,
        "allowed": allowed,
        "refused": refused,
        "refused_pct": round(100 * refused / users, 3),
        "reasons": reasons,
        "answered_by_sweep_evidence_pct": round(100 * (users - looked_up) / users, 2),
        "lookup_attempts": FlakyBackend.attempts,
        "failed_attempts": FlakyBackend.failures,
    }


def _answered_by_evidence(asks: list[tuple[timedelta, str]], settings: Any) -> int:
    # The sweep checked every domain at START: a reset within the evidence window of that
    # check needs no lookup (each domain gets one reset, so no other check intervenes).
    return sum(1 for offset, _ in asks if offset < settings.reset_live_check_after)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--fail", type=float, nargs="+", default=[0.01, 0.10])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    os.chdir(ROOT)
    for fail in args.fail:
        print(json.dumps(run(args.users, fail, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
