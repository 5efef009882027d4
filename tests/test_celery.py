"""The sweep on Celery (:mod:`flask_domainguard.contrib.celery`).

Eager tests (``task_always_eager``, the app fixture's database: SQLite, or PostgreSQL with
``--db postgresql``) pin the run's rules: one circuit breaker for the whole run, chunks that
cover every due domain once, a failed chunk that does not stop the run.

The integration test runs the real thing: a redis-server as broker and result backend, two
Celery worker processes, a real PostgreSQL server and the benchmark's status server, sweeping
20,000 domains; it checks that each domain was looked up once and that the outcome equals the
``flask domainguard sweep`` command's on an identically seeded database.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests import hostapp
from tests.celery_support import (
    BenchStatusServer,
    RedisServer,
    Workers,
    celery_config,
    create_databases,
    find_redis_server,
)
from tests.sweep_support import bulk_seed, snapshot, sweep_process

IN_CI = os.environ.get("CI") == "true"

try:
    import celery  # noqa: F401
except ImportError:  # pragma: no cover - the dev extra installs it
    if IN_CI:
        raise
    pytest.skip(
        "celery is not installed: pip install -e '.[dev]' (or flask-domainguard[celery])",
        allow_module_level=True,
    )

from flask_domainguard.contrib.celery import (  # noqa: E402
    CHUNK_TASK,
    FINISH_TASK,
    START_TASK,
    beat_schedule,
    celery_init_app,
    finish_sweep,
    start_sweep,
    sweep_chunk,
)
from flask_domainguard.sweep import Sweep  # noqa: E402
from flask_domainguard.timeutil import utcnow  # noqa: E402

EAGER = {
    "task_always_eager": True,
    "task_eager_propagates": True,
    "broker_url": "memory://",
    "result_backend": "cache+memory://",
}


def write_statuses(app: Flask, statuses: dict[str, dict[str, Any]]) -> None:
    Path(app.config["DOMAINGUARD_STATIC_STATUS_FILE"]).write_text(json.dumps(statuses))


def seed_released(guard: Any, app: Flask, total: int, released: int) -> dict[str, int]:
    """``total`` domains with one verified address each; the first ``released`` ones are
    released and were first seen unsafe 7 hours ago (so this run confirms them)."""
    domains = {f"d{i:03d}.com": 1 for i in range(total)}
    gone = list(domains)[:released]
    bulk_seed(guard, domains, first_seen={name: "released" for name in gone})
    write_statuses(
        app,
        {name: {"registered": False} if name in gone else {"registered": True} for name in domains},
    )
    return domains


def unverified_count(guard: Any) -> int:
    hostapp.db.session.expire_all()
    EmailAddress = guard.models.EmailAddress
    return int(
        hostapp.db.session.scalar(
            sa.select(sa.func.count())
            .select_from(EmailAddress)
            .where(EmailAddress.verified_at.is_(None))
        )
        or 0
    )


# -- eager: the run's rules --------------------------------------------------------------------


@pytest.mark.settings(CELERY=EAGER, DOMAINGUARD_MAX_UNVERIFY=10)
def test_circuit_breaker_counts_the_whole_run_not_each_chunk(app: Flask, guard: Any) -> None:
    # 8 chunks of 5 domains, each chunk plans at most 5 (under the limit of 10), the run
    # plans 24: a per-chunk breaker would unverify them all.
    seed_released(guard, app, total=40, released=24)
    celery_init_app(app)
    started = start_sweep.apply(kwargs={"chunk_size": 5}).get()
    assert started["chunks"] == 8
    result = started["result"]
    assert result["checked"] == 40
    assert result["planned"] == 24
    assert result["breaker_tripped"] is True
    assert result["held"] == 24 and result["unverified"] == 0
    assert unverified_count(guard) == 0
    m = guard.models
    held = list(hostapp.db.session.scalars(sa.select(m.HeldAction)))
    assert len(held) == 24
    assert {h.resolution for h in held} == {None}
    assert {h.run_id for h in held} == {started["run_id"]}
    events = hostapp.db.session.scalars(sa.select(m.Event).where(m.Event.kind == "unverify_held"))
    assert len(list(events)) == 24


@pytest.mark.settings(CELERY=EAGER, DOMAINGUARD_MAX_UNVERIFY=10)
def test_under_the_limit_the_run_unverifies_and_journals(app: Flask, guard: Any) -> None:
    seed_released(guard, app, total=30, released=9)
    celery_init_app(app)
    result = start_sweep.apply(kwargs={"chunk_size": 4}).get()["result"]
    assert result["chunks"] == 8
    assert (result["checked"], result["unverified"], result["held"]) == (30, 9, 0)
    assert result["verdicts"]["released"] == 9 and result["verdicts"]["ok"] == 21
    assert result["failed_chunks"] == 0
    assert unverified_count(guard) == 9
    m = guard.models
    events = list(
        hostapp.db.session.scalars(sa.select(m.Event).where(m.Event.kind == "address_unverified"))
    )
    assert sorted(e.address.split("@")[1] for e in events) == [f"d{i:03d}.com" for i in range(9)]
    # Leases are all given back; every domain was checked in this run.
    domains = list(hostapp.db.session.scalars(sa.select(m.Domain)))
    assert all(d.lease_owner is None for d in domains)
    assert all(d.checked_at is not None for d in domains)


@pytest.mark.settings(CELERY=EAGER)
def test_trusted_domains_are_counted_once_and_never_looked_up(app: Flask, guard: Any) -> None:
    bulk_seed(guard, {"gmail.com": 3, "a-site.com": 1, "b-site.com": 1})
    write_statuses(app, {"a-site.com": {"registered": True}, "b-site.com": {"registered": True}})
    celery_init_app(app)
    result = start_sweep.apply(kwargs={"chunk_size": 1}).get()["result"]
    assert (result["chunks"], result["checked"], result["skipped_trusted"]) == (2, 2, 1)


@pytest.mark.settings(CELERY=EAGER)
def test_nothing_due_finishes_at_once(app: Flask, guard: Any) -> None:
    celery_init_app(app)
    started = start_sweep.apply(kwargs={"chunk_size": 10}).get()
    assert started["chunks"] == 0 and started["finish_id"] is None
    assert started["result"]["checked"] == 0


@pytest.mark.settings(CELERY=EAGER)
def test_a_chunk_delivered_twice_checks_nothing_twice(app: Flask, guard: Any) -> None:
    seed_released(guard, app, total=12, released=0)
    celery_init_app(app)
    sweep = Sweep(guard)
    ranges = sweep.chunk_ranges(5)
    assert len(ranges) == 3
    cutoff = sweep.cutoff.isoformat()
    first = sweep_chunk.apply(args=(sweep.run_id, cutoff, *ranges[1])).get()
    again = sweep_chunk.apply(args=(sweep.run_id, cutoff, *ranges[1])).get()
    assert (first["checked"], again["checked"]) == (5, 0)
    rest = [
        sweep_chunk.apply(args=(sweep.run_id, cutoff, *r)).get() for r in (ranges[0], ranges[2])
    ]
    assert sorted(r["checked"] for r in rest) == [2, 5]
    done = finish_sweep.apply(args=([first, again, *rest], sweep.run_id, cutoff)).get()
    assert (done["checked"], done["chunks"]) == (12, 4)


@pytest.mark.settings(CELERY=EAGER, DOMAINGUARD_MAX_UNVERIFY=50)
def test_a_failing_chunk_is_reported_and_the_run_still_finishes(
    app: Flask, guard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_released(guard, app, total=20, released=20)
    original = Sweep.apply_results

    def broken(self: Sweep, claims: Any, observations: Any) -> Any:
        if any(c.name == "d012.com" for c in claims):
            raise RuntimeError("database went away")
        return original(self, claims, observations)

    monkeypatch.setattr(Sweep, "apply_results", broken)
    celery_init_app(app)
    before = utcnow()
    result = start_sweep.apply(kwargs={"chunk_size": 5}).get()["result"]
    assert result["failed_chunks"] == 1
    assert result["errors"] >= 1
    # The three healthy chunks' confirmed unverifications were applied by the one finish.
    assert result["unverified"] == 15 == unverified_count(guard)
    m = guard.models
    left = list(hostapp.db.session.scalars(sa.select(m.Domain).where(m.Domain.checked_at < before)))
    assert len(left) == 5  # the failed chunk's domains: still due, leases given back
    assert all(d.lease_owner is None for d in left)


def test_the_tasks_refuse_to_run_without_the_app_context(app: Flask) -> None:
    from flask_domainguard.contrib import celery as contrib

    assert contrib._guard() is hostapp.guard
    # The app fixture keeps a context open: look from a thread, which has none.
    errors: list[BaseException] = []

    def outside() -> None:
        try:
            contrib._guard()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=outside)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "celery_init_app" in str(errors[0])


def test_beat_schedule_entry() -> None:
    entry = beat_schedule(timedelta(minutes=30), chunk_size=2000, queue="sweeps")
    assert entry == {
        "domainguard-sweep": {
            "task": START_TASK,
            "schedule": timedelta(minutes=30),
            "kwargs": {"chunk_size": 2000, "backend": None, "queue": "sweeps"},
            "options": {"expires": 1800.0, "queue": "sweeps"},
        }
    }
    assert beat_schedule()["domainguard-sweep"]["options"] == {"expires": 3600.0}
    with pytest.raises(ValueError, match="positive"):
        beat_schedule(timedelta(0))


@pytest.mark.settings(CELERY=EAGER)
def test_celery_init_app_registers_the_tasks(app: Flask) -> None:
    celery_app = celery_init_app(app)
    assert app.extensions["celery"] is celery_app
    assert {START_TASK, CHUNK_TASK, FINISH_TASK} <= set(celery_app.tasks)
    assert celery_app.tasks[CHUNK_TASK].acks_late is True


@pytest.mark.settings(
    CELERY=EAGER,
    DOMAINGUARD_JOBS_WORKERS=0,
    WTF_CSRF_ENABLED=False,
    SERVER_NAME="accounts.host.test",
)
def test_celery_drains_the_job_table(app: Flask, guard: Any, make_user: Any) -> None:
    from flask_domainguard.contrib.celery import (
        DRAIN_TASK,
        drain_jobs,
        jobs_beat_schedule,
        wake_celery_workers,
    )

    write_statuses(app, {"shop.com": {"registered": True, "statuses": ["active"]}})
    user = make_user()
    guard.add_address(user, "owner@shop.com", verified=True)
    celery_app = celery_init_app(app)
    assert DRAIN_TASK in celery_app.tasks
    entry = jobs_beat_schedule(timedelta(seconds=20))["domainguard-jobs"]
    assert entry["task"] == DRAIN_TASK and entry["kwargs"] == {"max_seconds": 18.0}
    with app.extensions["mail"].record_messages() as outbox:
        # Without a wake-up the job waits for beat: nothing runs in the web process.
        app.test_client().post("/domainguard/reset", data={"email": "owner@shop.com"})
        assert outbox == []
        assert drain_jobs.apply().get()["done"] == 1
        assert [m.recipients for m in outbox] == [["owner@shop.com"]]
        # With a wake-up each new job sends the task at once.
        wake_celery_workers(app)
        app.test_client().post("/domainguard/reset", data={"email": "owner@shop.com"})
        assert len(outbox) == 2
    Job = guard.models.Job
    states = hostapp.db.session.scalars(sa.select(Job.state)).all()
    assert states == ["done", "done"]


# -- integration: real workers, Redis and PostgreSQL ------------------------------------------

DOMAINS = 20_000
CHUNK = 1000
RETRIES = 1


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    binary = find_redis_server()
    if binary is None:
        if IN_CI:
            pytest.fail("redis-server is not installed; .ci/run installs Debian's redis-server")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(binary)
    try:
        yield server.start()
    finally:
        server.stop()


def schedule_class(domain: Any, started: datetime, ended: datetime) -> str:
    """Which schedule a domain's next check follows (the exact time is jittered)."""
    if domain.failures:
        wait = domain.next_check_at - started
        top = ended - started + timedelta(minutes=33)
        return "backoff" if timedelta(minutes=27) <= wait <= top else f"? {wait}"
    wait = domain.next_check_at - domain.checked_at
    if timedelta(days=6.3) <= wait <= timedelta(days=7.7):
        return "recheck"
    if wait == timedelta(days=1):
        return "daily"
    if wait == timedelta(hours=6):
        return "confirm"
    return f"? {wait}"


