"""The sweep's side of its mail: which users get an expiry warning, unverifying an address
with the notice it owes its owner, and delivering both after the batch commits.

The mail itself (its job kinds, payloads, recipients and templates) is
:mod:`flask_domainguard.notices`, beside the job table that runs it; this module decides
what to queue, in the sweep's transactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..addresses.store import unverify
from ..jobs import deliver_now
from ..models import UnverifyReason
from ..notices import NoticeMail, WarningMail, queue_expiry_warnings, queue_unverify_notices
from ..verdict import Verdict, VerdictKind
from .store import AddressRow, dialect_of

if TYPE_CHECKING:
    from ..context import Guard
    from ..journal import Transaction
    from .report import SweepReport
    from .store import SweepStore

__all__ = [
    "ExpiryWarning",
    "Notice",
    "deliver",
    "lock_addresses",
    "queue_notices",
    "queue_warnings",
    "unverify_for",
    "warnings_for",
]

#: Verdicts that warn the owner before the domain lapses.
WARN_KINDS = frozenset({VerdictKind.EXPIRING_SOON, VerdictKind.IN_GRACE})


@dataclass
class ExpiryWarning:
    """One expiry warning to one user about one domain, for their ``rows`` on it."""

    user_id: Any
    domain: str
    kind: VerdictKind
    until: datetime
    reason: str
    rows: list[AddressRow]


@dataclass
class Notice:
    """One unverified address its owner is told about (at their other safe addresses)."""

    user_id: Any
    exclude_id: int
    address: str
    domain: str
    reason: UnverifyReason
    verdict_reason: str


def warnings_for(domain: str, judged: list[tuple[AddressRow, Verdict]]) -> list[ExpiryWarning]:
    """The warnings a domain's judged addresses call for: one per user and expiry date."""
    by_user: dict[Any, ExpiryWarning] = {}
    for row, verdict in judged:
        if verdict.kind not in WARN_KINDS or verdict.until is None:
            continue
        if row.expiry_warned_for == verdict.until:
            continue  # one warning per expiry date
        warning = by_user.get(row.user_id)
        if warning is None:
            warning = by_user[row.user_id] = ExpiryWarning(
                row.user_id, domain, verdict.kind, verdict.until, verdict.reason, []
            )
        warning.rows.append(row)
    return list(by_user.values())


def queue_warnings(store: SweepStore, tx: Transaction, warnings: list[ExpiryWarning]) -> list[int]:
    """Mark the addresses warned, queue the warnings and journal them, all in the batch's
    transaction: a crash after its commit loses no warning and no record of one."""
    store.mark_warned([(row.id, w.until) for w in warnings for row in w.rows])
    mails = [
        WarningMail(
            w.user_id, w.domain, w.kind.value, w.until, w.reason, [r.address for r in w.rows]
        )
        for w in warnings
    ]
    return queue_expiry_warnings(store.guard, tx, mails)


def lock_addresses(guard: Guard, ids: list[int]) -> dict[int, Any]:
    """The stored addresses with ``ids``, locked for this transaction, in one query."""
    if not ids:
        return {}
    EmailAddress = guard.models.EmailAddress
    query = sa.select(EmailAddress).where(EmailAddress.id.in_(ids))
    if dialect_of(guard) != "sqlite":  # SQLite has no row locks (its writer lock serialises)
        query = query.with_for_update()
    return {row.id: row for row in guard.db.session.scalars(query)}


def unverify_for(
    tx: Transaction,
    row: Any,
    *,
    held_id: int,
    domain: str,
    reason: str,
    verdict_reason: str,
    actor: str,
    **details: Any,
) -> Notice | None:
    """Unverify ``row`` (the address of held action ``held_id``) in ``tx``; the notice its
    owner is owed, or ``None`` when it is gone or unverified already."""
    if row is None or row.verified_at is None:
        return None
    why = UnverifyReason(reason)
    unverify(
        tx,
        row,
        why,
        actor=actor,
        domain=domain,
        verdict_reason=verdict_reason,
        held_action=held_id,
        **details,
    )
    return Notice(row.user_id, row.id, row.address, domain, why, verdict_reason)


def queue_notices(guard: Guard, tx: Transaction, notices: list[Notice], *, actor: str) -> list[int]:
    """Queue one notice per user (in ``tx``, with the unverifications) telling their other
    safe addresses which addresses were unverified."""
    by_user: dict[Any, list[Notice]] = {}
    for notice in notices:
        by_user.setdefault(notice.user_id, []).append(notice)
    mails = [
        NoticeMail(
            user_id,
            items[0].exclude_id,
            [
                {
                    "address": n.address,
                    "domain": n.domain,
                    "reason": n.reason.value,
                    "explanation": n.verdict_reason,
                }
                for n in items
            ],
        )
        for user_id, items in by_user.items()
    ]
    return queue_unverify_notices(guard, tx, mails, actor=actor)


def deliver(guard: Guard, job_ids: list[int], report: SweepReport) -> int:
    """Deliver queued mail now, after its commit; a failed one stays queued and is retried.
    Failures count as errors in ``report``; returns how many were delivered."""
    outcome = deliver_now(guard, job_ids)
    report.errors += outcome.failed
    return outcome.done
