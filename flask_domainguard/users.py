"""What DomainGuard reads of a host's user, and the row it keeps beside the host's table.

The host's user model is never changed. Its password is read as the host says (a
``password_checker``, else the hash named by ``DOMAINGUARD_PASSWORD_HASH_ATTR``); what
DomainGuard records per user (last login, session epoch, the lock of "this wasn't me") lives
in :class:`~.models.UserState`. Password resets, sessions, "this wasn't me" and two-factor
authentication all build on these helpers, so this module imports none of them.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app, has_request_context
from flask_login import current_user
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from werkzeug.security import check_password_hash

from .models import MYSQL_DIALECTS

if TYPE_CHECKING:
    from .context import Guard
    from .models import UserState


def logged_in_user() -> Any:
    """The user logged in to this request, or ``None``: outside a request, in a host without
    Flask-Login, or for an anonymous visitor."""
    if not has_request_context() or getattr(current_app, "login_manager", None) is None:
        return None
    user = current_user._get_current_object()
    return user if getattr(user, "is_authenticated", False) else None


# -- the host's password -------------------------------------------------------------------


def password_hash_of(guard: Guard, user: Any) -> str | None:
    """The user's password hash, read as ``DOMAINGUARD_PASSWORD_HASH_ATTR`` says."""
    source = guard.settings.password_hash_attr
    value = source(user) if callable(source) else getattr(user, source, None)
    return str(value) if value else None


def check_password(guard: Guard, user: Any, password: str) -> bool:
    """Whether ``password`` is the user's: ``guard.password_checker`` or werkzeug's check.

    :raises RuntimeError: when the host has neither a checker nor a readable password hash.
    """
    if guard.password_checker is not None:
        return bool(guard.password_checker(user, password))
    stored = password_hash_of(guard, user)
    if stored is None:
        raise RuntimeError(
            "DomainGuard cannot check this user's password: set guard.password_checker "
            "(@guard.set_password_checker) or DOMAINGUARD_PASSWORD_HASH_ATTR."
        )
    return check_password_hash(stored, password)


def fingerprint(guard: Guard, user: Any) -> str | None:
    """A digest of the user's password hash (``None`` when the hash cannot be read).

    Not keyed: it must survive a ``SECRET_KEY`` rotation, and it tells nothing the hash it
    digests (stored beside it) does not.
    """
    stored = password_hash_of(guard, user)
    if stored is None:
        return None
    text = f"flask-domainguard password v1\0{guard.user_id_of(user)}\0{stored}"
    return hashlib.sha256(text.encode()).hexdigest()


# -- the row beside the host's table -------------------------------------------------------


def state_of(guard: Guard, user_id: Any) -> UserState | None:
    """The user's row, or ``None`` when nothing was recorded yet."""
    row: UserState | None = guard.db.session.get(guard.models.UserState, user_id)
    return row


def ensure_state(guard: Guard, user_id: Any) -> UserState:
    """The user's row, created when missing, inside the caller's transaction (not committed).

    Safe against a concurrent creator: ``INSERT ... ON CONFLICT DO NOTHING`` where the
    database has it.
    """
    row = state_of(guard, user_id)
    if row is not None:
        return row
    db = guard.db
    UserState = guard.models.UserState
    dialect = db.session.get_bind(mapper=sa.inspect(UserState)).dialect.name
    table: sa.Table = UserState.__table__  # type: ignore[attr-defined]
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
        db.session.execute(
            insert(table).values(user_id=user_id, session_epoch=0).on_conflict_do_nothing()
        )
    elif dialect in MYSQL_DIALECTS:
        # A no-op update on a duplicate key: a concurrent request may create the row first.
        db.session.execute(
            mysql_insert(table)
            .values(user_id=user_id, session_epoch=0)
            .on_duplicate_key_update(session_epoch=table.c.session_epoch)
        )
    else:  # pragma: no cover - databases without ON CONFLICT
        db.session.add(UserState(user_id=user_id, session_epoch=0))
        db.session.flush()
    created = state_of(guard, user_id)
    if created is None:  # pragma: no cover - the insert above made it, or a concurrent one
        raise RuntimeError(f"could not create the UserState row of user {user_id!r}")
    return created


def session_epoch(guard: Guard, user_id: Any) -> int:
    """The user's session epoch (0 before anything raised it)."""
    UserState = guard.models.UserState
    value = guard.db.session.scalar(
        sa.select(UserState.session_epoch).where(UserState.user_id == user_id)
    )
    return int(value or 0)


def raise_session_epoch(guard: Guard, user_id: Any) -> None:
    """End every session of the user, inside the caller's transaction (one atomic update)."""
    UserState = guard.models.UserState
    ensure_state(guard, user_id)
    guard.db.session.execute(
        sa.update(UserState)
        .where(UserState.user_id == user_id)
        .values(session_epoch=UserState.session_epoch + 1)
        .execution_options(synchronize_session="fetch")
    )


# -- keys read back ------------------------------------------------------------------------


def user_key(guard: Guard, value: Any) -> Any:
    """A user's primary key as the host's key column takes it, from ``value`` read back from
    JSON or text (a job's payload, a command-line argument).

    JSON keeps integers and strings; a UUID key travels as text, and SQLAlchemy's ``Uuid``
    type binds only :class:`uuid.UUID` values on databases without a native UUID type.

    :raises ValueError: when ``value`` cannot be a key of that type (``"abc"`` for an
        integer key).
    """
    try:
        python_type = guard.models.user_pk.type.python_type
    except NotImplementedError:  # a type that does not say: the value as it came
        return value
    if value is None or isinstance(value, python_type):
        return value
    try:
        return python_type(value)
    except TypeError as exc:
        raise ValueError(f"{value!r} is not a {python_type.__name__} user key") from exc
