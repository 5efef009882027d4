"""The example app starts, seeds its demo users, sweeps, and serves its pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from example_app import create_app
from example_app.demo import DEMO_PASSWORD, DEMO_USERS


@pytest.fixture
def demo_app(tmp_path: Path) -> Any:
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.sqlite'}",
            "DOMAINGUARD_STATIC_STATUS_FILE": str(tmp_path / "demo-status.json"),
            "DOMAINGUARD_CONFIRM_AFTER": 0,
            "WTF_CSRF_ENABLED": False,
        }
    )
    yield app
    with app.app_context():
        from example_app.models import db

        db.engine.dispose()


def test_seed_creates_every_demo_user_once(demo_app: Any) -> None:
    runner = demo_app.test_cli_runner()
    first = runner.invoke(args=["seed"])
    assert first.exit_code == 0, first.output
    assert f"Seeded {len(DEMO_USERS)} demo user(s)" in first.output
    again = runner.invoke(args=["seed"])
    assert "Seeded 0 demo user(s)" in again.output
    with demo_app.app_context():
        guard = demo_app.extensions["domainguard"].guard
        for address, _ in DEMO_USERS.values():
            row = guard.find_address(address)
            assert row is not None and row.verified and row.primary


def test_demo_sweeps_cover_every_verdict(demo_app: Any) -> None:
    runner = demo_app.test_cli_runner()
    runner.invoke(args=["seed"])
    first = json.loads(runner.invoke(args=["domainguard", "sweep", "--json"]).output)
    assert set(first["verdicts"]) == {
        "ok",
        "expiring_soon",
        "in_grace",
        "expired",
        "released",
        "reregistered",
        "unknown",
    }
    # heidi@gmail.com and frank@outlook.com: trusted providers, never looked up.
    assert first["skipped_trusted"] == 2 and first["unverified"] == 0
    second = json.loads(runner.invoke(args=["domainguard", "sweep", "--json"]).output)
    assert second["unverified"] == 3
    with demo_app.app_context():
        guard = demo_app.extensions["domainguard"].guard
        unverified = {a for a, _ in DEMO_USERS.values() if not guard.find_address(a).verified}
    assert unverified == {
        "dave@long-gone.example",
        "erin@released.example",
        "frank@resurrected.example",
    }
    # Frank's other address hears about it; the resurrected one never does.
    with demo_app.app_context():
        from example_app.models import SentMail, db

        recipients = [m.recipients for m in db.session.query(SentMail)]
    assert "frank@outlook.com" in recipients
    assert not any("resurrected.example" in r for r in recipients)


def test_pages_render_and_login_leads_to_2fa_enrolment(demo_app: Any) -> None:
    demo_app.test_cli_runner().invoke(args=["seed"])
    client = demo_app.test_client()
    for path in ("/", "/login", "/register", "/forgot", "/mailbox"):
        assert client.get(path).status_code == 200, path
    assert client.get("/account").status_code == 302
    response = client.post(
        "/login", data={"email": "alice@healthy-corp.example", "password": DEMO_PASSWORD}
    )
    assert response.status_code == 302
    # 2FA is required of active users: every page now leads to enrolment.
    account = client.get("/account")
    assert account.status_code == 302 and "/2fa/enroll" in account.headers["Location"]


def test_register_checks_the_address_with_domainguard_and_refuses_taken_ones(
    demo_app: Any,
) -> None:
    demo_app.test_cli_runner().invoke(args=["seed"])
    client = demo_app.test_client()
    form = {"name": "Pat", "password": "long-enough-pw"}
    bad = client.post("/register", data={**form, "email": "pat@localhost"})
    assert bad.status_code == 200 and b'aria-invalid="true"' in bad.data
    # Frank's second address belongs to an account already, though no User.email says so.
    taken = client.post("/register", data={**form, "email": "frank@outlook.com"})
    assert b"already registered" in taken.data
    ok = client.post("/register", data={**form, "email": "pat@pat-studio.example"})
    assert ok.status_code == 302
    with demo_app.app_context():
        guard = demo_app.extensions["domainguard"].guard
        row = guard.find_address("pat@pat-studio.example")
        assert row is not None and row.primary and not row.verified