# Ids and times that differ between two equal runs: the run, the held action, the job row.
VARYING_DETAILS = frozenset({"run", "held_action", "verified_at", "job"})


def outcome(guard: Any, started: datetime, ended: datetime) -> dict[str, Any]:
    """What a sweep left in the database, comparable between two databases."""
    state = snapshot(guard)
    m = guard.models
    session = hostapp.db.session
    state["schedule"] = {
        d.name: schedule_class(d, started, ended)
        for d in session.scalars(sa.select(m.Domain).where(m.Domain.checked_at.is_not(None)))
    } | {
        d.name: schedule_class(d, started, ended)
        for d in session.scalars(sa.select(m.Domain).where(m.Domain.failures > 0))
    }
    journal = []
    for event in session.scalars(sa.select(m.Event).where(m.Event.created_at >= started)):
        # Run ids, action ids and the seeding time differ between the databases.
        details = {k: v for k, v in event.details.items() if k not in VARYING_DETAILS}
        if "until" in details:  # when grace ends: the check's time plus a fixed period
            until = datetime.fromisoformat(details["until"]) - started
            details["until"] = f"+{round(until / timedelta(hours=1))}h"
        journal.append(
            (event.kind, event.actor, event.address, json.dumps(details, sort_keys=True))
        )
    state["journal"] = sorted(journal)
    state["unverified"] = sorted(a for a, (ok, _) in state["addresses"].items() if not ok)
    return state


