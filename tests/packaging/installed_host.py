"""A small host app run against an INSTALLED wheel by scripts/package_check.sh.

It imports nothing from the checkout and needs none of the test tools: only what
``pip install flask-domainguard`` brings. Run as ``python installed_host.py`` it exercises
what a wheel can break (templates, static files, ``py.typed``, the licence, the imports of
every module); ``flask --app installed_host domainguard --help`` uses :func:`create_app`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import pkgutil
import sys
import tempfile
from pathlib import Path

from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import flask_domainguard
from flask_domainguard import DomainGuard


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column()


guard = DomainGuard(db=db, user_model=User)
login = LoginManager()


@login.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


def create_app() -> Flask:
    app = Flask(__name__)
    folder = os.environ.get("HOST_DATA") or tempfile.mkdtemp(prefix="domainguard-host-")
    app.config.update(
        SECRET_KEY="packaging-check-only",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{Path(folder) / 'host.sqlite'}",
        MAIL_SUPPRESS_SEND=True,
        MAIL_DEFAULT_SENDER="security@host.test",
        DOMAINGUARD_STATUS_BACKEND="static",
        DOMAINGUARD_STATIC_STATUS_FILE=str(Path(folder) / "status.json"),
        DOMAINGUARD_EXTERNAL_URL="https://host.example",
    )
    (Path(folder) / "status.json").write_text(
        '{"gone.test": {"registered": false},'
        ' "kept.test": {"registered": true, "statuses": ["active"],'
        ' "expires_at": "2099-01-01T00:00:00Z", "registered_at": "2001-01-01T00:00:00Z"}}'
    )
    db.init_app(app)
    login.init_app(app)
    guard.init_app(app)
    with app.app_context():
        db.create_all()
    return app


#: Modules of an optional extra, and the install line their ImportError must name.
NEEDS_EXTRA = {"flask_domainguard.metrics": "flask-domainguard[metrics]"}


def check_installed() -> None:
    """Fail loudly on anything the wheel should carry and does not."""
    where = Path(flask_domainguard.__file__).parent
    assert "site-packages" in str(where), f"imported from the checkout: {where}"
    assert (where / "py.typed").is_file(), "py.typed is missing from the wheel"
    dist = importlib.metadata.distribution("flask-domainguard")
    licences = [f for f in dist.files or [] if f.name == "LICENSE"]
    assert licences, "the wheel carries no LICENSE"
    assert "BSD 3-Clause" in licences[0].read_text()
    for module in pkgutil.walk_packages(flask_domainguard.__path__, "flask_domainguard."):
        if module.name.startswith("flask_domainguard.contrib."):
            continue  # optional extras (Celery) are not installed here
        if module.name in NEEDS_EXTRA:  # not installed here: it must say which extra
            try:
                importlib.import_module(module.name)
            except ImportError as exc:
                assert NEEDS_EXTRA[module.name] in str(exc), exc
            continue
        importlib.import_module(module.name)

    app = create_app()
    with app.app_context():
        user = User(email="ana@kept.test")
        db.session.add(user)
        db.session.commit()
        guard.add_address(user, "ana@kept.test", primary=True, verified=True)
        guard.add_address(user, "ana@gone.test", verified=True)
        db.session.commit()
        kept = guard.reset_decision("ana@kept.test")
        assert kept.allowed and kept.user is user, f"reset refused on a safe domain: {kept}"
        gone = guard.reset_decision("ana@gone.test")
        assert not gone.allowed, "a reset went to an address on a released domain"
    client = app.test_client()
    page = client.get("/domainguard/reset")
    assert page.status_code == 200 and b"csrf_token" in page.data, "reset page template"
    css = client.get("/domainguard/static/domainguard.css")
    assert css.status_code == 200 and css.data, "static files missing from the wheel"
    css.close()
    print(f"installed host app: ok ({where})")


if __name__ == "__main__":
    check_installed()
    sys.exit(0)
