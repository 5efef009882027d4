"""The row DomainGuard keeps per user beside the host's table (:class:`~.models.UserState`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .models import MYSQL_DIALECTS

if TYPE_CHECKING:
    from .context import Guard
    from .models import UserState


def get(guard: Guard, user_id: Any) -> UserState | None:
    """The user's row, or ``None`` when nothing was recorded yet."""
    row: UserState | None = guard.db.session.get(guard.models.UserState, user_id)
    return row


def ensure(guard: Guard, user_id: Any) -> UserState:
    """The user's row, created when missing, inside the caller's transaction (not committed).

    Safe against a concurrent creator: ``INSERT ... ON CONFLICT DO NOTHING`` where the
    database has it.
    """
    row = get(guard, user_id)
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
    created = get(guard, user_id)
    if created is None:  # pragma: no cover - the insert above made it, or a concurrent one
        raise RuntimeError(f"could not create the UserState row of user {user_id!r}")
    return created


def epoch(guard: Guard, user_id: Any) -> int:
    """The user's session epoch (0 before anything raised it)."""
    UserState = guard.models.UserState
    value = guard.db.session.scalar(
        sa.select(UserState.session_epoch).where(UserState.user_id == user_id)
    )
    return int(value or 0)


def raise_epoch(guard: Guard, user_id: Any) -> None:
    """End every session of the user, inside the caller's transaction (one atomic update)."""
    UserState = guard.models.UserState
    ensure(guard, user_id)
    guard.db.session.execute(
        sa.update(UserState)
        .where(UserState.user_id == user_id)
        .values(session_epoch=UserState.session_epoch + 1)
        .execution_options(synchronize_session="fetch")
    )
