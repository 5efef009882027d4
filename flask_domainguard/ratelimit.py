"""Attempt limits shared by every worker process through the database.

A fixed-window counter per key: one atomic ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``
per attempt (on MySQL/MariaDB ``INSERT ... ON DUPLICATE KEY UPDATE``, then the count read
under the row lock that statement holds until commit), so two processes (or two machines)
can never both slip under the limit. A fixed
window lets a client spend at most twice the limit across a window boundary; for the limits
here (a handful of reset mails or 2FA codes) that is far from what a brute force needs.
Keys are hashed: they hold client addresses and account ids, which do not belong in the table.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .config import RateLimit
from .models import MYSQL_DIALECTS, check_dialect
from .timeutil import utcnow

if TYPE_CHECKING:
    from .context import Guard


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _window_start(now: datetime, window: timedelta) -> datetime:
    seconds = int(window.total_seconds())
    stamp = int(now.timestamp())
    return datetime.fromtimestamp(stamp - stamp % seconds, tz=now.tzinfo)


class RateLimiter:
    """Count attempts per key against a :class:`~.config.RateLimit`, in the host's database."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def _table(self) -> sa.Table:
        table: sa.Table = self.guard.models.RateCounter.__table__  # type: ignore[attr-defined]
        return table

    def count(self, key: str, limit: RateLimit) -> int:
        """Attempts counted for ``key`` in the current window, without adding one."""
        table = self._table()
        start = _window_start(utcnow(), limit.window)
        value = self.guard.db.session.scalar(
            sa.select(table.c.count).where(
                table.c.key == _digest(key), table.c.window_start == start
            )
        )
        return int(value or 0)

    def exceeded(self, key: str, limit: RateLimit) -> bool:
        """Whether ``key`` has used up its attempts in the current window."""
        return self.count(key, limit) >= limit.count

    def hit(self, key: str, limit: RateLimit) -> bool:
        """Count one attempt for ``key`` and commit it.

        :returns: ``True`` when the attempt is within the limit, ``False`` when over it.
        """
        db = self.guard.db
        table = self._table()
        now = utcnow()
        start = _window_start(now, limit.window)
        digest = _digest(key)
        dialect = db.session.get_bind(mapper=sa.inspect(self.guard.models.RateCounter)).dialect
        check_dialect(dialect.name)
        if dialect.name in MYSQL_DIALECTS:
            # No RETURNING on MySQL: the upsert locks the row until commit, so the locking
            # read after it sees exactly this attempt's count.
            db.session.execute(
                mysql_insert(table)
                .values(key=digest, window_start=start, count=1)
                .on_duplicate_key_update(count=table.c.count + 1)
            )
            count = int(
                db.session.execute(
                    sa.select(table.c.count)
                    .where(table.c.key == digest, table.c.window_start == start)
                    .with_for_update()
                ).scalar_one()
            )
        else:
            insert = sqlite_insert if dialect.name == "sqlite" else postgresql_insert
            stmt = (
                insert(table)
                .values(key=digest, window_start=start, count=1)
                .on_conflict_do_update(
                    index_elements=[table.c.key, table.c.window_start],
                    set_={"count": table.c.count + 1},
                )
                .returning(table.c.count)
            )
            count = int(db.session.execute(stmt).scalar_one())
        # Old windows of this key are dead weight; dropping them here keeps the table small.
        db.session.execute(
            sa.delete(table).where(table.c.key == digest, table.c.window_start < start)
        )
        db.session.commit()
        return count <= limit.count

    def reset(self, key: str) -> None:
        """Forget every attempt of ``key`` (after a success) and commit."""
        table = self._table()
        self.guard.db.session.execute(sa.delete(table).where(table.c.key == _digest(key)))
        self.guard.db.session.commit()
