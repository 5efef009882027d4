"""The example app starts, seeds its demo users and serves its pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from example_app import create_app
from example_app.demo import DEMO_USERS


@pytest.fixture
def demo_app(tmp_path: Path) -> Any:
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.sqlite'}",
            "DOMAINGUARD_STATIC_STATUS_FILE": str(tmp_path / "demo-status.json"),
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


def test_pages_render_and_login_works(demo_app: Any) -> None:
    demo_app.test_cli_runner().invoke(args=["seed"])
    client = demo_app.test_client()
    for path in ("/", "/login", "/register", "/forgot", "/mailbox"):
        assert client.get(path).status_code == 200, path
    assert client.get("/account").status_code == 302
    response = client.post(
        "/login", data={"email": "alice@healthy-corp.example", "password": "demo-password-1"}
    )
    assert response.status_code == 302
