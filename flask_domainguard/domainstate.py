"""The domain-state engine: the one path from an observation to a Domain row and to a verdict
for each address.

Every writer of a Domain row's observation, memory and verdict columns comes through here:
the sweep (in batches, :func:`advance` and :func:`row_values`), the live check at reset and
verification time, ``--apply-held`` (:func:`record`), and ``flask domainguard check`` (which
judges the same way and writes nothing). The rules, in one place:

``lapse_seen_at``
    Set when a lapse signal is first seen. It survives until the domain is seen healthy
    with a future expiration date outside the auto-renew period (where Verisign's date
    proves nothing) and no transfer or (re-)registration after the lapse. While it is set,
    a stored check is no evidence for a reset.
``changed_hands_at``
    Set when a transfer or (re-)registration dated after a seen lapse is observed, by
    whichever path sees it first, or when a name seen released or past restore is seen held
    again with no registration date to tell (sources that give flags only). Never cleared:
    a later answer that no longer shows the lapse (the buyer renewed) must not make the
    change forgettable. Addresses verified before it are ``REREGISTERED`` until they are
    verified again.
a failed or ``unknown`` lookup
    Changes nothing: not the facts, not the memory, not the verdict.

Verdicts belong to addresses: :func:`verdict_for` judges the domain's stored facts against
one address's own proof date, so a newer address on the domain (perhaps the attacker's own)
never makes an older one's verdict kinder. The row's ``verdict`` column is a summary for
reports and scheduling: the verdict of its earliest verified address, the most severe one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import signals
from .addresses import ensure_domains
from .journal import EventKind, transaction
from .status.observation import Observation
from .timeutil import as_utc, utcnow
from .verdict import (
    Policy,
    Verdict,
    VerdictKind,
    is_conclusive,
    is_lapse_signal,
    is_up_for_grabs,
    judge,
    plausible_moment,
    shows_renewal,
)

if TYPE_CHECKING:
    from .config import Settings
    from .extension import DomainGuard

__all__ = [
    "DomainState",
    "advance",
    "depends_on_proof",
    "earliest_proofs",
    "has_reset_evidence",
    "load_state",
    "policy_of",
    "record",
    "row_values",
    "verdict_for",
]

#: The ``statuses`` column holds at most this many characters.
STATUSES_WIDTH = 500


def policy_of(settings: Settings) -> Policy:
    """The lifecycle policy from the app's settings."""
    return Policy(grace=settings.grace, warn_within=settings.warn_within)


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _later(first: datetime | None, second: datetime | None) -> datetime | None:
    if first is None:
        return second
    if second is None:
        return first
    return max(first, second)


@dataclass(frozen=True)
class DomainState:
    """What is known about one registrable domain: the last successful observation, the
    lapse memories and the stored summary verdict.

    :param observation: the last successful observation; ``None`` when never checked.
    :param checked_at: when it was made.
    """

    name: str
    observation: Observation | None = None
    checked_at: datetime | None = None
    lapse_seen_at: datetime | None = None
    changed_hands_at: datetime | None = None
    verdict: str | None = None
    unsafe_since: datetime | None = None

    @classmethod
    def of(cls, row: Any) -> DomainState:
        """The state of a Domain row (a mapped object or a result row with its columns)."""
        checked_at = _aware(row.checked_at)
        observation = None
        if checked_at is not None:
            observation = Observation(
                domain=row.name,
                registered=row.registered,
                statuses=frozenset(s for s in (row.statuses or "").split("|") if s),
                expires_at=_aware(row.expires_at),
                registered_at=_aware(row.registered_at),
                transferred_at=_aware(row.transferred_at),
                source=row.source or "",
            )
        return cls(
            name=row.name,
            observation=observation,
            checked_at=checked_at,
            lapse_seen_at=_aware(row.lapse_seen_at),
            changed_hands_at=_aware(row.changed_hands_at),
            verdict=row.verdict,
            unsafe_since=_aware(row.unsafe_since),
        )


#: The Domain columns :meth:`DomainState.of` reads.
STATE_COLUMNS = (
    "name",
    "registered",
    "statuses",
    "expires_at",
    "registered_at",
    "transferred_at",
    "source",
    "checked_at",
    "lapse_seen_at",
    "changed_hands_at",
    "verdict",
    "unsafe_since",
)


