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
``dns_*`` (with ``DOMAINGUARD_DNS_EVIDENCE``)
    The last successful DNS sighting (:class:`~.dnsverdict.DnsState`): NS, MX and DS, or no
    delegation, with ``dns_lapse_seen_at`` set when the domain is first seen undelegated and
    cleared when it is seen delegated again. A check that did not consult the DNS after a
    successful status lookup forgets it (the DNS is not used for that domain any more).
a failed or ``unknown`` lookup
    Changes nothing: not the facts, not the memory, not the verdict.

Verdicts belong to addresses: :func:`verdict_for` judges the domain's stored facts against
one address's own proof date and DNS baseline, so a newer address on the domain (perhaps
the attacker's own) never makes an older one's verdict kinder. An address's verdict is the
more severe of its status verdict and its DNS verdict. The row's ``verdict`` column is a
summary for reports and scheduling: the most severe verdict among its verified addresses.

Baselines are written here too, where they are "first seen": a successful DNS sighting of a
delegated domain becomes the baseline of each verified address on it that has none.

Long because it is the one writer of a domain's state: splitting it would make two writers again,
the root of the bugs issue 11 fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import signals
from .addresses.store import ensure_domains
from .dnsverdict import BASELINE_COLUMNS, FIRST_SEEN, Baseline, DnsState, advance_dns, judge_dns
from .journal import EventKind, transaction
from .status.observation import DnsFingerprint, Observation
from .timeutil import as_utc, utcnow
from .verdict import (
    SEVERITY,
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
    from .context import Guard

__all__ = [
    "DomainState",
    "advance",
    "depends_on_proof",
    "earliest_proofs",
    "has_reset_evidence",
    "is_informative",
    "load_state",
    "most_severe",
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
    dns: DnsState | None = None

    @classmethod
    def of(cls, row: Any) -> DomainState:
        """The state of a Domain row (a mapped object or a result row with its columns)."""
        dns = None
        dns_checked_at = _aware(row.dns_checked_at)
        if dns_checked_at is not None:
            delegated = bool(row.dns_delegated)
            dns = DnsState(
                checked_at=dns_checked_at,
                delegated=delegated,
                fingerprint=DnsFingerprint.from_columns(row.dns_ns, row.dns_mx, row.dns_ds)
                if delegated
                else None,
                lapse_seen_at=_aware(row.dns_lapse_seen_at),
            )
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
            dns=dns,
        )


#: The Domain columns of the last DNS sighting.
DNS_COLUMNS = (
    "dns_checked_at",
    "dns_delegated",
    "dns_ns",
    "dns_mx",
    "dns_ds",
    "dns_lapse_seen_at",
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
    *DNS_COLUMNS,
)


def is_informative(obs: Observation) -> bool:
    """Whether ``obs`` tells anything: a conclusive status answer or a successful DNS sighting."""
    return is_conclusive(obs) or (obs.dns is not None and obs.dns.ok)


def evidence_source_ok(obs: Observation) -> bool:
    """Whether the lookup that speaks for this domain worked: the DNS where it is the domain's
    evidence (no status server covers its TLD), the status source everywhere else."""
    if obs.dns is not None and obs.dns.evidence:
        return obs.dns.ok
    return is_conclusive(obs)


def advance(state: DomainState, obs: Observation, now: datetime) -> DomainState:
    """The state after a lookup made at ``now``. Pure.

    A successful observation replaces the facts and moves the memories by the rules in the
    module docstring; an inconclusive one (failed, ``unknown``) changes nothing. The status
    part and the DNS part (``obs.dns``) move independently.
    """
    if obs.dns is not None and obs.dns.ok:
        state = replace(state, dns=advance_dns(state.dns, obs.dns, now), verdict=None)
    elif obs.dns is None and is_conclusive(obs) and state.dns is not None:
        state = replace(state, dns=None, verdict=None)
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
    return (
        state.changed_hands_at is not None
        or state.dns is not None  # each address has its own DNS baseline
        or (obs is not None and (obs.registered_at is not None or obs.transferred_at is not None))
    )


def most_severe(verdicts: list[Verdict]) -> Verdict:
    """The gravest of ``verdicts`` (the first of equals); :data:`~.verdict.SEVERITY`."""
    return max(verdicts, key=lambda verdict: SEVERITY[verdict.kind])


def verdict_for(
    state: DomainState,
    verified_at: datetime | None,
    now: datetime,
    policy: Policy,
    baseline: Baseline | None = None,
) -> Verdict:
    """The verdict for an address proved at ``verified_at`` (``None``: unknown proof, judged
    most severely) with DNS ``baseline`` (``None``: none yet, the current DNS is its first
    sighting), from the stored facts; ``UNKNOWN`` when never checked. Pure.

    The more severe of the status verdict and, when the DNS was read, the DNS verdict
    (:func:`~.dnsverdict.judge_dns`). Never kinder than a stored ``released`` or ``expired``
    summary (those do not depend on the address), even where the kept facts would not
    reproduce it (statuses are truncated to fit their column).
    """
    if state.verdict in _ADDRESS_FREE:
        verdict = _judge_stored(state, verified_at, now, policy, baseline)
        if verdict.unsafe:
            return verdict
        kind = VerdictKind(state.verdict)
        reason = f"The last check found {state.name} {kind.value}."
        return Verdict(kind=kind, unsafe=True, until=None, reason=reason)
    return _judge_stored(state, verified_at, now, policy, baseline)


def _judge_stored(
    state: DomainState,
    verified_at: datetime | None,
    now: datetime,
    policy: Policy,
    baseline: Baseline | None,
) -> Verdict:
    status = _judge_status(state, verified_at, now, policy)
    if state.dns is None:
        return status
    dns = judge_dns(state.dns, domain=state.name, now=now, baseline=baseline, policy=policy)
    return most_severe([status, dns])


def _judge_status(
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
    baseline: Baseline | None = None,
    dns_evidence: bool = False,
) -> bool:
    """Whether the stored state alone is evidence enough for a reset to an address proved at
    ``verified_at`` with DNS ``baseline``: a successful check younger than ``within``, the
    address's verdict ``OK``, and no lapse remembered.

    The check is the status source's, or with ``dns_evidence`` (no status server covers the
    domain's TLD) the DNS's. Any other stored verdict (in grace, expiring soon) proves nothing
    about *now*: an attacker can make the site store such a check while a domain lapses,
    then buy it. Nor does an ``OK`` while a lapse is unresolved: that is when names are sold.
    """
    if verdict_for(state, verified_at, now, policy, baseline).kind is not VerdictKind.OK:
        return False
    if state.lapse_seen_at is not None:
        return False
    if state.checked_at is not None and now - state.checked_at < within:
        return True
    dns = state.dns
    return dns_evidence and dns is not None and dns.delegated and now - dns.checked_at < within


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
        **dns_row_values(state),
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


def dns_row_values(state: DomainState) -> dict[str, Any]:
    """The Domain's ``dns_*`` columns for ``state`` (all ``None`` without a DNS sighting)."""
    dns = state.dns
    if dns is None:
        return dict.fromkeys(DNS_COLUMNS)
    ns, mx, ds = dns.fingerprint.columns() if dns.fingerprint is not None else (None,) * 3
    return {
        "dns_checked_at": dns.checked_at,
        "dns_delegated": dns.delegated,
        "dns_ns": ns,
        "dns_mx": mx,
        "dns_ds": ds,
        "dns_lapse_seen_at": dns.lapse_seen_at,
    }


# -- the database side ---------------------------------------------------------------------


def _table(guard: Guard) -> sa.Table:
    table: sa.Table = guard.models.Domain.__table__  # type: ignore[attr-defined]
    return table


def load_state(guard: Guard, name: str, *, lock: bool = False) -> DomainState:
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


def earliest_proofs(guard: Guard, names: list[str]) -> dict[str, datetime]:
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


def _summary(guard: Guard, state: DomainState, now: datetime, policy: Policy) -> Verdict:
    """The row's summary: the most severe verdict among the domain's verified addresses, that
    is the earliest proof (a verdict only gets harsher the earlier the proof) with each
    distinct DNS baseline they hold (or none); the proof-free one without any."""
    earliest = earliest_proofs(guard, [state.name]).get(state.name)
    if state.dns is None:
        return verdict_for(state, earliest, now, policy)
    EmailAddress = guard.models.EmailAddress
    rows = guard.db.session.execute(
        sa.select(
            EmailAddress.dns_baseline_ns,
            EmailAddress.dns_baseline_mx,
            sa.func.min(EmailAddress.dns_baseline_at),
        )
        .where(EmailAddress.registrable == state.name, EmailAddress.verified_at.is_not(None))
        .group_by(EmailAddress.dns_baseline_ns, EmailAddress.dns_baseline_mx)
    ).all()
    baselines: list[Baseline | None] = [
        None
        if recorded_at is None
        else Baseline(DnsFingerprint.from_columns(ns, mx, None), as_utc(recorded_at))
        for ns, mx, recorded_at in rows
    ]
    return most_severe([verdict_for(state, earliest, now, policy, b) for b in baselines or [None]])


def first_seen_baseline(obs: Observation, now: datetime) -> Baseline | None:
    """The "first seen" baseline a successful DNS sighting of a delegated domain gives the
    verified addresses on it that have none; ``None`` when ``obs`` is no such sighting."""
    sighting = obs.dns
    if sighting is None or not sighting.ok or not sighting.delegated:
        return None
    if sighting.fingerprint is None:
        return None
    return Baseline(sighting.fingerprint, now, FIRST_SEEN)


def first_seen_update(guard: Guard) -> sa.Update:
    """The UPDATE that records a domain's first-seen baseline on each verified address of it
    without one, for many domains at once: execute it with :func:`first_seen_params` rows.
    A baseline once recorded is never replaced here: only the address's own re-verification
    does that."""
    A: sa.Table = guard.models.EmailAddress.__table__  # type: ignore[attr-defined]
    return (
        sa.update(A)
        .where(
            A.c.registrable == sa.bindparam("b_name"),
            A.c.verified_at.is_not(None),
            A.c.dns_baseline_at.is_(None),
        )
        .values({column: sa.bindparam(f"v_{column}") for column in BASELINE_COLUMNS})
    )


def first_seen_params(name: str, baseline: Baseline) -> dict[str, Any]:
    """One row of :func:`first_seen_update`: ``name``'s addresses get ``baseline``."""
    values = Baseline.columns(baseline)
    return {"b_name": name, **{f"v_{column}": values[column] for column in BASELINE_COLUMNS}}


def first_seen_baselines(
    guard: Guard, name: str, obs: Observation, now: datetime
) -> sa.Update | None:
    """The UPDATE that makes a successful DNS sighting of a delegated domain the "first seen"
    baseline of each verified address on ``name`` without one (:func:`first_seen_baseline`);
    ``None`` when it is no such sighting."""
    baseline = first_seen_baseline(obs, now)
    if baseline is None:
        return None
    EmailAddress = guard.models.EmailAddress
    return (
        sa.update(EmailAddress)
        .where(
            EmailAddress.registrable == name,
            EmailAddress.verified_at.is_not(None),
            EmailAddress.dns_baseline_at.is_(None),
        )
        .values(Baseline.columns(baseline))
        .execution_options(synchronize_session=False)
    )


def record(
    guard: Guard,
    name: str,
    obs: Observation,
    *,
    actor: str,
    now: datetime | None = None,
) -> DomainState:
    """Advance and store ``name``'s state after a lookup outside the sweep; one transaction.

    An observation that tells nothing (:func:`is_informative`) writes nothing. A DNS sighting
    becomes the first-seen baseline of the verified addresses without one. An unsafe
    summary pulls the next scheduled check forward to ``DOMAINGUARD_CONFIRM_AFTER`` from now,
    so the sweep's confirmation rule sees a second check soon. A change of the summary
    verdict is journalled and signalled.
    """
    now = now or utcnow()
    settings = guard.settings
    policy = policy_of(settings)
    with transaction(guard.db, guard.models) as tx:
        ensure_domains(guard, [name])
        state = load_state(guard, name, lock=True)
        if not is_informative(obs):
            return state
        new = advance(state, obs, now)
        first_seen = first_seen_baselines(guard, name, obs, now)
        if first_seen is not None:
            guard.db.session.execute(first_seen)
        summary = _summary(guard, new, now, policy)
        values = row_values(new, summary, now)
        if evidence_source_ok(obs):
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
