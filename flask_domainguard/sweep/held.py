"""Unverifications the circuit breaker held for review: ``flask domainguard sweep
--apply-held`` (:func:`apply_held`) and ``--dismiss-held`` (:func:`dismiss_held`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..dnsverdict import Baseline
from ..domainstate import is_informative, policy_of, record, verdict_for
from ..journal import EventKind, transaction
from ..timeutil import utcnow
from .engine import Sweep
from .notices import Notice, deliver, lock_addresses, queue_notices, unverify_for
from .report import SweepReport
from .store import APPLIED, DISMISSED, OBSOLETE, REASONS, table_of

if TYPE_CHECKING:
    from ..context import Guard

__all__ = ["HeldOutcome", "apply_held", "dismiss_held"]


@dataclass
class HeldOutcome:
    """What ``--apply-held`` or ``--dismiss-held`` did."""

    applied: int = 0
    dismissed: int = 0
    obsolete: int = 0
    still_held: int = 0
    errors: int = 0
    notices_sent: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _held_query(guard: Guard) -> sa.Select[Any]:
    HeldAction = guard.models.HeldAction
    return (
        sa.select(HeldAction)
        .where(HeldAction.resolution.is_(None), HeldAction.resolved_at.is_(None))
        .order_by(HeldAction.id)
    )


def apply_held(
    guard: Guard, *, backend_name: str | None = None, actor: str = "admin:cli"
) -> HeldOutcome:
    """Apply every held action whose domain a fresh lookup still finds unsafe for it.

    Each domain is looked up once; a successful answer is recorded through
    :mod:`..domainstate` like any other check, and each action's address is judged by its own
    proof date. An action whose address is gone, unverified already, or now judged safe
    becomes ``obsolete``; one whose lookup fails stays held.
    """
    db, settings = guard.db, guard.settings
    policy = policy_of(settings)
    outcome = HeldOutcome()
    actions = list(db.session.scalars(_held_query(guard)))
    if not actions:
        return outcome
    sweep = Sweep(guard, backend_name=backend_name)
    try:
        observations = sweep.lookup_batch({a.domain for a in actions})
    finally:
        sweep.close()
    now = utcnow()
    states = {
        name: record(guard, name, obs, actor=actor, now=now)
        for name, obs in observations.items()
        if is_informative(obs)
    }
    EmailAddress = guard.models.EmailAddress
    report = SweepReport()
    notices: list[Notice] = []
    with transaction(db, guard.models) as tx:
        for action in list(db.session.scalars(_held_query(guard))):
            state = states.get(action.domain)
            if state is None:
                outcome.still_held += 1
                outcome.errors += 1
                continue
            address = db.session.get(EmailAddress, action.address_id)
            verified_at = address.verified_at if address is not None else None
            baseline = Baseline.of(address) if address is not None else None
            verdict = verdict_for(state, verified_at, now, policy, baseline)
            action.resolved_at = now
            if address is None or verified_at is None or not verdict.unsafe:
                action.resolution = OBSOLETE
                outcome.obsolete += 1
                why = "no longer verified" if verified_at is None else verdict.reason
                tx.record(
                    EventKind.HELD_DISMISSED,
                    actor=actor,
                    user_id=address.user_id if address is not None else None,
                    address=address,
                    held_action=action.id,
                    resolution=OBSOLETE,
                    why=why,
                )
                continue
            # The fresh verdict may name another reason (released, then re-registered).
            action.reason = REASONS[verdict.kind]
            action.verdict_reason = verdict.reason
            action.resolution = APPLIED
            notice = unverify_for(
                tx,
                lock_addresses(guard, [action.address_id]).get(action.address_id),
                held_id=action.id,
                domain=action.domain,
                reason=action.reason,
                verdict_reason=action.verdict_reason,
                actor=actor,
            )
            if notice is not None:
                notices.append(notice)
                outcome.applied += 1
            tx.record(EventKind.HELD_APPLIED, actor=actor, address=address, held_action=action.id)
        notice_jobs = queue_notices(guard, tx, notices, actor="sweep")
    outcome.notices_sent = deliver(guard, notice_jobs, report)
    outcome.errors += report.errors
    return outcome


def dismiss_held(guard: Guard, *, actor: str = "admin:cli") -> HeldOutcome:
    """Dismiss every held action. Their domains' ``unsafe_since`` is cleared, so acting on
    them again takes two new unsafe checks ``DOMAINGUARD_CONFIRM_AFTER`` apart."""
    db = guard.db
    outcome = HeldOutcome()
    EmailAddress, Domain = guard.models.EmailAddress, guard.models.Domain
    now = utcnow()
    with transaction(db, guard.models) as tx:
        actions = list(db.session.scalars(_held_query(guard)))
        for action in actions:
            action.resolution = DISMISSED
            action.resolved_at = now
            address = db.session.get(EmailAddress, action.address_id)
            tx.record(
                EventKind.HELD_DISMISSED,
                actor=actor,
                user_id=address.user_id if address is not None else None,
                address=address if address is not None else None,
                held_action=action.id,
                domain=action.domain,
                resolution=DISMISSED,
            )
        names = sorted({a.domain for a in actions})
        if names:
            db.session.execute(
                sa.update(table_of(Domain))
                .where(table_of(Domain).c.name.in_(names))
                .values(unsafe_since=None)
            )
        outcome.dismissed = len(actions)
    return outcome
