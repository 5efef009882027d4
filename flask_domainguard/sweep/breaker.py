"""The circuit breaker: a run applies its planned unverifications, unless there are more than
``DOMAINGUARD_MAX_UNVERIFY``; then it applies none and holds them all for review.

The count lives in the database (planned :class:`~flask_domainguard.models.HeldAction` rows of
the run), so chunks of one run on several workers share one breaker.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from .. import signals
from ..journal import EventKind, transaction
from ..models import UnverifyReason
from ..sqlcompat import in_chunks, update_returning
from ..timeutil import utcnow
from .notices import Notice, deliver, lock_addresses, queue_notices, unverify_for
from .report import SweepReport
from .store import APPLIED, OBSOLETE, PLANNED, SweepStore

__all__ = ["finish"]

log = logging.getLogger(__name__)

#: Planned actions applied per transaction.
APPLY_BATCH = 200


def finish(store: SweepStore, report: SweepReport) -> SweepReport:
    """Apply the run's planned unverifications, or hold them all when there are too many.

    Planned actions of runs that died (no heartbeat for a lease period) are adopted first.
    """
    settings = store.settings
    if store.dry_run:
        if report.planned > settings.max_unverify:
            report.held, report.breaker_tripped = report.planned, True
        else:
            report.unverified = report.planned
        return report
    session, H, run_id = store.session, store.H, store.run_id
    now = utcnow()
    session.execute(
        sa.update(H)
        .where(
            H.c.resolution == PLANNED,
            H.c.run_id != run_id,
            H.c.held_at < now - settings.sweep_lease,
        )
        .values(run_id=run_id, held_at=now)
    )
    session.commit()
    count = int(
        session.scalar(
            sa.select(sa.func.count())
            .select_from(H)
            .where(H.c.run_id == run_id, H.c.resolution == PLANNED)
        )
        or 0
    )
    if count > settings.max_unverify:
        _hold_all(store, report, count)
    elif count:
        _apply_planned(store, report)
    return report


def _hold_all(store: SweepStore, report: SweepReport, count: int) -> None:
    guard, H = store.guard, store.H
    log.warning(
        "circuit breaker: this run would unverify %d addresses (more than "
        "DOMAINGUARD_MAX_UNVERIFY = %d); all are held for review",
        count,
        store.settings.max_unverify,
    )
    EmailAddress = guard.models.EmailAddress
    with transaction(guard.db, guard.models) as tx:
        rows = update_returning(
            store.session,
            store.dialect,
            H,
            H.c.id,
            [H.c.run_id == store.run_id, H.c.resolution == PLANNED],
            {"resolution": None},
            [H.c.id, H.c.address_id, H.c.domain, H.c.reason],
        )
        # All of the run's planned actions (many, when the breaker trips): chunked lookups.
        by_id = {
            a.id: a
            for chunk in in_chunks([r[1] for r in rows])
            for a in store.session.scalars(
                sa.select(EmailAddress).where(EmailAddress.id.in_(chunk))
            )
        }
        for held_id, address_id, domain, reason in rows:
            tx.record(
                EventKind.UNVERIFY_HELD,
                actor="sweep",
                address=by_id.get(address_id),
                signal=signals.unverify_held,
                held_action=held_id,
                domain=domain,
                reason=UnverifyReason(reason).value,
                run=store.run_id,
            )
    report.held += len(rows)
    report.breaker_tripped = True


def _apply_planned(store: SweepStore, report: SweepReport) -> None:
    """Apply the run's planned actions, :data:`APPLY_BATCH` per transaction, each statement
    for the whole batch."""
    guard, H, run_id, session = store.guard, store.H, store.run_id, store.session
    pick = (
        sa.select(H.c.id)
        .where(H.c.run_id == run_id, H.c.resolution == PLANNED)
        .order_by(H.c.id)
        .limit(APPLY_BATCH)
    )
    while True:
        notices: list[Notice] = []
        with transaction(guard.db, guard.models) as tx:
            # Taking the action rows first (planned -> applied, in one statement) makes each
            # transition happen once, whatever other run (adopting orphans) looks at them: the
            # statement locks them and checks run and state again. They are this run's own, so
            # it waits for a lock rather than skipping: on MariaDB another run's heartbeat
            # (an UPDATE by run_id) can hold next-key locks on them for a moment, and SKIP
            # LOCKED then left every planned action of this run unapplied.
            taken = update_returning(
                session,
                store.dialect,
                H,
                H.c.id,
                [
                    H.c.id.in_(list(session.scalars(pick))),
                    H.c.run_id == run_id,
                    H.c.resolution == PLANNED,
                ],
                {"resolution": APPLIED, "resolved_at": utcnow()},
                [H.c.id, H.c.address_id, H.c.domain, H.c.reason, H.c.verdict_reason],
            )
            if not taken:
                return
            addresses = lock_addresses(guard, [row[1] for row in taken])
            obsolete: list[int] = []
            for held_id, address_id, domain, reason, verdict_reason in sorted(taken):
                notice = unverify_for(
                    tx,
                    addresses.get(address_id),
                    held_id=held_id,
                    domain=domain,
                    reason=reason,
                    verdict_reason=verdict_reason,
                    actor="sweep",
                    run=run_id,
                )
                if notice is None:
                    obsolete.append(held_id)
                else:
                    notices.append(notice)
            if obsolete:
                session.execute(
                    sa.update(H).where(H.c.id.in_(obsolete)).values(resolution=OBSOLETE)
                )
            notice_jobs = queue_notices(guard, tx, notices, actor="sweep")
        session.expire_all()
        report.unverified += len(notices)
        report.notices_sent += deliver(guard, notice_jobs, report)
