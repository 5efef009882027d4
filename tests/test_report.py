"""``flask domainguard report``: what needs a person's attention."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask.testing import FlaskCliRunner

from flask_domainguard.models import UnverifyReason
from flask_domainguard.report import FAILING_AFTER, build_report
from flask_domainguard.timeutil import utcnow
from tests import hostapp
from tests.sweep_support import seed


def set_domain(guard: Any, name: str, **values: Any) -> None:
    Domain = guard.models.Domain
    hostapp.db.session.execute(sa.update(Domain).where(Domain.name == name).values(**values))
    hostapp.db.session.commit()


def populate(guard: Any) -> dict[str, list[int]]:
    ids = seed(guard, {"custom.com": 2, "soon.com": 1, "lapsing.com": 1, "flaky.com": 1})
    # A user with a custom address and a gmail one is not at risk; add one.
    first = hostapp.db.session.get(guard.models.EmailAddress, ids["custom.com"][0])
    guard.add_address(first.user_id, "backup@gmail.com", verified=True)
    # Two custom domains are no safer than one: that user is still listed.
    second = hostapp.db.session.get(guard.models.EmailAddress, ids["custom.com"][1])
    guard.add_address(second.user_id, "other@second-custom.com", verified=True)
    now = utcnow()
    set_domain(guard, "soon.com", expires_at=now + timedelta(days=10), verdict="expiring_soon")
    set_domain(guard, "lapsing.com", verdict="in_grace", verdict_until=now + timedelta(days=20))
    set_domain(guard, "flaky.com", failures=FAILING_AFTER + 1, last_error="HTTP 500 from api")
    hostapp.db.session.add(
        guard.models.HeldAction(
            address_id=ids["custom.com"][1],
            domain="custom.com",
            reason=UnverifyReason.DOMAIN_RELEASED,
            verdict_reason="custom.com is not registered",
            held_at=now,
        )
    )
    hostapp.db.session.commit()
    return ids


def test_report_sections(guard: Any) -> None:
    ids = populate(guard)
    report = build_report(guard)
    sections = report.sections
    custom = sections["custom_only"]
    # Five users; the first also has a gmail address, so four rely on custom domains only.
    assert custom.count == 4
    assert {row["domain"] for row in custom.rows} == {
        "custom.com",
        "second-custom.com",
        "soon.com",
        "lapsing.com",
        "flaky.com",
    }
    assert sections["expiring"].count == 1 and sections["expiring"].rows[0]["domain"] == "soon.com"
    assert sections["expiring"].rows[0]["verified_addresses"] == 1
    assert sections["in_grace"].rows[0]["domain"] == "lapsing.com"
    assert sections["held"].count == 1
    held = sections["held"].rows[0]
    assert held["domain"] == "custom.com" and held["reason"] == "domain_released"
    assert held["address"].endswith("@custom.com") and held["id"]
    assert sections["failing"].rows[0]["domain"] == "flaky.com"
    assert sections["failing"].rows[0]["last_error"] == "HTTP 500 from api"
    del ids


def test_report_command_text_and_json(runner: FlaskCliRunner, guard: Any) -> None:
    populate(guard)
    result = runner.invoke(args=["domainguard", "report"])
    assert result.exit_code == 0
    text = result.stdout
    assert "verified addresses are all on custom domains: 4" in text
    assert "soon.com" in text and "lapsing.com" in text and "flaky.com" in text
    assert "--apply-held" in text
    data = json.loads(runner.invoke(args=["domainguard", "report", "--json"]).stdout)
    assert set(data) >= {"custom_only", "expiring", "in_grace", "held", "failing"}
    assert data["failing"]["count"] == 1
    held_only = json.loads(runner.invoke(args=["domainguard", "report", "--held", "--json"]).stdout)
    assert set(held_only) == {"generated_at", "sections", "held"}


def test_report_limit_says_how_many_more(runner: FlaskCliRunner, guard: Any) -> None:
    seed(guard, {f"c{i}.com": 1 for i in range(5)})
    result = runner.invoke(args=["domainguard", "report", "--limit", "2"])
    assert "and 3 more" in result.stdout


def test_empty_report(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["domainguard", "report", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert all(data[name]["count"] == 0 for name in ("custom_only", "held", "failing"))


def test_at_risk_comes_first_and_lists_the_soonest_lapse_first(
    runner: FlaskCliRunner, guard: Any
) -> None:
    from tests.guard_helpers import enrol_2fa

    ids = seed(guard, {"later.com": 1, "sooner.com": 1, "unknown.com": 1, "safe2fa.com": 1})
    user_of = {
        name: hostapp.db.session.get(guard.models.EmailAddress, row_ids[0]).user_id
        for name, row_ids in ids.items()
    }
    now = utcnow()
    set_domain(guard, "later.com", expires_at=now + timedelta(days=300))
    set_domain(guard, "sooner.com", expires_at=now + timedelta(days=20))
    set_domain(guard, "safe2fa.com", expires_at=now + timedelta(days=5))
    enrol_2fa(guard, user_of["safe2fa.com"])  # custom domain only, but 2FA: not at risk
    gmail_user = user_of["later.com"]
    guard.add_address(gmail_user, "later-backup@gmail.com", verified=False)  # unverified: no help

    report = build_report(guard)
    assert next(iter(report.sections)) == "at_risk"
    at_risk = report.sections["at_risk"]
    assert at_risk.count == 3
    assert [row["domain"] for row in at_risk.rows] == ["sooner.com", "later.com", "unknown.com"]
    assert report.sections["custom_only"].count == 4  # 2FA does not change that list

    text = runner.invoke(args=["domainguard", "report"]).stdout
    assert text.startswith("Accounts most at risk: every verified address on a custom domain")
    assert text.index("sooner.com") < text.index("later.com") < text.index("unknown.com")
    data = json.loads(runner.invoke(args=["domainguard", "report", "--json"]).stdout)
    assert data["sections"][0] == "at_risk"
    assert [row["domain"] for row in data["at_risk"]["rows"]] == [
        "sooner.com",
        "later.com",
        "unknown.com",
    ]
    # A verified address at a large provider takes the account off the list.
    guard.add_address(user_of["sooner.com"], "sooner-backup@gmail.com", verified=True)
    assert [r["domain"] for r in build_report(guard).sections["at_risk"].rows] == [
        "later.com",
        "unknown.com",
    ]


def test_report_help_names_its_sections(runner: FlaskCliRunner) -> None:
    from flask_domainguard.report import SECTIONS

    text = runner.invoke(args=["domainguard", "report", "--help"]).stdout
    for name in SECTIONS:
        assert f"  {name}  " in text, name