def advance(state: DomainState, obs: Observation, now: datetime) -> DomainState:
    """The state after a lookup made at ``now``. Pure.

    A successful observation replaces the facts and moves the memories by the rules in the
    module docstring; an inconclusive one (failed, ``unknown``) changes nothing.
    """
    if not is_conclusive(obs):
        return state
    lapse = state.lapse_seen_at
    changed = state.changed_hands_at
    moved_after_lapse = False
    if lapse is not None:
        # Judged against the memory *before* this answer: an answer that shows the buyer's
        # renewal and no lapse must not wipe the lapse the sale is measured against.
        for moment in (plausible_moment(obs.transferred_at), plausible_moment(obs.registered_at)):
            if moment is not None and moment > lapse:
                changed = _later(changed, moment)
                moved_after_lapse = True
    if (
        state.observation is not None
        and is_up_for_grabs(state.observation, now)
        and obs.registered
        and not is_up_for_grabs(obs, now)
        and plausible_moment(obs.registered_at) is None
    ):
        # Seen free for anyone to take, now held, and no date to say by whom: a source without
        # dates (Fastly, Domainr) shows a drop-catch exactly so. A registration date, when
        # there is one, decides instead (above: after the lapse, or the same old registration).
        changed = _later(changed, now)
        moved_after_lapse = True
    if is_lapse_signal(obs, now):
        lapse = lapse or now
    elif lapse is not None and not moved_after_lapse and shows_renewal(obs, now):
        lapse = None
    # The stored summary belonged to the old facts: the caller judges the new ones afresh.
    return replace(
        state,
        observation=obs,
        checked_at=now,
        lapse_seen_at=lapse,
        changed_hands_at=changed,
        verdict=None,
    )


def depends_on_proof(state: DomainState) -> bool:
    """Whether addresses on the domain can get different verdicts (by their proof dates)."""
    obs = state.observation
    return state.changed_hands_at is not None or (
        obs is not None and (obs.registered_at is not None or obs.transferred_at is not None)
    )


def verdict_for(
    state: DomainState, verified_at: datetime | None, now: datetime, policy: Policy
) -> Verdict:
    """The verdict for an address proved at ``verified_at`` (``None``: unknown proof, judged
    most severely), from the stored facts; ``UNKNOWN`` when never checked. Pure.

    Never kinder than a stored ``released`` or ``expired`` summary (those do not depend on
    the address), even where the kept facts would not reproduce it (statuses are truncated
    to fit their column).
    """
    if state.verdict in _ADDRESS_FREE:
        verdict = _judge_stored(state, verified_at, now, policy)
        if verdict.unsafe:
            return verdict
        kind = VerdictKind(state.verdict)
        reason = f"The last check found {state.name} {kind.value}."
        return Verdict(kind=kind, unsafe=True, until=None, reason=reason)
    return _judge_stored(state, verified_at, now, policy)


def _judge_stored(
    state: DomainState, verified_at: datetime | None, now: datetime, policy: Policy
) -> Verdict:
    if state.observation is None:
        return Verdict(
            kind=VerdictKind.UNKNOWN,
            unsafe=False,
            until=None,
            reason=f"{state.name} has not been checked successfully yet.",
        )
    return judge(
        state.observation,
        now=now,
        verified_at=verified_at,
        lapse_seen_at=state.lapse_seen_at,
        changed_hands_at=state.changed_hands_at,
        policy=policy,
    )


#: Stored summaries that hold for every address, whatever its proof date.
_ADDRESS_FREE = frozenset({VerdictKind.RELEASED.value, VerdictKind.EXPIRED.value})


def has_reset_evidence(
    state: DomainState,
    verified_at: datetime | None,
    now: datetime,
    *,
    within: timedelta,
    policy: Policy,
) -> bool:
    """Whether the stored state alone is evidence enough for a reset to an address proved at
    ``verified_at``: a successful check younger than ``within`` that judges it ``OK``, with no
    lapse remembered.

    Any other stored verdict (in grace, expiring soon) proves nothing about *now*: an
    attacker can make the site store such a check while a domain lapses, then buy it. Nor
    does an ``OK`` while a lapse is unresolved: that is when names are sold.
    """
    if state.checked_at is None or now - state.checked_at >= within:
        return False
    if state.lapse_seen_at is not None:
        return False
    return verdict_for(state, verified_at, now, policy).kind is VerdictKind.OK


def _statuses_text(statuses: frozenset[str]) -> str:
    kept: list[str] = []
    for status in sorted(statuses):
        if len("|".join([*kept, status])) > STATUSES_WIDTH:
            break
        kept.append(status)
    return "|".join(kept)


