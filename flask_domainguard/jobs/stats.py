"""The job queue in figures, for ``flask domainguard status`` and the metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..timeutil import utcnow
from .queue import DONE, FAILED, KINDS, PENDING, SHED, _table

if TYPE_CHECKING:
    from ..context import Guard


def job_stats(guard: Guard) -> dict[str, Any]:
    """The queue in figures: pending jobs by kind, the oldest one's age, jobs running and by
    whom, failed jobs, and jobs and requests shed within ``DOMAINGUARD_JOBS_KEEP``."""
    J = _table(guard)
    db = guard.db
    now = utcnow()
    pending: dict[str, int] = dict.fromkeys(KINDS, 0)
    for kind, count in db.session.execute(
        sa.select(J.c.kind, sa.func.count()).where(J.c.state == PENDING).group_by(J.c.kind)
    ):
        pending[kind] = int(count)
    # ORDER BY ... LIMIT 1 rather than MIN(): an aggregate loses the column's type on SQLite.
    oldest = db.session.scalar(
        sa.select(J.c.created_at).where(J.c.state == PENDING).order_by(J.c.created_at).limit(1)
    )
    running: dict[str, int] = {}
    for owner, count in db.session.execute(
        sa.select(J.c.lease_owner, sa.func.count())
        .where(J.c.state == PENDING, J.c.lease_until >= now)
        .group_by(J.c.lease_owner)
    ):
        running[str(owner)] = int(count)
    by_state: dict[str, tuple[int, int]] = {}
    for state, count, requests in db.session.execute(
        sa.select(J.c.state, sa.func.count(), sa.func.coalesce(sa.func.sum(J.c.requests), 0))
        .where(J.c.state != PENDING)
        .group_by(J.c.state)
    ):
        by_state[str(state)] = (int(count), int(requests))
    retrying = int(
        db.session.scalar(
            sa.select(sa.func.count()).where(J.c.state == PENDING, J.c.not_before > now)
        )
        or 0
    )
    db.session.rollback()
    return {
        "pending": sum(pending.values()),
        "pending_by_kind": pending,
        "oldest_pending_seconds": round((now - oldest).total_seconds(), 1) if oldest else None,
        "retrying": retrying,
        "running": sum(running.values()),
        "running_by_owner": running,
        "done": by_state.get(DONE, (0, 0))[0],
        "failed": by_state.get(FAILED, (0, 0))[0],
        "shed": by_state.get(SHED, (0, 0))[0],
        "shed_requests": by_state.get(SHED, (0, 0))[1],
    }
