"""`flask domainguard status` and the Prometheus metrics: the same figures, from the database."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskCliRunner

from flask_domainguard import jobs
from flask_domainguard.journal import transaction
from flask_domainguard.owners import new_run_id
from flask_domainguard.timeutil import utcnow
from tests import hostapp
from tests.sweep_support import seed


def dead_owner() -> str:
    """A run id of this host whose process has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{new_run_id().split(':')[0]}:{proc.pid}:deadbeef"


def status(runner: FlaskCliRunner) -> dict[str, Any]:
    result = runner.invoke(args=["domainguard", "status", "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


@pytest.fixture
def scene(app: Flask, guard: Any) -> dict[str, str]:
    """Jobs of every kind and state, leases of a live and a dead run, planned actions."""
    seed(guard, {"a.com": 1, "b.com": 1, "c.com": 1, "broken.net": 1})
    now = utcnow()
    alive, dead = new_run_id(), dead_owner()
    Domain, HeldAction = guard.models.Domain, guard.models.HeldAction
    db = hostapp.db
    db.session.execute(
        sa.update(Domain)
        .where(Domain.name.in_(["a.com", "b.com"]))
        .values(lease_owner=dead, lease_until=now + timedelta(minutes=5))
    )
    db.session.execute(
        sa.update(Domain)
        .where(Domain.name == "c.com")
        .values(lease_owner=alive, lease_until=now + timedelta(minutes=5))
    )
    db.session.execute(
        sa.update(Domain).where(Domain.name == "broken.net").values(failures=3, last_error="x")
    )
    address_id = guard.find_address("user1.0@a.com").id
    db.session.add(
        HeldAction(
            address_id=address_id,
            domain="a.com",
            reason="domain_released",
            verdict_reason="released",
            held_at=now,
            resolution="planned",
            run_id=dead,
        )
    )
    with transaction(db, guard.models):
        first = jobs.enqueue(guard, jobs.EXPIRY_WARNING, {})
        jobs.enqueue(guard, jobs.RESET_REQUEST, {"address": "x@a.com"}, address="x@a.com")
        failed = jobs.enqueue(guard, jobs.UNVERIFY_NOTICE, {})
    Job = guard.models.Job
    db.session.execute(
        sa.update(Job).where(Job.id == first).values(created_at=now - timedelta(seconds=90))
    )
    db.session.execute(sa.update(Job).where(Job.id == failed).values(state="failed", done_at=now))
    db.session.commit()
    return {"alive": alive, "dead": dead}


@pytest.mark.settings(DOMAINGUARD_JOBS_WORKERS=0)
def test_status_shows_queue_leases_plans_and_failing_servers(
    scene: dict[str, str], runner: FlaskCliRunner
) -> None:
    data = status(runner)
    assert data["jobs"]["pending"] == 2 and data["jobs"]["failed"] == 1
    assert data["jobs"]["pending_by_kind"]["reset_request"] == 1
    assert 85 <= data["jobs"]["oldest_pending_seconds"] < 200
    owners = {o["owner"]: (o["domains"], o["process"]) for o in data["leases"]["owners"]}
    assert owners == {scene["dead"]: (2, "dead"), scene["alive"]: (1, "alive")}
    assert data["leases"] == {**data["leases"], "domains": 3, "dead": 2}
    [run] = data["planned_unverifications"]["runs"]
    assert run["run_id"] == scene["dead"] and run["process"] == "dead" and run["actions"] == 1
    assert data["failing_lookups"] == {"domains": 1, "by_server": {"static": 1}}
    assert data["last_sweep"] is None

    table = runner.invoke(args=["domainguard", "status"]).stdout
    assert f"{scene['dead']} (dead)" in table and "domains with failing lookups" in table


@pytest.mark.settings(DOMAINGUARD_JOBS_WORKERS=0)
def test_a_sweep_leaves_its_record(app: Flask, guard: Any, runner: FlaskCliRunner) -> None:
    seed(guard, {"a.com": 1})
    assert runner.invoke(args=["domainguard", "sweep"]).exit_code in (0, 1, 5)
    data = status(runner)
    run = data["last_sweep"]
    assert run == data["last_finished_sweep"]
    assert run["finished_at"] >= run["started_at"] and run["checked"] == 1
    assert run["outcome"] in ("lookups_mostly_failed", "ok")  # the static file is empty


@pytest.mark.settings(DOMAINGUARD_JOBS_WORKERS=0)
def test_jobs_command_shows_and_exits_three_for_failed_jobs(
    scene: dict[str, str], runner: FlaskCliRunner
) -> None:
    result = runner.invoke(args=["domainguard", "jobs"])
    assert result.exit_code == 3
    assert "jobs failed (gave up)" in result.stdout
    bad = runner.invoke(args=["domainguard", "jobs", "--drain", "--kind", "nonsense"])
    assert bad.exit_code == 2


@pytest.mark.settings(DOMAINGUARD_JOBS_WORKERS=0)
def test_prometheus_metrics_carry_the_same_figures(scene: dict[str, str], app: Flask) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from flask_domainguard.metrics import register_metrics

    registry = prometheus_client.CollectorRegistry()
    register_metrics(app, registry)
    text = prometheus_client.generate_latest(registry).decode()
    assert 'domainguard_jobs_pending{kind="reset_request"} 1.0' in text
    assert "domainguard_jobs_failed 1.0" in text
    assert 'domainguard_domain_leases{process="dead"} 2.0' in text
    assert 'domainguard_domain_leases{process="alive"} 1.0' in text
    assert 'domainguard_planned_unverifications{process="dead"} 1.0' in text
    assert 'domainguard_failing_lookups{server="static"} 1.0' in text
    assert "domainguard_last_sweep_died 0.0" in text
