"""``flask domainguard check``: one live lookup, the verdict, exit codes, nothing written."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskCliRunner

from flask_domainguard.check import check_target
from flask_domainguard.timeutil import utcnow
from tests import hostapp


@pytest.fixture
def statuses(app_config: dict[str, Any]) -> Path:
    path = Path(app_config["DOMAINGUARD_STATIC_STATUS_FILE"])
    path.write_text(
        json.dumps(
            {
                "fine.com": {
                    "registered": True,
                    "statuses": ["active"],
                    "expires_at": "2031-01-01T00:00:00Z",
                },
                "gone.com": {"registered": False},
                "maybe.com": {"registered": None, "error": "registry maintenance"},
                "reborn.com": {
                    "registered": True,
                    "statuses": ["active"],
                    "registered_at": (utcnow() - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            }
        )
    )
    return path


def check(runner: FlaskCliRunner, *args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(args=["domainguard", "check", *args, "--json"])
    return result.exit_code, json.loads(result.stdout) if result.stdout.startswith("{") else {}


def test_exit_codes_by_verdict(runner: FlaskCliRunner, statuses: Path) -> None:
    assert check(runner, "fine.com")[0] == 0
    code, data = check(runner, "www.gone.com")
    assert code == 3 and data["domain"] == "gone.com"
    assert data["verdict"] == {
        "kind": "released",
        "unsafe": True,
        "until": None,
        "reason": data["verdict"]["reason"],
    }
    code, data = check(runner, "maybe.com")
    assert code == 4 and data["verdict"]["kind"] == "unknown"
    assert data["observation"]["error"] == "registry maintenance"


def test_readable_table(runner: FlaskCliRunner, statuses: Path) -> None:
    result = runner.invoke(args=["domainguard", "check", "fine.com"])
    assert result.exit_code == 0
    assert "verdict" in result.stdout and "ok" in result.stdout
    assert "2031-01-01" in result.stdout
    result = runner.invoke(args=["domainguard", "check", "gone.com"])
    assert result.exit_code == 3 and "UNSAFE" in result.stdout


def test_an_address_is_judged_with_its_verified_at(
    runner: FlaskCliRunner, guard: Any, statuses: Path, make_user: Any
) -> None:
    user = make_user()
    row = guard.add_address(user, "old@reborn.com", verified=True)
    row.verified_at = utcnow() - timedelta(days=30)
    hostapp.db.session.commit()
    code, data = check(runner, "Old@Reborn.com")
    assert code == 3 and data["verdict"]["kind"] == "reregistered"
    assert data["verified_at"] is not None
    # The domain alone, without an address's verification date, is simply registered.
    assert check(runner, "reborn.com")[0] == 0


def test_check_writes_nothing(
    runner: FlaskCliRunner, guard: Any, statuses: Path, make_user: Any
) -> None:
    guard.add_address(make_user(), "a@gone.com", verified=True)
    Domain, Event = guard.models.Domain, guard.models.Event
    before = hostapp.db.session.scalar(sa.select(sa.func.count()).select_from(Event))
    assert check(runner, "gone.com")[0] == 3
    hostapp.db.session.expire_all()
    row = hostapp.db.session.get(Domain, "gone.com")
    assert row.checked_at is None and row.verdict is None
    assert hostapp.db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == before


def test_trusted_providers_are_safe_and_never_looked_up(
    runner: FlaskCliRunner, statuses: Path
) -> None:
    # Not in the static file: a lookup would have answered "could not tell" (exit 4).
    code, data = check(runner, "someone@gmail.com")
    assert code == 0 and data["trusted"] is True and data["looked_up"] is False
    assert data["observation"] is None and data["verdict"]["kind"] == "ok"
    # Even with a backend that cannot be built: it is never asked.
    result = runner.invoke(args=["domainguard", "check", "gmail.com", "--backend", "fastly"])
    assert result.exit_code == 0 and "never looked up" in result.stdout
    assert check(runner, "someone@example.org")[0] == 4  # an untrusted one is looked up


def test_invalid_targets(runner: FlaskCliRunner, statuses: Path) -> None:
    result = runner.invoke(args=["domainguard", "check", "not a domain"])
    assert result.exit_code == 2
    result = runner.invoke(args=["domainguard", "check", "com"])
    assert result.exit_code == 2


def test_check_target_from_a_running_event_loop(guard: Any, statuses: Path) -> None:
    """An async host (a coroutine calling the sync API) gets the verdict: ``asyncio.run``
    alone refuses to start inside a running loop."""

    async def host_coroutine() -> Any:
        return check_target(guard, "www.gone.com")

    result = asyncio.run(host_coroutine())
    assert result.domain == "gone.com" and result.verdict.kind.value == "released"
    assert result.observation is not None and result.observation.registered is False
