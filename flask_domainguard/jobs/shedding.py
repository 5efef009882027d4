"""Load shedding: past ``DOMAINGUARD_JOBS_MAX_PENDING`` waiting reset requests, drop some."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..journal import EventKind, transaction
from ..timeutil import utcnow
from .queue import PENDING, RESET_REQUEST, SHED, _table, update_picked

if TYPE_CHECKING:
    from ..context import Guard

log = logging.getLogger(__name__)


@dataclass
class ShedReport:
    """What one :func:`shed` pass dropped."""

    unknown: int = 0
    known: int = 0

    @property
    def total(self) -> int:
        return self.unknown + self.known


def _waiting_resets(J: sa.Table, now: datetime) -> list[sa.ColumnElement[bool]]:
    return [
        J.c.kind == RESET_REQUEST,
        J.c.state == PENDING,
        sa.or_(J.c.lease_until.is_(None), J.c.lease_until < now),
    ]


def shed(guard: Guard) -> ShedReport:
    """Drop waiting reset requests beyond ``DOMAINGUARD_JOBS_MAX_PENDING``; commits.

    Requests for addresses nobody has go first: they would mail nothing, so dropping them
    loses nothing. If the requests for known addresses alone still exceed the depth, the
    newest of them are dropped too, each with a ``reset_shed`` journal row for its account
    (support sees it; the user may ask again). Both are counted (rows in state ``shed``).
    """
    db, settings = guard.db, guard.settings
    J = _table(guard)
    A = guard.models.EmailAddress.__table__  # type: ignore[attr-defined]
    now = utcnow()
    report = ShedReport()
    waiting = _waiting_resets(J, now)
    depth = int(db.session.scalar(sa.select(sa.func.count()).select_from(J).where(*waiting)) or 0)
    if depth <= settings.jobs_max_pending:
        db.session.rollback()
        return report
    try:
        unknown = db.session.execute(
            sa.update(J)
            .where(*waiting, ~sa.exists().where(A.c.address == J.c.address))
            .values(state=SHED, done_at=now, dedupe_key=None, last_error="shed: unknown address")
        )
        report.unknown = int(unknown.rowcount)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    excess = depth - report.unknown - settings.jobs_max_pending
    if excess > 0:
        pick = sa.select(J.c.id).where(*waiting).order_by(J.c.id.desc()).limit(excess)
        EmailAddress = guard.models.EmailAddress
        with transaction(db, guard.models) as tx:
            rows = update_picked(
                guard,
                pick,
                waiting,
                {
                    "state": SHED,
                    "done_at": now,
                    "dedupe_key": None,
                    "last_error": "shed: queue full",
                },
                [J.c.id, J.c.address, J.c.requests],
            )
            found = {
                row.address: row
                for row in db.session.scalars(
                    sa.select(EmailAddress).where(EmailAddress.address.in_([r[1] for r in rows]))
                )
            }
            for job_id, address, requests in rows:
                tx.record(
                    EventKind.RESET_SHED,
                    actor="worker",
                    address=found.get(address, address),
                    job=job_id,
                    requests=int(requests),
                    depth=depth,
                )
            report.known = len(rows)
    if report.total:
        log.warning(
            "job queue over DOMAINGUARD_JOBS_MAX_PENDING (%d waiting reset requests, limit %d): "
            "shed %d for unknown addresses and %d for known accounts (journalled)",
            depth,
            settings.jobs_max_pending,
            report.unknown,
            report.known,
        )
    return report
