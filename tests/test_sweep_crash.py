"""kill -9 of a sweep at random moments, then a rerun: the end state is the uninterrupted one.

Each trial seeds the same data, starts ``flask domainguard sweep`` in a subprocess, kills it
with SIGKILL somewhere in its run (claiming, looking up, applying a batch, mailing or
finishing), waits for its leases to expire, and runs the sweep again to the end. The state it
leaves (every address's verified state and reason, every domain's verdict and confirmation,
the whole journal, the held actions, the job table) must equal what one uninterrupted run
leaves, no address may be unverified without exactly one journal row, and every mail the run
decided on (expiry warnings, unverify notices) must have reached the real SMTP server at
least once. Delivery attempts (``mail_attempt`` rows) are the one part of the journal that
may differ: a kill between sending and marking repeats a mail, by design.
"""

from __future__ import annotations

import json
import random
import signal
import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests import hostapp
from tests.conftest import SMTPSink, use_smtp
from tests.sweep_support import StatusServer, bulk_seed, snapshot, sweep_process

DOMAINS = 240
LEASE_SECONDS = 1


@pytest.fixture
def status_server(status_server: StatusServer) -> StatusServer:
    status_server.delay = 0.015
    return status_server


def scenario(status_server: StatusServer) -> tuple[dict[str, int], dict[str, str]]:
    domains = {f"c{i:03d}.com": 1 + i % 3 for i in range(DOMAINS)}
    answers = ["active"] * 6 + ["undelegated inactive", "active expiring", "active deleting", "500"]
    first_seen: dict[str, str] = {}
    for i, name in enumerate(domains):
        answer = answers[i % len(answers)]
        status_server.answers[name] = answer
        if answer == "undelegated inactive" and i % 20 < 10:
            first_seen[name] = "released"  # seen 7 h ago: this run confirms and acts
        if answer == "active deleting":
            first_seen[name] = "expired"
    return domains, first_seen


def reset(guard: Any, domains: dict[str, int], first_seen: dict[str, str]) -> None:
    hostapp.db.session.remove()
    hostapp.db.drop_all()
    hostapp.db.create_all()
    bulk_seed(guard, domains, first_seen=first_seen)
    # Every user also has an address at a trusted provider: each unverification mails a
    # notice there, and each expiry warning goes to both.
    from flask_domainguard.timeutil import utcnow

    db, m = hostapp.db, guard.models
    db.session.execute(
        sa.insert(m.Domain),
        [{"name": "gmail.com", "statuses": "", "failures": 0, "created_at": utcnow()}],
    )
    db.session.execute(
        sa.insert(m.EmailAddress),
        [
            {
                "user_id": row.user_id,
                "address": f"backup{row.user_id}@gmail.com",
                "host": "gmail.com",
                "registrable": "gmail.com",
                "primary": False,
                "verified_at": row.verified_at,
                "created_at": row.created_at,
            }
            for row in db.session.scalars(sa.select(m.EmailAddress))
        ],
    )
    db.session.commit()


#: Details that name rows or moments a rerun cannot reproduce: job and run ids, and a grace
#: end computed from when a lapse was first seen.
VOLATILE = {"job", "run", "held_action", "until", "verified_at"}


def journal(guard: Any) -> list[tuple[Any, ...]]:
    """The journal as a sorted list, without delivery attempts and volatile details."""
    Event = guard.models.Event
    hostapp.db.session.expire_all()
    return sorted(
        (
            e.kind,
            e.address or "",
            str(e.user_id),
            e.actor,
            tuple(sorted((k, str(v)) for k, v in e.details.items() if k not in VOLATILE)),
        )
        for e in hostapp.db.session.scalars(
            sa.select(Event).where(Event.kind.not_in(["mail_attempt", "mail_failed"]))
        )
    )


def intended_recipients(guard: Any) -> set[str]:
    """Whom the journal says the run decided to mail: the backup address of each user it
    warned or told about an unverification."""
    Event = guard.models.Event
    kinds = ["expiry_warning_sent", "unsafe_notice_sent"]
    users = hostapp.db.session.scalars(sa.select(Event.user_id).where(Event.kind.in_(kinds)))
    return {f"backup{user_id}@gmail.com" for user_id in users}


def jobs_state(guard: Any) -> dict[str, int]:
    Job = guard.models.Job
    rows = hostapp.db.session.execute(sa.select(Job.state, sa.func.count()).group_by(Job.state))
    return {state: int(n) for state, n in rows}


def finish(config: dict[str, Any]) -> dict[str, Any]:
    proc = sweep_process(config)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 1), err[-3000:]
    return dict(json.loads(out))


@pytest.mark.slow
def test_kill_9_then_rerun_equals_an_uninterrupted_run(
    app: Any,
    guard: Any,
    app_config: dict[str, Any],
    status_server: StatusServer,
    smtp_sink: SMTPSink,
) -> None:
    config = {
        "SQLALCHEMY_DATABASE_URI": app_config["SQLALCHEMY_DATABASE_URI"],
        **status_server.config(),
        "DOMAINGUARD_SWEEP_RETRIES": 0,
        "DOMAINGUARD_SWEEP_BATCH_SIZE": 12,
        "DOMAINGUARD_SWEEP_CONCURRENCY": 4,
        "DOMAINGUARD_SWEEP_LEASE": LEASE_SECONDS,
        "DOMAINGUARD_JOBS_LEASE": LEASE_SECONDS,
        "DOMAINGUARD_MAX_UNVERIFY": 10_000,
        "SERVER_NAME": "accounts.host.test",
    }
    use_smtp(config, smtp_sink)
    smtp_sink.delay = 0.005  # mail takes time, so kills land while mailing too
    domains, first_seen = scenario(status_server)
    reset(guard, domains, first_seen)
    started = time.monotonic()
    reference_report = finish(config)
    duration = time.monotonic() - started
    reference = snapshot(guard)
    reference_journal = journal(guard)
    assert reference_report["unverified"] > 50  # the trials cover the finishing phase too
    assert reference_report["checked"] == DOMAINS
    assert reference_report["warnings_sent"] > 10 and reference_report["notices_sent"] > 50
    intended = intended_recipients(guard)
    assert intended <= set(smtp_sink.recipients())
    assert set(jobs_state(guard)) == {"done"}

    rng = random.Random(4)
    killed = 0
    repeated = 0
    for trial in range(5):
        reset(guard, domains, first_seen)
        smtp_sink.envelopes.clear()
        proc = sweep_process(config)
        # Spread the kills over the whole run: start-up, batches, the finishing phase.
        time.sleep(rng.uniform(0.3, duration * 0.95))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=60)
        time.sleep(LEASE_SECONDS + 0.2)  # the dead run's leases and planned actions expire
        finish(config)
        state = snapshot(guard)
        assert state == reference, f"trial {trial} differs from the uninterrupted run"
        for address, (verified, _reason) in state["addresses"].items():
            assert verified or state["unverified_events"].count(address) == 1, address
        assert journal(guard) == reference_journal, f"trial {trial}: the journal differs"
        # Every mail decided on went out at least once; nothing waits or failed.
        assert intended_recipients(guard) == intended
        assert intended <= set(smtp_sink.recipients()), f"trial {trial}: a mail was lost"
        assert set(jobs_state(guard)) == {"done"}, jobs_state(guard)
        repeated += len(smtp_sink.envelopes) - len(intended)
    print(f"\n{killed} of 5 trials killed a running sweep; {repeated} mails sent twice")
    assert killed >= 4, "most trials must kill a running sweep"
