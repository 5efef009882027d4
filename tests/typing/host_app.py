"""A host app written for ``mypy --strict``: the types DomainGuard hands a host.

scripts/test.sh runs ``mypy --strict tests/typing/host_app.py``. Each ``assert_type`` fails
that check if a type decays to ``Any``; each ``type: ignore[code]`` in :func:`misuse` fails
it (strict reports unused ignores) if a decorator stops checking the view's arguments.
tests/test_typing_host.py runs the module too, so that it stays working code.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Blueprint, Flask
from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from typing_extensions import assert_type

from flask_domainguard import DomainGuard, ResetDecision

if TYPE_CHECKING:
    # For annotations only: the mapped class of an app is guard.models.EmailAddress.
    from flask_domainguard.models import EmailAddress  # noqa: F401 (in assert_type strings)


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)

# Flask-SQLAlchemy builds db.Model at run time; type checkers see the declarative base.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model


class User(Model):
    __tablename__ = "typed_host_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]


guard = DomainGuard(db=db, user_model=User)
assert_type(guard, DomainGuard[User])

views = Blueprint("host", __name__)


@views.route("/forgot", methods=["GET", "POST"])
@guard.guarded_reset_request(
    template_or_response=lambda: "If the address is ours, mail is on its way."
)
def forgot() -> str:
    return "Enter your address."


@views.route("/security/<section>")
@guard.require_fresh_2fa
def security(section: str) -> str:
    return f"security settings: {section}"


@views.route("/security/2fa/off")
@guard.require_fresh_2fa(within=timedelta(minutes=5))
def turn_off_2fa() -> str:
    return "2FA is off"


def reset_user(address: str) -> User | None:
    """The user a reset for ``address`` may go to."""
    decision = guard.reset_decision(address)
    assert_type(decision, ResetDecision[User])
    assert_type(decision.user, User | None)
    return decision.user if decision.allowed else None


def load_user(user_id: int) -> User | None:
    return assert_type(guard.get_user(user_id), User | None)


def verified_addresses(user: User) -> list[str]:
    """The legacy ``Model.query`` and the SQLAlchemy 2 ``select`` both know the row type."""
    rows = guard.models.EmailAddress
    legacy = rows.query.filter_by(user_id=user.id).order_by(rows.id).all()
    assert_type(legacy, "list[EmailAddress]")
    current = db.session.scalars(sa.select(rows).where(rows.user_id == user.id)).all()
    assert_type(list(current), "list[EmailAddress]")
    return [row.address for row in current if row.verified]


def misuse() -> None:
    """Never called: a decorator that erased the view's signature would make these unused."""
    security(1)  # type: ignore[arg-type]
    forgot("unexpected")  # type: ignore[call-arg]


def load_login(user_id: str) -> User | None:
    return load_user(int(user_id))


def create_app(config: Mapping[str, Any]) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="typed-host-only",
        MAIL_SUPPRESS_SEND=True,
        DOMAINGUARD_EXTERNAL_URL="https://typed-host.example",
        **config,
    )
    db.init_app(app)
    login = LoginManager(app)  # Flask-Login ships no types: Any to the checker
    login.user_loader(load_login)
    guard.init_app(app)
    app.register_blueprint(views)
    return app
