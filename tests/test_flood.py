"""A spread-out reset flood against a real threaded server (issue 17, at reduced size).

Many clients (``X-Forwarded-For`` through ``ProxyFix``) ask for resets of unknown addresses,
a few legitimate users ask for their own, all at once. Every request gets the same answer;
every legitimate user's reset mail reaches the real SMTP server within a bounded time; every
request is accounted for in the job table (done, or shed and counted); and the site sheds
unknown-address work first once the queue is deeper than ``DOMAINGUARD_JOBS_MAX_PENDING``.
The full-size figures come from ``benchmarks/reset_flood_bench.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests import hostapp
from tests.conftest import SMTPSink, use_smtp
from tests.flood_support import FloodServer, flood, plan, seed_users, wait_for_mail
from tests.sweep_support import StatusServer

LEGIT = 30
TOTAL = 600
CONCURRENCY = 50
ATTACKER_CLIENTS = 60
#: Seconds after the flood within which every legitimate user must have their mail.
DELIVERY_BOUND = 90


@pytest.mark.slow
def test_a_spread_out_flood_drops_no_legitimate_reset(
    app: Any,
    guard: Any,
    app_config: dict[str, Any],
    smtp_sink: SMTPSink,
    status_server: StatusServer,
) -> None:
    status_server.delay = 0.2  # every legitimate request looks its domain up live
    if hostapp.db.engine.dialect.name == "sqlite":
        # Request threads and workers write at once: what a site under load runs SQLite with.
        hostapp.db.session.execute(sa.text("PRAGMA journal_mode=WAL"))
        hostapp.db.session.commit()
    legit = seed_users(guard, LEGIT)
    config: dict[str, Any] = {
        "SQLALCHEMY_DATABASE_URI": app_config["SQLALCHEMY_DATABASE_URI"],
        **status_server.config(),
        "WTF_CSRF_ENABLED": False,
        "SERVER_NAME": None,
        "DOMAINGUARD_EXTERNAL_URL": "https://accounts.host.test",
        "DOMAINGUARD_JOBS_MAX_PENDING": 100,
        "DOMAINGUARD_JOBS_POLL": 0.5,
    }
    use_smtp(config, smtp_sink)
    server = FloodServer(config)
    try:
        shots = plan(legit, total=TOTAL, attacker_clients=ATTACKER_CLIENTS)
        result = flood(server.url, shots, concurrency=CONCURRENCY)
        delivered: dict[str, float] = {}
        wait_for_mail(smtp_sink, legit, timeout=DELIVERY_BOUND, delivered_at=delivered)
        # The last unknown-address jobs may still be running: let the workers finish them.
        Job = guard.models.Job
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and hostapp.db.session.scalar(
            sa.select(sa.func.count()).select_from(Job).where(Job.state == "pending")
        ):
            hostapp.db.session.rollback()
            time.sleep(0.1)
        hostapp.db.session.rollback()
    finally:
        logs = server.stop()
    summary = result.summary()
    print(f"\nflood: {summary}")

    # One answer for everybody.
    assert result.statuses == {200: TOTAL}, summary
    # Every legitimate user got their reset mail, within the bound.
    assert set(delivered) == set(legit), f"missing: {sorted(set(legit) - set(delivered))}"
    waits = [delivered[a] - result.answered_at[a] for a in legit]
    print(f"mail after the answer: max {max(waits):.1f} s")
    assert max(waits) < DELIVERY_BOUND
    assert len([r for _, rcpts in smtp_sink.envelopes for r in rcpts]) == LEGIT  # no other mail

    # Nothing vanished: every request is in the table, done or shed, and counted.
    hostapp.db.session.expire_all()
    Job = guard.models.Job
    by_state = dict(
        hostapp.db.session.execute(
            sa.select(Job.state, sa.func.sum(Job.requests)).group_by(Job.state)
        ).all()
    )
    assert sum(int(n) for n in by_state.values()) == TOTAL, by_state
    assert set(by_state) <= {"done", "shed"}, by_state
    # The queue overflowed: unknown-address work was shed, and only that.
    assert int(by_state.get("shed", 0)) > 0, by_state
    shed_addresses = set(
        hostapp.db.session.scalars(sa.select(Job.address).where(Job.state == "shed"))
    )
    assert not shed_addresses & set(legit)
    Event = guard.models.Event
    assert not hostapp.db.session.scalars(sa.select(Event).where(Event.kind == "reset_shed")).all()
    assert "shed" in logs  # the operator is told, with the counts
    sent = hostapp.db.session.scalars(sa.select(Event).where(Event.kind == "reset_sent")).all()
    assert sorted(e.address for e in sent) == sorted(legit)
