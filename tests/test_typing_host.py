"""The typed host (tests/typing/host_app.py, checked by ``mypy --strict`` in CI) also runs."""

from __future__ import annotations

from pathlib import Path

from tests.typing import host_app


def test_typed_host_runs(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text(
        '{"example.org": {"registered": true, "statuses": ["active"],'
        ' "expires_at": "2099-01-01T00:00:00Z", "registered_at": "2001-01-01T00:00:00Z"},'
        ' "gone.example": {"registered": false}}'
    )
    app = host_app.create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'typed.sqlite'}",
            "DOMAINGUARD_STATUS_BACKEND": "static",
            "DOMAINGUARD_STATIC_STATUS_FILE": str(tmp_path / "status.json"),
        }
    )
    with app.app_context():
        host_app.db.create_all()
        user = host_app.User(email="ana@example.org")
        host_app.db.session.add(user)
        host_app.db.session.commit()
        host_app.guard.add_address(user, "ana@example.org", primary=True, verified=True)
        host_app.guard.add_address(user, "ana@other.example")
        host_app.guard.add_address(user, "ana@gone.example", verified=True)
        host_app.db.session.commit()

        assert host_app.load_user(user.id) is user
        assert host_app.verified_addresses(user) == ["ana@example.org", "ana@gone.example"]
        assert host_app.reset_user("ana@example.org") is user
        assert host_app.reset_user("ana@gone.example") is None
        assert host_app.reset_user("ana@other.example") is None
        assert host_app.reset_user("nobody@example.org") is None
        host_app.db.session.remove()
        host_app.db.drop_all()

    page = app.test_client().get("/forgot")
    assert page.status_code == 200
    assert page.text == "Enter your address."
