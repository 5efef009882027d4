"""Fault injection: a status server that fails in every way never costs a healthy address."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from flask_domainguard.sweep import Sweep
from flask_domainguard.timeutil import utcnow
from tests import hostapp
from tests.sweep_support import StatusServer, seed
from tests.test_sweep import domain, rewind

FAULTS = {
    "err500.com": "500",
    "limited.com": "429:1",
    "slow.com": "timeout",
    "cut.com": "truncated",
    "junk.com": "garbage",
    "unknown.com": "unknown",
    "undelegated.com": "undelegated",
}


pytestmark = pytest.mark.use_status_server


@pytest.fixture
def status_server(status_server: StatusServer) -> StatusServer:
    status_server.slow = 2.5
    return status_server


def verified_ids(guard: Any) -> set[int]:
    EmailAddress = guard.models.EmailAddress
    hostapp.db.session.expire_all()
    return set(
        hostapp.db.session.scalars(
            sa.select(EmailAddress.id).where(EmailAddress.verified_at.is_not(None))
        )
    )


@pytest.mark.slow
def test_faults_never_unverify_and_the_run_stays_within_its_bounds(
    guard: Any, status_server: StatusServer
) -> None:
    healthy = {f"fine{i}.com": 2 for i in range(12)}
    ids = seed(guard, {**healthy, **dict.fromkeys(FAULTS, 1), "flaky.com": 1})
    status_server.answers.update(FAULTS)
    status_server.answers["flaky.com"] = "flaky:2:active"
    everyone = verified_ids(guard)
    sweeper = Sweep(guard, retry_base=0.05)
    started = time.monotonic()
    report = sweeper.run()
    elapsed = time.monotonic() - started
    # 3 attempts of at most 1 s (+1 s grace) each, plus short backoffs: far below 15 s.
    assert elapsed < 15, elapsed
    assert report.checked == len(healthy) + len(FAULTS) + 1
    assert report.errors == len(FAULTS)
    assert report.verdicts["unknown"] == len(FAULTS)
    assert report.verdicts["ok"] == len(healthy) + 1  # flaky.com recovered within its retries
    assert status_server.hits["flaky.com"] == 3
    assert status_server.hits["err500.com"] == 3  # retries are bounded (2 retries)
    for name in FAULTS:
        row = domain(guard, name)
        assert row.verdict is None and row.unsafe_since is None, name
        assert row.failures == 1 and row.last_error, name
        assert row.next_check_at > utcnow() + timedelta(minutes=20), name
        assert row.lease_owner is None
    assert "test-fastly-key" not in " ".join(domain(guard, n).last_error for n in FAULTS)

    # Hours later the same faults again: still nothing acts, failures count up.
    rewind(guard, 7)
    report = Sweep(guard, retry_base=0.05).run()
    assert report.unverified == 0 and report.held == 0
    assert verified_ids(guard) == everyone
    assert domain(guard, "err500.com").failures == 2
    assert all(domain(guard, name).verdict == "ok" for name in healthy)
    del ids


def test_retry_after_pauses_the_server_and_is_honoured(
    guard: Any, status_server: StatusServer
) -> None:
    seed(guard, {"limited.com": 1})
    status_server.answers["limited.com"] = "flaky:0:active"
    stamps: list[float] = []
    original = status_server.answers

    class Recorder(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            if key == "limited.com":
                stamps.append(time.monotonic())
                return "429:1" if len(stamps) == 1 else "active"
            return original.get(key, default)

    status_server.answers = Recorder(original)
    report = Sweep(guard, retry_base=0.01).run()
    assert report.verdicts == {"ok": 1}
    assert len(stamps) == 2 and stamps[1] - stamps[0] >= 0.95


def test_a_long_retry_after_ends_the_retries_and_delays_the_next_check(
    guard: Any, status_server: StatusServer
) -> None:
    seed(guard, {"busy.com": 1})
    status_server.answers["busy.com"] = "429:7200"
    started = time.monotonic()
    report = Sweep(guard, retry_base=0.01).run()
    assert time.monotonic() - started < 5
    assert status_server.hits["busy.com"] == 1
    assert report.errors == 1
    assert domain(guard, "busy.com").next_check_at >= utcnow() + timedelta(hours=1, minutes=59)


def test_a_known_verdict_survives_later_failures(guard: Any, status_server: StatusServer) -> None:
    seed(guard, {"steady.com": 1})
    Sweep(guard).run()
    assert domain(guard, "steady.com").verdict == "ok"
    for fault in ("500", "garbage", "truncated", "unknown"):
        status_server.answers["steady.com"] = fault
        rewind(guard, 1)
        Sweep(guard, retry_base=0.01).run()
        row = domain(guard, "steady.com")
        assert row.verdict == "ok" and row.registered is True, fault
