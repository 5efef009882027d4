"""Statements that differ between the supported databases, written once.

MySQL and MariaDB have no ``UPDATE ... RETURNING``; PostgreSQL may run an ``IN (SELECT ...
LIMIT ...)`` subquery of an ``UPDATE`` again for every row it scans. The helpers here give
every caller (the sweep's leases, the job table's claims) the same answer on each database.
Each database also caps the parameters of one statement, which a long ``IN (...)`` list
binds one by one: :func:`in_chunks` keeps such lists short.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .models import MYSQL_DIALECTS

T = TypeVar("T")

#: Most values one ``IN (...)`` list binds. Each value is a parameter, and a statement may
#: have at most 999 on SQLite before 3.32 (and builds that keep that default), 32,766 on
#: later ones, 65,535 through psycopg: a list not bounded by a batch size (the users of one
#: expiring domain, say) goes in statements of this many values.
IN_LIST_LIMIT = 500


def in_chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    """``values`` in slices of at most :data:`IN_LIST_LIMIT`, one per statement."""
    size = IN_LIST_LIMIT
    for start in range(0, len(values), size):
        yield values[start : start + size]


def update_returning(
    session: Session,
    dialect: str,
    table: sa.Table,
    key: sa.Column[Any],
    where: list[sa.ColumnElement[bool]],
    values: dict[str, Any],
    columns: list[sa.Column[Any]],
) -> list[tuple[Any, ...]]:
    """``UPDATE table SET values WHERE where RETURNING columns`` in the current transaction.

    MySQL/MariaDB have no RETURNING on UPDATE: there the rows' keys are read with a locking
    SELECT (held to the end of the transaction, as the UPDATE's own locks would be), the rows
    are updated by ``key``, and ``columns`` are read back, as RETURNING gives them: updated.
    """
    if dialect not in MYSQL_DIALECTS:
        stmt = sa.update(table).where(*where).values(values).returning(*columns)
        return [tuple(row) for row in session.execute(stmt)]
    keys = list(session.scalars(sa.select(key).where(*where).with_for_update()))
    if not keys:
        return []
    session.execute(sa.update(table).where(key.in_(keys)).values(values))
    return [tuple(row) for row in session.execute(sa.select(*columns).where(key.in_(keys)))]


def locked_ids(session: Session, dialect: str, pick: sa.Select[Any]) -> Any:
    """What an ``UPDATE ... WHERE id IN (...)`` may take from ``pick`` without a race.

    On PostgreSQL and MySQL/MariaDB the rows are locked first, in this transaction, with
    ``FOR UPDATE SKIP LOCKED``, and their ids are passed on as a list: as a subquery,
    PostgreSQL may run ``pick`` again for every row the update scans (and take them all,
    whatever the ``LIMIT``), and MariaDB refuses ``LIMIT`` inside ``IN (...)``. SQLite runs
    the subquery once, under its write lock.
    """
    if dialect == "sqlite":
        return pick
    return list(session.scalars(pick.with_for_update(skip_locked=True)))
