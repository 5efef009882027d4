"""The example app's own models, as they were before DomainGuard was added."""

from __future__ import annotations

from datetime import datetime, timezone

from flask_login import UserMixin
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    """A user of the example app: one address, a hashed password."""

    __tablename__ = "user"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(unique=True)
    name: Mapped[str] = mapped_column(default="")
    password_hash: Mapped[str]
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=lambda: datetime.now(timezone.utc))

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


class SentMail(db.Model):  # type: ignore[name-defined,misc]
    """Demo only: every mail the app sends is kept here and shown on /mailbox."""

    __tablename__ = "sent_mail"
    id: Mapped[int] = mapped_column(primary_key=True)
    recipients: Mapped[str]
    subject: Mapped[str]
    body: Mapped[str]
    sent_at: Mapped[datetime] = mapped_column(default=lambda: datetime.now(timezone.utc))
