"""Helpers shared by the 2FA test modules: enrolling a user, codes at a time, CSRF tokens."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pyotp
from flask import Flask, jsonify, redirect, request
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from flask_domainguard import DomainGuard
from flask_domainguard.timeutil import utcnow
from flask_domainguard.twofactor import crypto, devices

#: The RFC 6238 test secret (ASCII "12345678901234567890", the SHA-1 key of Appendix B).
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


def enrol(guard: Any, user: Any, secret: str | None = None) -> tuple[str, list[str]]:
    """Give ``user`` confirmed 2FA directly in the database; returns (secret, recovery codes)."""
    secret = secret or crypto.new_secret()
    user_id = guard.user_id_of(user)
    box = crypto.SecretBox.for_settings(guard.settings)
    guard.db.session.add(
        guard.models.TOTPDevice(
            user_id=user_id,
            secret_encrypted=box.seal(secret),
            confirmed_at=utcnow(),
            created_at=utcnow(),
        )
    )
    codes = devices.replace_recovery_codes(guard, user_id)
    guard.db.session.commit()
    return secret, codes


def code_at(secret: str, when: datetime | None = None, offset: int = 0, digits: int = 6) -> str:
    """The TOTP code of ``secret`` for the time step ``offset`` steps from ``when`` (now)."""
    step = crypto.time_step(when or utcnow()) + offset
    return str(pyotp.TOTP(secret, digits=digits).generate_otp(step))


def csrf_token(html: str | bytes) -> str:
    """The CSRF token of the first form on a page."""
    text = html.decode() if isinstance(html, bytes) else html
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', text) or re.search(
        r'name="csrf_token" value="([^"]+)"', text
    )
    assert match, "the page has no CSRF token"
    return match.group(1)


# -- a small host app, as a Flask-Login site looks before and after adding DomainGuard ------

#: Every page of the site that needs a full login shows this; a gated response never does.
PROTECTED = "PROTECTED-CONTENT"


class SiteBase(DeclarativeBase):
    pass


site_db = SQLAlchemy(model_class=SiteBase)


class SiteUser(UserMixin, site_db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "site_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255), default="")

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)


site_guard = DomainGuard(db=site_db, user_model=SiteUser)
site_login = LoginManager()
site_login.login_view = "login"


@site_login.user_loader
def _load_site_user(user_id: str) -> SiteUser | None:
    return site_db.session.get(SiteUser, int(user_id))


def create_site(config: dict[str, Any]) -> Flask:
    """The site's app factory: its own login, logout and pages, then DomainGuard in one line."""
    app = Flask("twofactor_site")
    app.config.update(
        SECRET_KEY="site-secret-key-for-tests",
        TESTING=True,
        MAIL_SUPPRESS_SEND=True,
        MAIL_DEFAULT_SENDER="security@site.test",
        WTF_CSRF_ENABLED=True,
        DOMAINGUARD_STATUS_BACKEND="static",
    )
    app.config.update(config)
    site_db.init_app(app)
    site_login.init_app(app)

    @app.route("/")
    def index() -> str:
        if current_user.is_authenticated:
            return f"{PROTECTED} hello {current_user.email}"
        return "welcome"

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "POST":
            user = site_db.session.scalar(
                site_db.select(SiteUser).where(SiteUser.email == request.form["email"])
            )
            if user and check_password_hash(user.password_hash, request.form["password"]):
                login_user(user, remember=bool(request.form.get("remember")))
                return redirect("/account")
            return "wrong password", 400
        return "<form method=post>login</form>"

    @app.route("/logout")
    def logout() -> Any:
        logout_user()
        return redirect("/login")

    @app.route("/account")
    @login_required
    def account() -> str:
        return f"{PROTECTED} account of {current_user.email}"

    @app.route("/account/password", methods=["POST"])
    @login_required
    def change_password() -> str:
        current_user.set_password(request.form["password"])
        site_db.session.commit()
        return f"{PROTECTED} password changed"

    @app.route("/account/password-announced", methods=["POST"])
    @login_required
    def change_password_announced() -> str:
        # The same change, told to DomainGuard as docs/integration.md shows.
        current_user.set_password(request.form["password"])
        site_db.session.commit()
        site_guard.password_changed(current_user, actor="user")
        return f"{PROTECTED} password changed"

    @app.route("/api/me")
    @login_required
    def api_me() -> Any:
        return jsonify(email=current_user.email, secret=PROTECTED)

    @app.route("/items/<int:item_id>")
    @login_required
    def item(item_id: int) -> str:
        return f"{PROTECTED} item {item_id}"

    @app.route("/items/<int:item_id>/delete", methods=["POST", "DELETE"])
    @login_required
    def delete_item(item_id: int) -> str:
        return f"{PROTECTED} deleted {item_id}"

    @app.route("/files/<path:name>")
    def files(name: str) -> str:
        return f"{PROTECTED} file {name}" if current_user.is_authenticated else "public file"

    @app.route("/security/email", methods=["GET", "POST"])
    @login_required
    @site_guard.require_fresh_2fa
    def change_email() -> str:
        return f"{PROTECTED} change your address"

    site_guard.init_app(app)  # the one line a host adds (after db.init_app)
    return app


def site_config(database_url: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    status = tmp_path / "status.json"
    if not status.exists():
        status.write_text("{}")
    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "DOMAINGUARD_STATIC_STATUS_FILE": str(status),
        **extra,
    }


@contextmanager
def running_site(config: dict[str, Any], *, create: bool = True) -> Iterator[Flask]:
    """A site app with its tables; no app context stays pushed, so each request has its own."""
    app = create_site(config)
    if create:
        with app.app_context():
            site_db.create_all()
    try:
        yield app
    finally:
        with app.app_context():
            site_db.session.remove()
            if create:
                site_db.drop_all()
            site_db.engine.dispose()


def add_site_user(
    app: Flask,
    email: str = "ada@example.com",
    password: str = "correct horse",
    *,
    with_2fa: bool = True,
    secret: str | None = None,
) -> tuple[int, str, list[str]]:
    """A committed site user; returns (id, TOTP secret or "", recovery codes)."""
    with app.app_context():
        user = SiteUser(email=email)
        user.set_password(password)
        site_db.session.add(user)
        site_db.session.commit()
        site_guard.add_address(user, email, verified=True)
        if not with_2fa:
            return user.id, "", []
        got_secret, codes = enrol(site_guard, user, secret)
        return user.id, got_secret, codes


def site_login_as(
    client: Any,
    email: str = "ada@example.com",
    password: str = "correct horse",
    *,
    remember: bool = False,
) -> Any:
    data = {"email": email, "password": password}
    if remember:
        data["remember"] = "y"
    return client.post("/login", data=data)


def pass_second_factor(
    client: Any, secret: str, *, trust: bool = False, offset: int = 0, next: str | None = None
) -> Any:
    page = client.get("/domainguard/2fa/verify")
    data = {"csrf_token": csrf_token(page.data), "code": code_at(secret, offset=offset)}
    if trust:
        data["trust"] = "y"
    if next is not None:
        data["next"] = next
    return client.post("/domainguard/2fa/verify", data=data)
