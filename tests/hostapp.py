"""A host application as the tests see it: its own User model, an app factory, DomainGuard added.

Two user models exist so both key types are exercised: ``User`` (integer key) and
``UuidUser`` (string UUID key), each with its own ``db``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.security import generate_password_hash

from flask_domainguard import DomainGuard


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    # Lengths: MySQL/MariaDB have no VARCHAR without one.
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    password_hash: Mapped[str] = mapped_column(String(255), default="")
    # When the user signed up (naive UTC, as many hosts store it); read by `adopt` when
    # DOMAINGUARD_USER_CREATED_ATTR names it.
    created_at: Mapped[datetime | None] = mapped_column(nullable=True, default=None)

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)


guard = DomainGuard(db=db, user_model=User)
login_manager = LoginManager()


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


class UuidBase(DeclarativeBase):
    pass


uuid_db = SQLAlchemy(model_class=UuidBase)


class UuidUser(UserMixin, uuid_db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "uuid_users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)


uuid_guard = DomainGuard(db=uuid_db, user_model=UuidUser)


def create_app(config: dict[str, Any]) -> Flask:
    """The host's application factory."""
    app = Flask("hostapp")
    app.config.update(
        SECRET_KEY="test-secret-key-not-for-production",
        MAIL_DEFAULT_SENDER="security@host.test",
        MAIL_SUPPRESS_SEND=True,
        TESTING=True,
        WTF_CSRF_ENABLED=True,
    )
    app.config.update(config)
    db.init_app(app)
    login_manager.init_app(app)
    guard.init_app(app)
    return app
