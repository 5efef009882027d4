"""kill -9 of a job worker at random moments, then a rerun: the end state is the uninterrupted
one, and every mail decided on reached the real SMTP server at least once.

Each trial fills the job table the same way (reset requests that are allowed, refused with a
notice to the owner's other address, or for unknown addresses; expiry warnings; verification
mails), drains it with ``flask domainguard jobs --drain`` in a subprocess, kills that with
SIGKILL somewhere in its run, waits for its leases to expire and drains again. The journal
(but for ``mail_attempt`` rows, which a kill between sending and marking repeats on purpose),
the addresses and the job table must equal what one uninterrupted drain leaves.
"""

from __future__ import annotations

import json
import random
import signal
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_domainguard import jobs
from flask_domainguard.journal import EventKind, transaction
from flask_domainguard.notices import queue_expiry_warning
from flask_domainguard.reset.flow import submit_reset_request
from flask_domainguard.timeutil import utcnow
from tests import hostapp
from tests.conftest import SMTPSink, use_smtp
from tests.sweep_support import StatusServer, domainguard_process
from tests.test_sweep_crash import VOLATILE

ALLOWED, REFUSED, UNKNOWN, WARNED, VERIFYING = 40, 10, 40, 15, 15
LEASE_SECONDS = 1


def fill(app: Flask, guard: Any) -> None:
    """The same users, addresses and queued jobs for every trial."""
    db = hostapp.db
    db.session.remove()
    db.drop_all()
    db.create_all()
    old = utcnow() - timedelta(days=400)

    def user_with(*addresses: tuple[str, bool]) -> Any:
        user = hostapp.User(email=None)
        db.session.add(user)
        db.session.commit()
        for n, (address, verified) in enumerate(addresses):
            row = guard.add_address(user, address, verified=verified, primary=n == 0)
            if verified:
                row.verified_at = old
        db.session.commit()
        return user

    for i in range(ALLOWED):
        user_with((f"ok{i}@shop{i}.com", True))
    for i in range(REFUSED):
        user_with((f"backup-r{i}@gmail.com", True), (f"pending{i}@shop{i}.com", False))
    warned = [user_with((f"w{i}@gmail.com", True)) for i in range(WARNED)]
    for i in range(VERIFYING):
        user_with((f"v{i}@gmail.com", True), (f"new{i}@shop{i}.com", False))

    with app.test_request_context("/domainguard/reset", base_url="https://accounts.host.test"):
        for i in range(ALLOWED):
            submit_reset_request(guard, f"ok{i}@shop{i}.com", client=f"10.0.0.{i}")
        for i in range(REFUSED):
            submit_reset_request(guard, f"pending{i}@shop{i}.com", client=f"10.0.1.{i}")
        for i in range(UNKNOWN):
            submit_reset_request(guard, f"nobody{i}@shop{i}.com", client=f"10.0.2.{i}")
    until = utcnow().replace(microsecond=0) + timedelta(days=10)
    with transaction(db, guard.models) as tx:
        for i, user in enumerate(warned):
            queue_expiry_warning(
                guard,
                tx,
                user_id=user.id,
                domain=f"shop{i}.com",
                stage="expiring_soon",
                until=until,
                reason="expires soon",
                addresses=[f"w{i}@gmail.com"],
            )
        for i in range(VERIFYING):
            row = guard.find_address(f"new{i}@shop{i}.com")
            job_id = jobs.enqueue(
                guard, jobs.VERIFICATION_MAIL, {"address_id": row.id}, address=row.address
            )
            tx.record(EventKind.VERIFICATION_SENT, actor="user", address=row, job=job_id)


def journal(guard: Any) -> list[tuple[Any, ...]]:
    Event = guard.models.Event
    hostapp.db.session.expire_all()
    return sorted(
        (
            e.kind,
            e.address or "",
            e.actor,
            tuple(sorted((k, str(v)) for k, v in e.details.items() if k not in VOLATILE)),
        )
        for e in hostapp.db.session.scalars(
            sa.select(Event).where(Event.kind.not_in(["mail_attempt", "mail_failed"]))
        )
    )


def job_table(guard: Any) -> list[tuple[str, str, str | None]]:
    Job = guard.models.Job
    hostapp.db.session.expire_all()
    return sorted((j.kind, j.state, j.address) for j in hostapp.db.session.scalars(sa.select(Job)))


def drain(config: dict[str, Any]) -> dict[str, Any]:
    proc = domainguard_process(config, "jobs", "--drain", "--json")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    return dict(json.loads(out))


EXPECTED_RECIPIENTS = (
    {f"ok{i}@shop{i}.com" for i in range(ALLOWED)}
    | {f"backup-r{i}@gmail.com" for i in range(REFUSED)}
    | {f"w{i}@gmail.com" for i in range(WARNED)}
    | {f"new{i}@shop{i}.com" for i in range(VERIFYING)}
)


@pytest.mark.slow
@pytest.mark.settings(DOMAINGUARD_JOBS_WORKERS=0)  # only the subprocess drains
def test_kill_9_of_a_worker_then_rerun_equals_an_uninterrupted_drain(
    app: Flask,
    guard: Any,
    app_config: dict[str, Any],
    status_server: StatusServer,
    smtp_sink: SMTPSink,
) -> None:
    status_server.delay = 0.01
    config = {
        "SQLALCHEMY_DATABASE_URI": app_config["SQLALCHEMY_DATABASE_URI"],
        **status_server.config(),
        "SERVER_NAME": "accounts.host.test",
        "DOMAINGUARD_JOBS_LEASE": LEASE_SECONDS,
    }
    use_smtp(config, smtp_sink)
    # A slow mail server keeps the drain long against the worker's start-up, whose time
    # varies with the machine's load: a kill timed from the reference run must still find
    # the worker running.
    smtp_sink.delay = 0.03
    fill(app, guard)
    started = time.monotonic()
    reference_report = drain(config)
    duration = time.monotonic() - started
    reference, reference_jobs = journal(guard), job_table(guard)
    total = ALLOWED + REFUSED + UNKNOWN + WARNED + VERIFYING
    assert reference_report["drained"]["done"] == total
    assert {state for _, state, _ in reference_jobs} == {"done"}
    assert set(smtp_sink.recipients()) == EXPECTED_RECIPIENTS
    assert len([r for r in reference if r[0] == "reset_sent"]) == ALLOWED

    rng = random.Random(11)
    killed = repeated = 0
    trials = 6
    for trial in range(trials):
        fill(app, guard)
        smtp_sink.envelopes.clear()
        proc = domainguard_process(config, "jobs", "--drain", "--json")
        time.sleep(rng.uniform(0.3, duration * 0.85))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=60)
        time.sleep(LEASE_SECONDS + 0.2)  # the dead worker's leases expire
        drain(config)
        assert journal(guard) == reference, f"trial {trial}: the journal differs"
        assert job_table(guard) == reference_jobs, f"trial {trial}: the job table differs"
        got = smtp_sink.recipients()
        assert set(got) == EXPECTED_RECIPIENTS, f"trial {trial}: {EXPECTED_RECIPIENTS - set(got)}"
        repeated += len(got) - len(EXPECTED_RECIPIENTS)
    print(f"\n{killed} of {trials} trials killed a running worker; {repeated} mails sent twice")
    assert killed >= trials - 1, "most trials must kill a running worker"