def seed_database(url: str, domains: dict[str, int], first_seen: dict[str, str]) -> None:
    app = hostapp.create_app({"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        hostapp.db.create_all()
        bulk_seed(hostapp.guard, domains, first_seen=first_seen)
        hostapp.db.engine.dispose()


def read_outcome(url: str, started: datetime, ended: datetime) -> dict[str, Any]:
    app = hostapp.create_app({"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        try:
            return outcome(hostapp.guard, started, ended)
        finally:
            hostapp.db.session.remove()
            hostapp.db.engine.dispose()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_celery_workers_sweep_like_the_command(
    db_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if db_kind != "sqlite":
        pytest.skip("runs once, in the SQLite pass: it always starts its own PostgreSQL")
    # Looked up only now, so the skip above starts no servers.
    pg_server_url: str = request.getfixturevalue("pg_server_url")
    redis_url: str = request.getfixturevalue("redis_url")
    from benchmarks.status_server import answer_for

    urls = create_databases(pg_server_url, ["dg_sweep_command", "dg_sweep_celery"])
    domains = {f"c{i:05d}.com": 1 + (i % 4 == 0) for i in range(DOMAINS)}
    domains["gmail.com"] = 5  # trusted: never looked up
    unsafe = {"undelegated inactive": "released", "active deleting": "expired"}
    first_seen = {
        name: unsafe[answer_for(name)[0]]
        for i, name in enumerate(domains)
        if answer_for(name)[0] in unsafe and i % 2 == 0
    }
    assert len(first_seen) > 100
    for url in urls.values():
        seed_database(url, domains, first_seen)

    base = {
        "DOMAINGUARD_HTTP_TIMEOUT": 5.0,
        "DOMAINGUARD_SWEEP_RETRIES": RETRIES,
        "DOMAINGUARD_SWEEP_CONCURRENCY": 32,
        "DOMAINGUARD_SWEEP_PER_SERVER": 32,
        "DOMAINGUARD_MAX_UNVERIFY": 100_000,
    }
    command_server = BenchStatusServer(latency=0.002)
    celery_server = BenchStatusServer(latency=0.002)
    workers: Workers | None = None
    try:
        # Workers start (a few seconds) while the command sweeps the other database.
        celery_cfg = {
            **base,
            **celery_server.config(),
            "SQLALCHEMY_DATABASE_URI": urls["dg_sweep_celery"],
            "CELERY": celery_config(redis_url),
        }
        client_app = hostapp.create_app(celery_cfg)
        client = celery_init_app(client_app)
        workers = Workers(celery_cfg, 2, tmp_path / "workers")

        command_started = utcnow()
        proc = sweep_process(
            {**base, **command_server.config(), "SQLALCHEMY_DATABASE_URI": urls["dg_sweep_command"]}
        )
        workers.start(client)
        out, err = proc.communicate(timeout=300)
        command_ended = utcnow()
        assert proc.returncode in (0, 1), err[-3000:]
        command_report = json.loads(out)

        celery_started = utcnow()
        t0 = time.monotonic()
        started = client.send_task(START_TASK, kwargs={"chunk_size": CHUNK}).get(timeout=120)
        celery_report = client.AsyncResult(started["finish_id"]).get(timeout=300)
        celery_seconds = time.monotonic() - t0
        celery_ended = utcnow()
        command_hits, celery_hits = command_server.hits(), celery_server.hits()
    finally:
        if workers is not None:
            workers.stop()
        command_server.stop()
        celery_server.stop()

    due = [name for name in domains if name != "gmail.com"]
    # Each domain looked up exactly once: one request, plus the retry of an "unknown" answer.
    expected = {name: 1 + RETRIES * (answer_for(name)[0] == "unknown") for name in due}
    assert celery_hits == expected
    assert command_hits == expected

    assert started["chunks"] == DOMAINS // CHUNK
    assert celery_report["failed_chunks"] == 0
    assert celery_report["lost_leases"] == 0
    for key in ("checked", "errors", "unverified", "held", "unsafe_first_seen", "skipped_trusted"):
        assert celery_report[key] == command_report[key], key
    assert celery_report["verdicts"] == command_report["verdicts"]
    assert celery_report["checked"] == DOMAINS
    assert celery_report["unverified"] == sum(domains[name] for name in first_seen)
    assert celery_report["breaker_tripped"] is False

    command_state = read_outcome(urls["dg_sweep_command"], command_started, command_ended)
    celery_state = read_outcome(urls["dg_sweep_celery"], celery_started, celery_ended)
    assert not [c for c in celery_state["schedule"].values() if c.startswith("?")]
    for key in ("addresses", "domains", "schedule", "unverified", "unverified_events", "held"):
        assert celery_state[key] == command_state[key], key
    assert celery_state["journal"] == command_state["journal"]
    assert {c for c in celery_state["schedule"].values()} == {
        "recheck",
        "daily",
        "confirm",
        "backoff",
    }
    # Both workers took chunks.
    for index in range(2):
        assert f"{CHUNK_TASK}[" in workers.log(index) and "succeeded" in workers.log(index)
    print(
        f"\n{DOMAINS} domains: command {(command_ended - command_started).total_seconds():.1f} s, "
        f"2 Celery workers {celery_seconds:.1f} s"
    )
