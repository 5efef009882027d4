"""Sweep reports that tell the truth: the exit-code threshold between "a few lookups failed"
and "most failed", leases left by a killed run, unverifications a run killed in its finish
phase planned, and the run record `flask domainguard status` reads."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskCliRunner

from flask_domainguard.journal import EventKind
from tests import hostapp
from tests.conftest import SMTPSink, use_smtp
from tests.guard_helpers import events
from tests.sweep_support import StatusServer, bulk_seed, seed, sweep_process
from tests.test_sweep_cli import sweep


def status(runner: FlaskCliRunner) -> dict[str, Any]:
    result = runner.invoke(args=["domainguard", "status", "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


@pytest.mark.use_status_server
@pytest.mark.parametrize(
    ("broken", "share", "code"),
    [(0, 0.5, 0), (3, 0.5, 1), (5, 0.5, 1), (6, 0.5, 5), (3, 0.2, 5), (10, 1.0, 1)],
)
def test_the_exit_code_separates_a_few_failures_from_most(
    app_config: dict[str, Any],
    request: pytest.FixtureRequest,
    status_server: StatusServer,
    broken: int,
    share: float,
    code: int,
) -> None:
    app_config["DOMAINGUARD_SWEEP_FAILING_SHARE"] = share
    request.getfixturevalue("app")
    guard = request.getfixturevalue("guard")
    runner = request.getfixturevalue("runner")
    names = [f"d{i}.com" for i in range(10)]
    seed(guard, dict.fromkeys(names, 1))
    for name in names[:broken]:
        status_server.answers[name] = "500"
    got, data, stderr = sweep(runner)
    assert got == code, (stderr, data)
    assert data["verdicts"]["unknown"] == broken and data["checked"] == 10
    assert sum(data["errors_by_server"].values()) == broken
    if code == 5:
        assert f"{broken} of 10 lookups failed" in stderr
    record = status(runner)["last_sweep"]
    assert record["exit_code"] == code and record["finished_at"] and record["checked"] == 10


def kill_when(proc: Any, ready: Any, timeout: float = 60) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the sweep never got there"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def count(guard: Any, model: Any, *where: Any) -> int:
    hostapp.db.session.expire_all()
    value = hostapp.db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))
    hostapp.db.session.rollback()
    return int(value or 0)


@pytest.mark.slow
@pytest.mark.use_status_server
def test_leases_left_by_a_killed_run_are_reported_with_their_own_exit_code(
    app: Any,
    guard: Any,
    app_config: dict[str, Any],
    runner: FlaskCliRunner,
    status_server: StatusServer,
) -> None:
    status_server.delay = 0.05
    config = {
        "SQLALCHEMY_DATABASE_URI": app_config["SQLALCHEMY_DATABASE_URI"],
        **status_server.config(),
        "DOMAINGUARD_SWEEP_BATCH_SIZE": 10,
        "DOMAINGUARD_SWEEP_CONCURRENCY": 4,
        "DOMAINGUARD_SWEEP_LEASE": 600,
    }
    bulk_seed(guard, {f"k{i:03d}.com": 1 for i in range(300)})
    Domain = guard.models.Domain
    proc = sweep_process(config)
    # Killed once it has applied a few batches and holds leases on others.
    kill_when(proc, lambda: count(guard, Domain, Domain.checked_at.is_not(None)) >= 20)
    leased = count(guard, Domain, Domain.lease_owner.is_not(None))
    assert leased > 0

    code, data, stderr = sweep(runner)
    assert code == 6, (stderr[-500:], data)
    assert data["leased_elsewhere"] == data["leased_by_dead_runs"] == leased
    assert count(guard, Domain, Domain.checked_at.is_(None)) == leased  # all else checked
    assert "left" in stderr and "leased" in stderr
    assert "of them by runs that died" in runner.invoke(args=["domainguard", "sweep"]).stdout

    view = status(runner)
    assert view["leases"]["dead"] == leased
    [owner] = view["leases"]["owners"]
    assert owner["process"] == "dead" and owner["domains"] == leased
    killed = [run for run in (view["last_sweep"], view["last_finished_sweep"]) if run]
    assert all(run["outcome"] != "running" for run in killed)


@pytest.mark.slow
@pytest.mark.use_status_server
def test_unverifications_planned_by_a_run_killed_while_finishing_are_reported(
    app: Any,
    guard: Any,
    app_config: dict[str, Any],
    runner: FlaskCliRunner,
    status_server: StatusServer,
    smtp_sink: SMTPSink,
) -> None:
    # A slow mail server keeps the finish phase busy after its first 200 unverifications.
    smtp_sink.delay = 0.1
    mail: dict[str, Any] = {}
    use_smtp(mail, smtp_sink)
    config = {
        "SQLALCHEMY_DATABASE_URI": app_config["SQLALCHEMY_DATABASE_URI"],
        **status_server.config(),
        **mail,
        "SERVER_NAME": "accounts.host.test",
        "DOMAINGUARD_SWEEP_LEASE": 600,
        "DOMAINGUARD_JOBS_LEASE": 1,
        "DOMAINGUARD_MAX_UNVERIFY": 10_000,
    }
    names = {f"gone{i:03d}.com": 1 for i in range(450)}
    for name in names:
        status_server.answers[name] = "undelegated inactive"
    bulk_seed(guard, names, first_seen=dict.fromkeys(names, "released"))
    # Each user has a second, safe address: every unverification mails a notice.
    Address = guard.models.EmailAddress
    hostapp.db.session.execute(
        sa.insert(guard.models.Domain),
        [{"name": "gmail.com", "statuses": "", "failures": 0, "created_at": row_now()}],
    )
    hostapp.db.session.execute(
        sa.insert(Address),
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
            for row in hostapp.db.session.scalars(sa.select(Address))
        ],
    )
    hostapp.db.session.commit()

    proc = sweep_process(config)
    Event = guard.models.Event
    kill_when(proc, lambda: count(guard, Event, Event.kind == "address_unverified") >= 1)
    HeldAction = guard.models.HeldAction
    waiting = count(guard, HeldAction, HeldAction.resolution == "planned")
    assert waiting == 250  # applied 200 at a time

    smtp_sink.delay = 0
    mailer = app.extensions["mail"]  # this process delivers to the same mail server
    mailer.server, mailer.port, mailer.suppress = "127.0.0.1", smtp_sink.port, False
    code, data, stderr = sweep(runner)
    assert code == 6, stderr
    assert data["planned_by_dead_runs"] == data["planned_elsewhere"] == waiting
    assert data["checked"] == 0 and data["unverified"] == 0
    assert f"{waiting} unverifications planned" in stderr
    view = status(runner)
    assert view["planned_unverifications"]["dead"] == waiting
    assert view["planned_unverifications"]["runs"][0]["process"] == "dead"
    # The notices of what the killed run did apply were queued with it: none is lost (this
    # run delivered them; draining finds nothing left).
    noticed = {e.address for e in events(guard, EventKind.UNSAFE_NOTICE_SENT)}
    unverified = {e.address for e in events(guard, EventKind.ADDRESS_UNVERIFIED)}
    assert noticed == unverified
    time.sleep(1.2)  # the mail jobs the killed run had claimed: their leases expire
    assert runner.invoke(args=["domainguard", "jobs", "--drain"]).exit_code == 0
    told = {rcpt for _, rcpts in smtp_sink.envelopes for rcpt in rcpts}
    owners = {e.user_id for e in events(guard, EventKind.ADDRESS_UNVERIFIED)}
    assert told >= {f"backup{user_id}@gmail.com" for user_id in owners}


def row_now() -> Any:
    from flask_domainguard.timeutil import utcnow

    return utcnow()
