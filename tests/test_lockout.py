"""Guessing second-factor codes: a sliding window (no doubled burst at a window edge),
escalating lockouts held in the database across processes, and the owner told once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from freezegun import freeze_time

from flask_domainguard.journal import EventKind
from flask_domainguard.twofactor import verify
from flask_domainguard.twofactor.attempts import Outcome
from tests.twofactor_helpers import (
    add_site_user,
    code_at,
    enrol,
    running_site,
    site_config,
    site_guard,
)

ROOT = Path(__file__).resolve().parents[1]
CLIENT = "203.0.113.5"
WRONG = "000000"


def guess(guard: Any, user: Any, n: int, *, client: str | None = CLIENT) -> list[Any]:
    return [verify.verify_totp(guard, user, WRONG, client=client) for _ in range(n)]


def test_no_doubled_burst_at_a_window_edge(guard: Any, make_user: Any) -> None:
    # A fixed five-minute window restarts at 10:05:00: four guesses just before it and five
    # just after would all count. The sliding window sees five within five minutes.
    user = make_user()
    enrol(guard, user)
    with freeze_time(datetime(2025, 8, 1, 10, 4, 55, tzinfo=timezone.utc)):
        assert all(
            r.outcome is Outcome.WRONG and r.retry_after is None for r in guess(guard, user, 4)
        )
    with freeze_time(datetime(2025, 8, 1, 10, 5, 5, tzinfo=timezone.utc)):
        [fifth] = guess(guard, user, 1)
        assert fifth.outcome is Outcome.WRONG and fifth.retry_after == timedelta(minutes=5)
        assert guess(guard, user, 1)[0].outcome is Outcome.LOCKED


def test_the_window_slides_old_guesses_leave_it(guard: Any, make_user: Any) -> None:
    user = make_user()
    enrol(guard, user)
    start = datetime(2025, 8, 2, 10, 0, 0, tzinfo=timezone.utc)
    with freeze_time(start):
        guess(guard, user, 4)
    with freeze_time(start + timedelta(minutes=5, seconds=1)):
        results = guess(guard, user, 4)
        assert [r.retry_after for r in results] == [None] * 4


def test_lockouts_escalate_cap_and_are_forgotten_after_a_quiet_day(
    guard: Any, make_user: Any
) -> None:
    user = make_user()
    secret, _ = enrol(guard, user)
    when = datetime(2025, 8, 3, 10, 0, 1, tzinfo=timezone.utc)
    expected = [timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2), timedelta(hours=2)]
    for lockout in expected:
        with freeze_time(when):
            *_, last = guess(guard, user, 5, client=None)
            assert last.retry_after == lockout
            assert verify.verify_totp(guard, user, code_at(secret), client=None).outcome is (
                Outcome.LOCKED
            )
        when += lockout + timedelta(seconds=1)
    with freeze_time(when + timedelta(days=1)):
        *_, last = guess(guard, user, 5, client=None)
        assert last.retry_after == timedelta(minutes=5)
    levels = [e.details["level"] for e in _events(guard, EventKind.TWOFACTOR_LOCKED_OUT)]
    assert levels == [1, 2, 3, 4, 1]  # client=None: the user's lockouts only


def test_a_success_restarts_the_attempts_not_the_escalation(guard: Any, make_user: Any) -> None:
    user = make_user()
    secret, _ = enrol(guard, user)
    when = datetime(2025, 8, 4, 10, 0, 1, tzinfo=timezone.utc)
    with freeze_time(when):
        guess(guard, user, 5, client=None)
    when += timedelta(minutes=6)
    with freeze_time(when):
        assert verify.verify_totp(guard, user, code_at(secret), client=None).ok
        *_, last = guess(guard, user, 5, client=None)
        assert last.retry_after == timedelta(minutes=30)


@pytest.mark.settings(
    DOMAINGUARD_2FA_LOCKOUTS="1 minute, 1 hour", DOMAINGUARD_2FA_LIMIT="3 per minute"
)
def test_lockouts_are_config(guard: Any, make_user: Any) -> None:
    user = make_user()
    enrol(guard, user)
    with freeze_time(datetime(2025, 8, 5, 10, 0, 1, tzinfo=timezone.utc)):
        assert guess(guard, user, 3, client=None)[-1].retry_after == timedelta(minutes=1)


def test_the_owner_is_told_at_the_first_lockout_only(
    guard: Any, make_user: Any, outbox: list[Any]
) -> None:
    user = make_user()
    guard.add_address(user, "ana@gmail.com", verified=True)
    enrol(guard, user)
    when = datetime(2025, 8, 6, 10, 0, 1, tzinfo=timezone.utc)
    with freeze_time(when):
        guess(guard, user, 4)
        assert outbox == []
        guess(guard, user, 1)
    [notice] = outbox
    assert notice.recipients == ["ana@gmail.com"]
    assert "Wrong sign-in codes" in notice.subject and "paused for 5 minutes" in notice.body
    with freeze_time(when + timedelta(minutes=6)):
        guess(guard, user, 5, client="198.51.100.4")
    assert len(outbox) == 1, "not for every escalation"


# -- across processes --------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.sqlite'}"
    return str(request.getfixturevalue("pg_server_url"))


@pytest.fixture
def shared_site(shared_url: str, tmp_path: Path) -> Iterator[tuple[Flask, str, str]]:
    with running_site(site_config(shared_url, tmp_path)) as app:
        _, secret, _ = add_site_user(app)
        yield app, shared_url, secret


def worker(url: str, when: datetime, secret: str, client: str, *attempts: str) -> list[Any]:
    """Attempts in another process (tests/lockout_worker.py), at ``when``."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.lockout_worker",
            url,
            when.isoformat(),
            secret,
            client,
            *attempts,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_escalation_across_two_processes(shared_site: tuple[Flask, str, str]) -> None:
    app, url, secret = shared_site
    t0 = datetime(2025, 8, 7, 10, 0, 1, tzinfo=timezone.utc)
    first = worker(url, t0, secret, "192.0.2.1", *["wrong"] * 5)
    assert [r["outcome"] for r in first] == ["wrong_code"] * 5
    assert first[-1]["retry_after"] == 300
    # Another process, another client: the user's lockout holds, with the time left.
    [held] = worker(url, t0 + timedelta(minutes=1), secret, "192.0.2.2", "right")
    assert held == {"outcome": "locked", "retry_after": 240}
    # After it, the next run of guesses is locked out for longer, whichever process sees it.
    second = worker(url, t0 + timedelta(minutes=5, seconds=1), secret, "192.0.2.3", *["wrong"] * 5)
    assert second[-1]["retry_after"] == 1800
    third = worker(url, t0 + timedelta(minutes=36), secret, "192.0.2.4", *["wrong"] * 5)
    assert third[-1]["retry_after"] == 7200
    [ok] = worker(url, t0 + timedelta(hours=2, minutes=37), secret, "192.0.2.5", "right")
    assert ok["outcome"] == "ok"
    with app.app_context():
        lockouts = _events(site_guard, EventKind.TWOFACTOR_LOCKED_OUT)
    assert [e.details["level"] for e in lockouts if e.details["scope"] == "user"] == [1, 2, 3]
    # Each client address was locked out once, at its own first level.
    assert [e.details["level"] for e in lockouts if e.details["scope"] == "client"] == [1, 1, 1]


def test_a_burst_from_two_processes_gets_the_limit_and_no_more(
    shared_site: tuple[Flask, str, str],
) -> None:
    _, url, secret = shared_site
    when = datetime(2025, 8, 8, 10, 0, 1, tzinfo=timezone.utc)
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(
            pool.map(
                lambda client: worker(url, when, secret, client, *["wrong"] * 5),
                ["192.0.2.11", "192.0.2.12"],
            )
        )
    checked = [r for run in runs for r in run if r["outcome"] != "locked"]
    # Never more codes checked than the limit. Two attempts counted at the same moment may lock
    # the account one guess early (the one that crosses the limit locks before the other's
    # code is checked): fewer, never more.
    assert 1 <= len(checked) <= 5, runs
    assert any(r["outcome"] == "locked" for r in runs[0] + runs[1]), runs


def _events(guard: Any, kind: EventKind) -> list[Any]:
    Event = guard.models.Event
    query = sa.select(Event).where(Event.kind == kind.value).order_by(Event.id)
    return list(guard.db.session.scalars(query))
