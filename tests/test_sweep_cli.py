"""``flask domainguard sweep``: JSON output, dry runs, the circuit breaker, held actions,
exit codes. The status answers come from a real Fastly-style server on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskCliRunner

from flask_domainguard.journal import EventKind
from flask_domainguard.timeutil import utcnow
from flask_domainguard.verdict import VerdictKind
from tests import hostapp
from tests.sweep_support import StatusServer, seed
from tests.test_sweep import address, domain, events, rewind

pytestmark = pytest.mark.use_status_server


def sweep(runner: FlaskCliRunner, *args: str) -> tuple[int, dict[str, Any], str]:
    result = runner.invoke(args=["domainguard", "sweep", "--json", *args])
    hostapp.db.session.expire_all()
    data = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, data, result.stderr


def held_rows(guard: Any) -> list[Any]:
    HeldAction = guard.models.HeldAction
    return list(hostapp.db.session.scalars(sa.select(HeldAction).order_by(HeldAction.id)))


def test_json_shape_and_exit_code_zero(
    runner: FlaskCliRunner, guard: Any, status_server: StatusServer
) -> None:
    seed(guard, {"a.com": 2, "b.org": 1, "gmail.com": 1})
    code, data, _ = sweep(runner)
    assert code == 0
    for key in ("checked", "skipped_trusted", "unverified", "held", "errors", "verdicts"):
        assert key in data
    assert data["checked"] == 2 and data["skipped_trusted"] == 1 and data["errors"] == 0
    assert set(data["verdicts"]) == {kind.value for kind in VerdictKind}
    assert data["verdicts"]["ok"] == 2 and data["dry_run"] is False


def test_table_output_on_stdout(
    runner: FlaskCliRunner, guard: Any, status_server: StatusServer
) -> None:
    seed(guard, {"a.com": 1})
    result = runner.invoke(args=["domainguard", "sweep"])
    assert result.exit_code == 0
    assert "domains checked" in result.stdout and "1" in result.stdout


def test_errors_give_exit_code_one(
    runner: FlaskCliRunner, guard: Any, status_server: StatusServer
) -> None:
    seed(guard, {"a.com": 1, "broken.com": 1})
    status_server.answers["broken.com"] = "500"
    code, data, _ = sweep(runner)
    assert code == 1 and data["errors"] == 1 and data["verdicts"]["unknown"] == 1


def test_dry_run_changes_nothing(
    runner: FlaskCliRunner, guard: Any, status_server: StatusServer
) -> None:
    status_server.answers["gone.com"] = "undelegated inactive"
    seed(guard, {"gone.com": 1, "fine.com": 1})
    Event = guard.models.Event
    journal_before = hostapp.db.session.scalar(sa.select(sa.func.count()).select_from(Event))
    code, data, _ = sweep(runner, "--dry-run")
    assert code == 0 and data["dry_run"] is True
    assert data["checked"] == 2 and data["verdicts"]["released"] == 1
    for name in ("gone.com", "fine.com"):
        row = domain(guard, name)
        assert row.checked_at is None and row.verdict is None and row.lease_owner is None
    assert (
        hostapp.db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == journal_before
    )
    assert status_server.hits["gone.com"] == 1  # it did look up


def test_dry_run_reports_what_a_confirmation_would_do(
    runner: FlaskCliRunner, guard: Any, status_server: StatusServer
) -> None:
    status_server.answers["gone.com"] = "undelegated inactive"
    ids = seed(guard, {"gone.com": 2})
    sweep(runner)
    rewind(guard, 7)
    code, data, _ = sweep(runner, "--dry-run")
    assert code == 0 and data["unverified"] == 2
    assert all(address(guard, i).verified for i in ids["gone.com"])


@pytest.mark.settings(DOMAINGUARD_MAX_UNVERIFY=2)
def test_circuit_breaker_holds_all_then_apply_held(
    runner: FlaskCliRunner, guard: Any, status_server: StatusServer
) -> None:
    for name in ("x.com", "y.com", "z.com"):
        status_server.answers[name] = "undelegated inactive"
    ids = seed(guard, {"x.com": 1, "y.com": 1, "z.com": 1, "fine.com": 1})
    assert sweep(runner)[0] == 0
    rewind(guard, 7)
    code, data, stderr = sweep(runner)
    assert code == 3
    assert data["held"] == 3 and data["unverified"] == 0 and data["breaker_tripped"] is True
    assert "report --held" in stderr and "--apply-held" in stderr and "--dismiss-held" in stderr
    assert all(address(guard, i).verified for rows in ids.values() for i in rows)
    assert [h.resolution for h in held_rows(guard)] == [None, None, None]
    assert len(events(guard, EventKind.UNVERIFY_HELD)) == 3
    assert not events(guard, EventKind.ADDRESS_UNVERIFIED)

    # The next run confirms again, but held actions are not planned twice.
    rewind(guard, 24)
    code, data, _ = sweep(runner)
    assert code == 0 and data["held"] == 0 and len(held_rows(guard)) == 3

    report = json.loads(runner.invoke(args=["domainguard", "report", "--held", "--json"]).stdout)
    assert report["held"]["count"] == 3
    assert {row["domain"] for row in report["held"]["rows"]} == {"x.com", "y.com", "z.com"}

    # Meanwhile y.com was registered by someone (released, now held: it changed hands) and
    # z.com's address was unverified by an administrator: applying re-checks each action.
    status_server.answers["y.com"] = "active"
    guard.unverify(address(guard, ids["z.com"][0]).address, reason="manual", actor="admin:t")
    result = runner.invoke(args=["domainguard", "sweep", "--apply-held", "--json"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["applied"] == 2 and outcome["obsolete"] == 1
    hostapp.db.session.expire_all()
    assert not address(guard, ids["x.com"][0]).verified
    y = address(guard, ids["y.com"][0])
    assert not y.verified and y.unverify_reason.value == "domain_reregistered"
    assert address(guard, ids["z.com"][0]).unverify_reason.value == "manual"
    assert {h.resolution for h in held_rows(guard)} == {"applied", "obsolete"}
    assert len(events(guard, EventKind.HELD_APPLIED)) == 2
    assert len(events(guard, EventKind.ADDRESS_UNVERIFIED)) == 3  # two applied, one manual


@pytest.mark.settings(DOMAINGUARD_MAX_UNVERIFY=1)
def test_dismiss_held_starts_the_confirmation_over(
    runner: FlaskCliRunner, guard: Any, status_server: StatusServer
) -> None:
    for name in ("x.com", "y.com"):
        status_server.answers[name] = "undelegated inactive"
    ids = seed(guard, {"x.com": 1, "y.com": 1})
    sweep(runner)
    rewind(guard, 7)
    assert sweep(runner)[0] == 3
    result = runner.invoke(args=["domainguard", "sweep", "--dismiss-held", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["dismissed"] == 2
    hostapp.db.session.expire_all()
    assert {h.resolution for h in held_rows(guard)} == {"dismissed"}
    assert domain(guard, "x.com").unsafe_since is None
    assert len(events(guard, EventKind.HELD_DISMISSED)) == 2
    assert all(address(guard, i).verified for rows in ids.values() for i in rows)
    rewind(guard, 24)
    code, data, _ = sweep(runner)
    assert code == 0 and data["unsafe_first_seen"] == 2 and data["held"] == 0


def test_apply_and_dismiss_together_is_a_usage_error(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["domainguard", "sweep", "--apply-held", "--dismiss-held"])
    assert result.exit_code == 2


def test_exit_code_four_when_other_sweeps_hold_every_lease(
    runner: FlaskCliRunner, guard: Any, status_server: StatusServer
) -> None:
    seed(guard, {"a.com": 1, "b.com": 1})
    Domain = guard.models.Domain
    hostapp.db.session.execute(
        sa.update(Domain).values(
            lease_owner="elsewhere", lease_until=utcnow() + timedelta(minutes=5)
        )
    )
    hostapp.db.session.commit()
    code, data, stderr = sweep(runner)
    assert code == 4 and data["checked"] == 0 and data["leased_elsewhere"] == 2
    assert "another sweep" in stderr
    assert not status_server.hits
    # An expired lease is free again.
    hostapp.db.session.execute(
        sa.update(Domain).values(lease_until=utcnow() - timedelta(seconds=1))
    )
    hostapp.db.session.commit()
    code, data, _ = sweep(runner)
    assert code == 0 and data["checked"] == 2


def test_nothing_due_is_exit_code_zero(runner: FlaskCliRunner, guard: Any) -> None:
    code, data, _ = sweep(runner)
    assert code == 0 and data["checked"] == 0


def test_domain_option(runner: FlaskCliRunner, guard: Any, status_server: StatusServer) -> None:
    seed(guard, {"a.com": 1, "b.com": 1})
    code, data, _ = sweep(runner, "--domain", "www.A.com", "--domain", "nowhere.net")
    assert code == 0 and data["checked"] == 1 and data["not_found"] == ["nowhere.net"]
    assert dict(status_server.hits) == {"a.com": 1}
    result = runner.invoke(args=["domainguard", "sweep", "--domain", "not a domain"])
    assert result.exit_code == 2


def test_limit_and_concurrency_options(
    runner: FlaskCliRunner, guard: Any, status_server: StatusServer
) -> None:
    seed(guard, {f"d{i}.com": 1 for i in range(5)})
    code, data, _ = sweep(runner, "--limit", "3", "--concurrency", "2")
    assert code == 0 and data["checked"] == 3
    code, data, _ = sweep(runner)
    assert data["checked"] == 2


def test_backend_option(runner: FlaskCliRunner, guard: Any, app_config: dict[str, Any]) -> None:
    from pathlib import Path

    Path(app_config["DOMAINGUARD_STATIC_STATUS_FILE"]).write_text(
        json.dumps({"a.com": {"registered": False}})
    )
    seed(guard, {"a.com": 1})
    code, data, _ = sweep(runner, "--backend", "static")
    assert code == 0 and data["verdicts"]["released"] == 1