def row_values(state: DomainState, summary: Verdict, now: datetime) -> dict[str, Any]:
    """The Domain columns this engine owns, for ``state`` with its summary verdict.

    ``unsafe_since`` keeps the first moment of the current run of unsafe summaries (the
    sweep's confirmation rule counts from it) and is cleared by a safe one.
    """
    obs = state.observation
    values: dict[str, Any] = {
        "verdict": summary.kind.value,
        "verdict_until": summary.until,
        "verdict_reason": summary.reason,
        "unsafe_since": (state.unsafe_since or now) if summary.unsafe else None,
        "lapse_seen_at": state.lapse_seen_at,
        "changed_hands_at": state.changed_hands_at,
    }
    if obs is not None:
        values.update(
            registered=obs.registered,
            statuses=_statuses_text(obs.statuses),
            expires_at=_aware(obs.expires_at),
            registered_at=_aware(obs.registered_at),
            transferred_at=_aware(obs.transferred_at),
            source=(obs.source or "")[:32] or None,
            checked_at=state.checked_at,
        )
    return values


# -- the database side ---------------------------------------------------------------------


def _table(guard: DomainGuard) -> sa.Table:
    table: sa.Table = guard.models.Domain.__table__  # type: ignore[attr-defined]
    return table


def load_state(guard: DomainGuard, name: str, *, lock: bool = False) -> DomainState:
    """The stored state of ``name`` (an empty state when there is no row).

    :param lock: take the row's write lock first, in the current transaction, so no other
        writer's change can fall between this read and the caller's write.
    """
    D = _table(guard)
    session = guard.db.session
    if lock:
        # A no-op UPDATE locks the row on PostgreSQL and takes SQLite's write lock, which a
        # plain SELECT (even FOR UPDATE, ignored by SQLite) would not.
        session.execute(sa.update(D).where(D.c.name == name).values(name=D.c.name))
    row = session.execute(
        sa.select(*(D.c[column] for column in STATE_COLUMNS)).where(D.c.name == name)
    ).first()
    return DomainState(name=name) if row is None else DomainState.of(row)


def earliest_proofs(guard: DomainGuard, names: list[str]) -> dict[str, datetime]:
    """The earliest ``verified_at`` of the verified addresses on each of ``names``."""
    if not names:
        return {}
    EmailAddress = guard.models.EmailAddress
    rows = guard.db.session.execute(
        sa.select(EmailAddress.registrable, sa.func.min(EmailAddress.verified_at))
        .where(EmailAddress.registrable.in_(names), EmailAddress.verified_at.is_not(None))
        .group_by(EmailAddress.registrable)
    )
    return {name: as_utc(moment) for name, moment in rows if moment is not None}


def record(
    guard: DomainGuard,
    name: str,
    obs: Observation,
    *,
    actor: str,
    now: datetime | None = None,
) -> DomainState:
    """Advance and store ``name``'s state after a lookup outside the sweep; one transaction.

    An inconclusive observation writes nothing. An unsafe summary pulls the next scheduled
    check forward to ``DOMAINGUARD_CONFIRM_AFTER`` from now, so the sweep's confirmation rule
    sees a second check soon. A change of the summary verdict is journalled and signalled.
    """
    now = now or utcnow()
    settings = guard.settings
    policy = policy_of(settings)
    with transaction(guard.db, guard.models) as tx:
        ensure_domains(guard, [name])
        state = load_state(guard, name, lock=True)
        if not is_conclusive(obs):
            return state
        new = advance(state, obs, now)
        # The row's summary: its earliest verified address's verdict, the most severe one (a
        # verdict only gets harsher the earlier the proof); the proof-free one without any.
        summary = verdict_for(new, earliest_proofs(guard, [name]).get(name), now, policy)
        values = row_values(new, summary, now)
        values["last_error"] = None
        D = _table(guard)
        if summary.unsafe:
            scheduled = _aware(
                guard.db.session.scalar(sa.select(D.c.next_check_at).where(D.c.name == name))
            )
            confirm_by = now + settings.confirm_after
            if scheduled is None or scheduled > confirm_by:
                values["next_check_at"] = confirm_by
        guard.db.session.execute(sa.update(D).where(D.c.name == name).values(values))
        if state.verdict != summary.kind.value:
            tx.record(
                EventKind.DOMAIN_VERDICT,
                actor=actor,
                signal=signals.domain_verdict_changed,
                domain=name,
                verdict=summary.kind.value,
                previous=state.verdict,
                reason=summary.reason,
            )
        new = replace(new, verdict=summary.kind.value, unsafe_since=values["unsafe_since"])
    guard.db.session.expire_all()
    return new
