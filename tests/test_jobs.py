"""The durable job table: one row per request, coalescing, exclusive claims, retries with
backoff, mail at least once, shedding that journals, and the in-process workers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, g, request
from flask_mail import Message

from flask_domainguard import jobs
from flask_domainguard.background import jobs_for
from flask_domainguard.jobs import JobRun, claim, drain, enqueue, job_stats, shed
from flask_domainguard.journal import EventKind, transaction
from flask_domainguard.timeutil import utcnow
from tests.conftest import SMTPSink, _free_port, use_smtp
from tests.guard_helpers import OK, add, events, write_status

SAFE = "owner@safe-shop.com"


def rows(guard: Any) -> list[Any]:
    guard.db.session.expire_all()
    Job = guard.models.Job
    return list(guard.db.session.scalars(sa.select(Job).order_by(Job.id)))


def ask(app: Flask, address: str, *, client: str = "198.51.100.7", path: str = "") -> Any:
    response = app.test_client().post(
        path or "/domainguard/reset",
        data={"email": address},
        environ_base={"REMOTE_ADDR": client},
    )
    assert response.status_code == 200
    return response


@pytest.fixture
def smtp_config(app_config: dict[str, Any], smtp_sink: SMTPSink) -> dict[str, Any]:
    use_smtp(app_config, smtp_sink)
    app_config.update(
        WTF_CSRF_ENABLED=False,
        SERVER_NAME="accounts.host.test",
    )
    app_config.setdefault("DOMAINGUARD_JOBS_WORKERS", 0)  # the tests drain by hand
    app_config.setdefault("DOMAINGUARD_RESET_LIMIT_PER_CLIENT", "1000 per hour")
    return app_config


@pytest.fixture
def shop(smtp_config: dict[str, Any], app: Flask, guard: Any, make_user: Any) -> Any:
    write_status(app, {"safe-shop.com": OK})
    user = make_user()
    add(guard, user, SAFE, primary=True)
    add(guard, user, "owner@gmail.com")
    return user


def run_all(guard: Any) -> jobs.DrainReport:
    return drain(guard, "test-worker")


# -- the request path ----------------------------------------------------------------------


def test_every_request_is_the_same_insert_and_no_secret_is_stored(
    shop: Any, app: Flask, guard: Any
) -> None:
    ask(app, "Owner@Safe-Shop.com")
    ask(app, "nobody@safe-shop.com")
    known, unknown = rows(guard)
    assert (known.kind, known.state, known.attempts, known.requests) == (
        unknown.kind,
        unknown.state,
        unknown.attempts,
        unknown.requests,
    )
    assert set(known.payload) == set(unknown.payload)
    assert known.address == known.payload["address"] == SAFE  # normalised
    assert known.payload["client"] == "198.51.100.7"
    stored = repr(known.payload) + repr(unknown.payload)
    assert "token" not in stored.lower() and "session" not in stored.lower()


def test_requests_for_one_address_coalesce_into_one_job_and_one_mail(
    shop: Any, app: Flask, guard: Any, smtp_sink: SMTPSink
) -> None:
    for spelling in (SAFE, SAFE.upper(), " owner@safe-shop.com "):
        ask(app, spelling, client=f"198.51.100.{len(spelling)}")
    [job] = rows(guard)
    assert job.requests == 3
    run_all(guard)
    assert smtp_sink.recipients() == [SAFE]
    [sent] = events(guard, EventKind.RESET_SENT)
    assert sent.details["requests"] == 3 and sent.details["job"] == job.id
    # Once it ran, a new request is new work.
    ask(app, SAFE)
    assert [j.state for j in rows(guard)] == ["done", "pending"]


@pytest.mark.settings(DOMAINGUARD_RESET_LIMIT_PER_CLIENT="1 per hour")
def test_a_client_over_its_limit_is_queued_as_such_and_journalled_for_known_accounts(
    shop: Any, app: Flask, guard: Any, smtp_sink: SMTPSink
) -> None:
    ask(app, "nobody@safe-shop.com", client="203.0.113.5")  # within the limit
    ask(app, SAFE, client="203.0.113.5")  # over it
    run_all(guard)
    ask(app, SAFE, client="192.0.2.1")  # another client
    run_all(guard)
    assert smtp_sink.recipients() == [SAFE]  # the other client's request went through
    [refused] = events(guard, EventKind.RESET_REFUSED)
    assert refused.details["reason"] == "rate_limited" and refused.details["limit"] == "client"


# -- claiming ------------------------------------------------------------------------------


def test_a_claim_takes_no_more_than_it_asks_for(app: Flask, guard: Any) -> None:
    # PostgreSQL may run an IN (SELECT ... LIMIT) subquery again for each updated row:
    # a claim must not take the whole table.
    with transaction(guard.db, guard.models):
        for n in range(20):
            enqueue(guard, jobs.EXPIRY_WARNING, {"n": n})
    assert [job.id for job in claim(guard, "one", limit=3)] == [1, 2, 3]
    assert len(claim(guard, "two", limit=5)) == 5


def test_two_workers_never_claim_the_same_job(app: Flask, guard: Any) -> None:
    with transaction(guard.db, guard.models):
        for n in range(60):
            enqueue(guard, jobs.EXPIRY_WARNING, {"n": n})
    claimed: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def worker(owner: str) -> None:
        with app.app_context():
            barrier.wait()
            while batch := claim(guard, owner, limit=3):
                claimed[owner] += [job.id for job in batch]
                time.sleep(0.005)  # a worker runs its jobs before it claims again

    threads = [threading.Thread(target=worker, args=(name,)) for name in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not set(claimed["a"]) & set(claimed["b"])
    assert len(claimed["a"]) + len(claimed["b"]) == 60
    assert claimed["a"] and claimed["b"]


def test_a_lease_keeps_others_off_until_it_expires(app: Flask, guard: Any) -> None:
    with transaction(guard.db, guard.models):
        job_id = enqueue(guard, jobs.EXPIRY_WARNING, {})
    [first] = claim(guard, "dead-worker")
    assert claim(guard, "other") == []
    Job = guard.models.Job
    guard.db.session.execute(sa.update(Job).values(lease_until=utcnow() - timedelta(seconds=1)))
    guard.db.session.commit()
    [again] = claim(guard, "other")
    assert again.id == first.id == job_id and again.attempts == 2


# -- retries and at-least-once -------------------------------------------------------------


@pytest.fixture
def mail_down(app: Flask) -> Any:
    mail = app.extensions["mail"]
    port = mail.port
    mail.port = _free_port()  # nobody listens there: the connection is refused
    yield mail
    mail.port = port


def test_a_failed_mail_is_journalled_and_retried_with_backoff(
    shop: Any, app: Flask, guard: Any, smtp_sink: SMTPSink, mail_down: Any
) -> None:
    ask(app, SAFE)
    report = run_all(guard)
    assert report.failed == 1 and smtp_sink.recipients() == []
    [job] = rows(guard)
    assert job.state == "pending" and job.attempts == 1
    assert job.not_before > utcnow() + timedelta(seconds=20)
    assert job.last_error == "ConnectionRefusedError"
    [attempt] = events(guard, EventKind.MAIL_ATTEMPT)
    [failed] = events(guard, EventKind.MAIL_FAILED)
    assert failed.details["retry_at"] and failed.details["attempt"] == 1
    assert attempt.address == SAFE and not events(guard, EventKind.RESET_SENT)

    mail_down.port = smtp_sink.port  # the mail server is back
    assert run_all(guard).done == 0  # not before its time
    guard.db.session.execute(sa.update(guard.models.Job).values(not_before=utcnow()))
    guard.db.session.commit()
    assert run_all(guard).done == 1
    assert smtp_sink.recipients() == [SAFE]
    assert len(events(guard, EventKind.MAIL_ATTEMPT)) == 2
    assert len(events(guard, EventKind.RESET_SENT)) == 1


@pytest.mark.settings(DOMAINGUARD_JOBS_MAX_ATTEMPTS=2)
def test_a_job_gives_up_after_its_attempts_and_jobs_retry_revives_it(
    shop: Any, app: Flask, guard: Any, smtp_sink: SMTPSink, mail_down: Any
) -> None:
    ask(app, SAFE)
    for _ in range(2):
        run_all(guard)
        guard.db.session.execute(sa.update(guard.models.Job).values(not_before=utcnow()))
        guard.db.session.commit()
    [job] = rows(guard)
    assert job.state == "failed" and job.attempts == 2
    assert events(guard, EventKind.MAIL_FAILED)[-1].details["retry_at"] is None
    assert job_stats(guard)["failed"] == 1

    mail_down.port = smtp_sink.port
    runner = app.test_cli_runner()
    result = runner.invoke(args=["domainguard", "jobs", "--retry", "--drain", "--json"])
    assert result.exit_code == 0, result.output
    assert smtp_sink.recipients() == [SAFE]
    assert [j.state for j in rows(guard)] == ["done"]


def test_a_crash_between_sending_and_marking_sends_again_never_zero(
    shop: Any, app: Flask, guard: Any, smtp_sink: SMTPSink
) -> None:
    with transaction(guard.db, guard.models) as tx:
        from flask_domainguard.notices import queue_expiry_warning

        job_id = queue_expiry_warning(
            guard,
            tx,
            user_id=shop.id,
            domain="safe-shop.com",
            stage="expiring_soon",
            until=utcnow() + timedelta(days=9),
            reason="expires in 9 days",
            addresses=[SAFE],
        )
    [job] = claim(guard, "about-to-die")
    # The worker sends, then dies before it marks the job done.
    jobs.handler_for(job.kind)(guard, JobRun(guard, job, "about-to-die"))
    assert len(smtp_sink.envelopes) == 1
    guard.db.session.execute(
        sa.update(guard.models.Job).values(lease_until=utcnow() - timedelta(seconds=1))
    )
    guard.db.session.commit()
    assert run_all(guard).done == 1
    assert len(smtp_sink.envelopes) == 2  # one duplicate, never zero
    attempts = events(guard, EventKind.MAIL_ATTEMPT)
    assert [a.details["attempt"] for a in attempts] == [1, 2]
    assert {a.details["job"] for a in attempts} == {job_id}
    assert len(events(guard, EventKind.EXPIRY_WARNING_SENT)) == 1  # decided once


def test_a_claim_of_warnings_goes_out_over_one_connection_and_a_bad_job_fails_alone(
    shop: Any, app: Flask, guard: Any, smtp_sink: SMTPSink, make_user: Any
) -> None:
    """Warnings run together (one recipient query, one attempt commit, one SMTP session);
    a job that cannot run makes the batch fall back to one job at a time, so only it fails."""
    from flask_domainguard.notices import queue_expiry_warning

    owners = [shop]
    for n in range(2):
        user = make_user()
        add(guard, user, f"owner{n}@safe-shop.com", primary=True)
        owners.append(user)
    with transaction(guard.db, guard.models) as tx:
        for user in owners:
            queue_expiry_warning(
                guard,
                tx,
                user_id=user.id,
                domain="safe-shop.com",
                stage="expiring_soon",
                until=utcnow() + timedelta(days=9),
                reason="expires in 9 days",
                addresses=[],
            )
    commits: list[object] = []
    count = commits.append
    sa.event.listen(sa.orm.Session, "after_commit", count)
    try:
        report = drain(guard, "test-worker", batch=10)
    finally:
        sa.event.remove(sa.orm.Session, "after_commit", count)
    assert report.done == 3 and report.failed == 0
    assert sorted(smtp_sink.recipients()) == sorted(
        [SAFE, "owner@gmail.com", "owner0@safe-shop.com", "owner1@safe-shop.com"]
    )
    assert len(smtp_sink.sessions) == 1
    attempts = events(guard, EventKind.MAIL_ATTEMPT)
    assert len(attempts) == 3
    # Purge, the claim with the three attempts, the three jobs done, the empty claim that
    # ends the drain: one job at a time takes two commits per job instead (nine here).
    assert len(commits) <= 4, len(commits)

    smtp_sink.envelopes.clear()
    with transaction(guard.db, guard.models) as tx:
        good, bad = (
            queue_expiry_warning(
                guard,
                tx,
                user_id=user.id,
                domain="safe-shop.com",
                stage="expired",
                until=utcnow(),
                reason="expired",
                addresses=[],
            )
            for user in owners[1:]
        )
    assert good is not None
    guard.db.session.execute(
        sa.update(guard.models.Job).where(guard.models.Job.id == bad).values(payload={"x": 1})
    )
    guard.db.session.commit()
    report = drain(guard, "test-worker", batch=10)
    assert (report.done, report.failed) == (1, 1)
    assert smtp_sink.recipients() == ["owner0@safe-shop.com"]
    # The batch failed before its attempts committed its claim: the rollback gave both jobs
    # back, so they were claimed again (one attempt each) before running one by one.
    after = {j.id: (j.state, j.attempts) for j in rows(guard)}
    assert after[good] == ("done", 1)
    assert after[bad] == ("pending", 1)  # retried later, alone
    assert [a.details["job"] for a in events(guard, EventKind.MAIL_ATTEMPT)][-1:] == [good]


def test_delivering_given_jobs_claims_only_them_and_stops_once_all_were_claimed(
    shop: Any, app: Flask, guard: Any, smtp_sink: SMTPSink, make_user: Any
) -> None:
    """A sweep delivers its own warnings in claims of ``DELIVER_CHUNK`` (two commits each),
    stops without the empty claim once every given job was claimed, and leaves alone both a
    job another worker holds and jobs it was not given."""
    from flask_domainguard.jobs.drain import DELIVER_CHUNK
    from flask_domainguard.notices import WarningMail, queue_expiry_warnings

    owners = [make_user() for _ in range(DELIVER_CHUNK + 1)]
    for n, user in enumerate(owners):
        add(guard, user, f"owner{n}@safe-shop.com", primary=True)
    until = utcnow() + timedelta(days=9)
    mails = [WarningMail(u.id, "safe-shop.com", "expiring_soon", until, "soon", []) for u in owners]
    with transaction(guard.db, guard.models) as tx:
        ids = queue_expiry_warnings(guard, tx, mails)
    mine, held, other = ids[:-2], ids[-2], ids[-1]  # mine and held: one claim's worth
    [taken] = claim(guard, "other-worker", ids=[held])
    assert taken.id == held
    commits: list[object] = []
    count = commits.append
    sa.event.listen(sa.orm.Session, "after_commit", count)
    try:
        report = jobs.deliver_now(guard, [*mine, held])
    finally:
        sa.event.remove(sa.orm.Session, "after_commit", count)
    assert (report.done, report.failed) == (len(mine), 0)
    assert len(smtp_sink.envelopes) == len(mine)
    # One claim of them all, committed with their attempts; their jobs marked done; no empty
    # claim after.
    assert len(commits) == 2, len(commits)
    states = {j.id: (j.state, j.lease_owner) for j in rows(guard)}
    assert all(states[i] == ("done", None) for i in mine)
    assert states[held] == ("pending", "other-worker")  # its worker's, not ours to send
    assert states[other] == ("pending", None)  # not given: left for the workers


def test_a_verification_mail_survives_a_mail_server_outage(
    shop: Any, app: Flask, guard: Any, smtp_sink: SMTPSink, mail_down: Any
) -> None:
    row = guard.add_address(shop, "second@safe-shop.com")
    guard.send_verification(row)  # no exception: the job waits for the mail server
    assert [e.details["job"] for e in events(guard, EventKind.VERIFICATION_SENT)]
    mail_down.port = smtp_sink.port
    guard.db.session.execute(sa.update(guard.models.Job).values(not_before=utcnow()))
    guard.db.session.commit()
    run_all(guard)
    assert smtp_sink.recipients() == ["second@safe-shop.com"]
    assert "/domainguard/verify/" in smtp_sink.messages[0].get_payload()


# -- shedding ------------------------------------------------------------------------------


@pytest.mark.settings(DOMAINGUARD_JOBS_MAX_PENDING=3)
def test_shedding_drops_unknown_work_first_and_journals_known_accounts(
    shop: Any, app: Flask, guard: Any, make_user: Any, smtp_sink: SMTPSink
) -> None:
    known = [SAFE]
    for n in range(3):
        user = make_user()
        add(guard, user, f"user{n}@safe-shop.com")
        known.append(f"user{n}@safe-shop.com")
    for n in range(5):
        ask(app, f"guess{n}@safe-shop.com")
    for address in known:
        ask(app, address)
    report = shed(guard)
    assert (report.unknown, report.known) == (5, 1)
    [dropped] = events(guard, EventKind.RESET_SHED)
    assert dropped.address == known[-1]  # the newest known request
    assert dropped.user_id is not None and dropped.details["depth"] == 9
    stats = job_stats(guard)
    assert stats["shed"] == 6 and stats["pending_by_kind"]["reset_request"] == 3
    run_all(guard)
    assert sorted(smtp_sink.recipients()) == sorted(known[:-1])


@pytest.mark.settings(DOMAINGUARD_JOBS_MAX_PENDING=10)
def test_below_the_depth_nothing_is_shed(shop: Any, app: Flask, guard: Any) -> None:
    for n in range(10):
        ask(app, f"guess{n}@safe-shop.com")
    assert shed(guard).total == 0


# -- the host's own view, through the table ------------------------------------------------


@pytest.mark.settings(DOMAINGUARD_RESET_PROCESSING="background")
def test_a_host_view_runs_later_with_its_arguments_and_the_address(
    shop: Any, app: Flask, guard: Any, smtp_sink: SMTPSink
) -> None:
    seen: list[tuple[str, str, str]] = []

    @app.route("/<lang>/forgot", methods=["POST"])
    @guard.guarded_reset_request(field="email", template_or_response=lambda: "sent", csrf=False)
    def forgot(lang: str) -> str:
        seen.append((lang, request.form["email"], g.domainguard_reset.address.address))
        app.extensions["mail"].send(
            Message("Host reset", recipients=[SAFE], body="host", sender="s@host.test")
        )
        return "sent"

    ask(app, SAFE, path="/de/forgot")
    assert seen == []  # nothing ran in the request
    [job] = rows(guard)
    assert job.payload["view_args"] == {"lang": "de"} and job.payload["view"].endswith("forgot")
    run_all(guard)
    assert seen == [("de", SAFE, SAFE)]
    assert smtp_sink.recipients() == [SAFE]
    assert events(guard, EventKind.RESET_SENT)[0].details["via"] == "host"


# -- the in-process workers ----------------------------------------------------------------


@pytest.mark.settings(DOMAINGUARD_JOBS_WORKERS=2)
def test_workers_drain_what_a_dead_process_left_on_the_first_request(
    shop: Any, app: Flask, guard: Any, smtp_sink: SMTPSink
) -> None:
    with transaction(guard.db, guard.models):
        enqueue(
            guard,
            jobs.RESET_REQUEST,
            {"address": SAFE, "client": "192.0.2.9"},
            address=SAFE,
        )
    app.test_client().get("/domainguard/reset")
    assert guard.wait_for_background(timeout=20)
    assert smtp_sink.recipients() == [SAFE]
    assert jobs_for(app).threads == 2


@pytest.mark.settings(DOMAINGUARD_JOBS_WORKERS=1, DOMAINGUARD_JOBS_POLL=0.1)
def test_idle_workers_stay_for_a_retry_and_then_run_it(
    shop: Any,
    app: Flask,
    guard: Any,
    smtp_sink: SMTPSink,
    mail_down: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flask_domainguard import background

    monkeypatch.setattr(background, "IDLE_EXIT", 0.3)
    monkeypatch.setattr(jobs.running, "retry_delay", lambda attempts: timedelta(seconds=1.5))
    ask(app, SAFE)  # the mail server is down: the first run fails
    deadline = time.monotonic() + 10

    def failed() -> list[Any]:
        guard.db.session.rollback()  # a fresh snapshot each time (REPEATABLE READ on MariaDB)
        return events(guard, EventKind.MAIL_FAILED)

    while not failed() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert failed()
    mail_down.port = smtp_sink.port  # back up before the retry is due
    while not smtp_sink.recipients() and time.monotonic() < deadline:
        time.sleep(0.05)
    # Idle longer than IDLE_EXIT, the thread waited for the retry instead of ending.
    assert smtp_sink.recipients() == [SAFE]
