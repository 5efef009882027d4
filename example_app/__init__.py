"""An "existing" Flask app with its own users, login and password reset, with DomainGuard added.

Every line that adding DomainGuard took is marked ``# DomainGuard``. Run the demo with
``bash scripts/demo.sh`` from the repository root, or by hand::

    flask --app example_app seed
    flask --app example_app domainguard sweep
    flask --app example_app run
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from flask_domainguard import DomainGuard  # DomainGuard

from .models import User, db

login_manager = LoginManager()
login_manager.login_view = "auth.login"
csrf = CSRFProtect()
guard = DomainGuard(db=db, user_model=User)  # DomainGuard


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


@guard.set_password_setter  # DomainGuard: how the library's own reset pages store a password
def store_password(user: User, new_password: str) -> None:  # DomainGuard
    if len(new_password) < 10:  # the same rule as the app's own forms
        raise ValueError("Use at least 10 characters.")
    user.set_password(new_password)  # DomainGuard


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The application factory."""
    app = Flask(__name__, instance_path=str(Path(__file__).resolve().parent / "instance"))
    # DomainGuard's mails name the site by app.name (default: the import name, example_app).
    app.name = "Example App"
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.update(
        # A demo key, kept in the instance folder; a real deployment sets SECRET_KEY itself.
        SECRET_KEY=_demo_secret(Path(app.instance_path) / "secret_key"),
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{Path(app.instance_path) / 'example.sqlite'}",
        MAIL_DEFAULT_SENDER="Example App <no-reply@example-app.test>",
        # The demo keeps mail on the /mailbox page instead of sending it.
        MAIL_SUPPRESS_SEND=True,
        # DomainGuard: mailed links point here, never at the Host header a request names.
        # A deployment sets its public address, e.g. EXAMPLE_DOMAINGUARD_EXTERNAL_URL=https://...
        DOMAINGUARD_EXTERNAL_URL="http://127.0.0.1:5000",  # DomainGuard
        DOMAINGUARD_STATUS_BACKEND="static",  # DomainGuard: offline demo status source
        DOMAINGUARD_STATIC_STATUS_FILE=str(Path(app.instance_path) / "demo-status.json"),
        DOMAINGUARD_TOTP_ISSUER="Example App",  # DomainGuard
        # Demo only: the mailbox page stands in for the user's own mail client, so a session
        # still waiting for its second factor (or for enrolment) may read it.
        DOMAINGUARD_2FA_ALLOWED_ENDPOINTS=("logout", "demo.mailbox"),
    )
    app.config.from_prefixed_env("EXAMPLE")
    if config:
        app.config.update(config)
    if app.config.get("TRUSTED_HOSTS") is None:
        # Answer only for the site's own host name: requests naming another Host get a 400.
        app.config["TRUSTED_HOSTS"] = [urlsplit(app.config["DOMAINGUARD_EXTERNAL_URL"]).hostname]

    db.init_app(app)
    login_manager.init_app(app)
    csrf.init_app(app)
    guard.init_app(app)  # DomainGuard

    from . import demo, views

    app.register_blueprint(views.bp)
    demo.init_app(app)

    with app.app_context():
        db.create_all()
    return app


def _demo_secret(path: Path) -> str:
    if not path.exists():
        path.write_text(os.urandom(32).hex())
        path.chmod(0o600)
    return path.read_text().strip()
