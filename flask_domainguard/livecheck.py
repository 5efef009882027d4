"""Live domain checks for the moments that matter: a reset request and an address verification.

The sweep checks every domain on a schedule; a reset cannot wait for it (PyPI's ``ctx`` domain
was re-registered 12 minutes before the reset). :func:`check_domain` looks a domain up with a
short timeout when its last check is stale (or always, when asked), records a successful
observation on the :class:`~.models.Domain` row so the sweep builds on it, and judges the
result for one address. It never unverifies: that is the sweep's job, with its confirmation
rule; refusing a reset needs no confirmation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import httpx
import sqlalchemy as sa

from . import signals
from .addresses import ensure_domains
from .journal import EventKind, transaction
from .status.observation import Observation
from .timeutil import utcnow
from .verdict import Policy, Verdict, VerdictKind, is_lapse_signal, judge

if TYPE_CHECKING:
    from .extension import DomainGuard
    from .models import Domain

#: The ``statuses`` column holds at most this many characters.
_STATUSES_WIDTH = 500
#: Extra seconds past the backend's own timeout before the lookup is abandoned regardless.
_DEADLINE_SLACK = 1.0


@dataclass(frozen=True)
class DomainCheck:
    """The outcome of :func:`check_domain` for one address.

    :param domain: the registrable domain.
    :param verdict: the verdict for the address's ``verified_at``: from the live observation
        when one succeeded, from the stored state otherwise.
    :param observation: the live observation (successful or failed), ``None`` without lookup.
    :param looked_up: whether a live lookup was made.
    :param failed: whether a live lookup was made and told nothing (the verdict is stored).
    :param trusted: a trusted mail provider: never looked up, always safe.
    :param checked_at: when the domain was last observed successfully.
    """

    domain: str
    verdict: Verdict
    observation: Observation | None
    looked_up: bool
    failed: bool
    trusted: bool
    checked_at: datetime | None


def policy_of(guard: DomainGuard) -> Policy:
    """The lifecycle policy from the app's settings."""
    settings = guard.settings
    return Policy(grace=settings.grace, warn_within=settings.warn_within)


def stored_observation(row: Domain) -> Observation:
    """The last successful observation kept on a Domain row (``registered=None`` if none)."""
    if row.checked_at is None:
        return Observation.failed(row.name, "never checked", source=row.source or "")
    return Observation(
        domain=row.name,
        registered=row.registered,
        statuses=row.status_set,
        expires_at=row.expires_at,
        registered_at=row.registered_at,
        transferred_at=row.transferred_at,
        source=row.source or "",
    )


def stored_verdict(
    guard: DomainGuard, row: Domain, *, verified_at: datetime | None, now: datetime
) -> Verdict:
    """Judge the stored facts for one address, never kinder than the sweep's stored verdict.

    The facts are judged again because ``REREGISTERED`` depends on the address's
    ``verified_at`` and ``IN_GRACE`` turns ``EXPIRED`` with time alone. A stored ``released``
    or ``expired`` verdict holds even if the kept facts would not reproduce it.
    """
    verdict = judge(
        stored_observation(row),
        now=now,
        verified_at=verified_at,
        lapse_seen_at=row.lapse_seen_at,
        policy=policy_of(guard),
    )
    address_free = {VerdictKind.RELEASED.value, VerdictKind.EXPIRED.value}
    if not verdict.unsafe and row.verdict in address_free:
        kind = VerdictKind(row.verdict)
        reason = row.verdict_reason or f"The last check found {row.name} {kind.value}."
        return Verdict(kind=kind, unsafe=True, until=None, reason=reason)
    return verdict


def lookup(guard: DomainGuard, name: str, *, timeout: float) -> Observation:
    """Look ``name`` up through the app's status backend; never raises, never outlasts the timeout.

    The deadline is enforced here too, so a host's own backend that ignores ``timeout``
    cannot hold a reset request hostage.
    """
    try:
        backend = guard.status_backend()
    except Exception as exc:
        return Observation.failed(
            name, f"status backend unavailable ({type(exc).__name__})", source="none"
        )
    source = str(getattr(backend, "name", "unknown"))

    async def run() -> Observation:
        async with httpx.AsyncClient() as client:
            return await asyncio.wait_for(
                backend.observe(name, client=client, timeout=timeout),
                timeout + _DEADLINE_SLACK,
            )

    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run())
        # asyncio.run is not allowed in a thread that already runs a loop.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, run()).result()
    except Exception as exc:
        # The type only: messages can carry URLs with API credentials in their query.
        return Observation.failed(name, f"lookup failed ({type(exc).__name__})", source=source)


def _statuses_text(statuses: frozenset[str]) -> str:
    kept: list[str] = []
    for status in sorted(statuses):
        if len("|".join([*kept, status])) > _STATUSES_WIDTH:
            break
        kept.append(status)
    return "|".join(kept)


def _earliest_verified(guard: DomainGuard, name: str) -> datetime | None:
    EmailAddress = guard.models.EmailAddress
    value: datetime | None = guard.db.session.scalar(
        sa.select(sa.func.min(EmailAddress.verified_at)).where(EmailAddress.registrable == name)
    )
    return value


def record_observation(
    guard: DomainGuard, name: str, obs: Observation, *, actor: str, now: datetime | None = None
) -> Verdict:
    """Store a successful observation on the Domain row and journal a change of verdict.

    The row's verdict is the domain's: judged for its earliest verified address, the one a
    re-registration endangers first. ``unsafe_since`` and ``lapse_seen_at`` follow the
    observation so the sweep's confirmation rule counts this check; an unsafe verdict pulls
    the next scheduled check forward to ``DOMAINGUARD_CONFIRM_AFTER`` from now.
    """
    now = now or utcnow()
    settings = guard.settings
    with transaction(guard.db, guard.models) as tx:
        ensure_domains(guard, [name])
        row = guard.db.session.get(guard.models.Domain, name)
        if row is None:  # pragma: no cover - ensure_domains just made it
            raise RuntimeError(f"Domain row {name} vanished")
        verdict = judge(
            obs,
            now=now,
            verified_at=_earliest_verified(guard, name),
            lapse_seen_at=row.lapse_seen_at,
            policy=policy_of(guard),
        )
        previous = row.verdict
        row.registered = obs.registered
        row.statuses = _statuses_text(obs.statuses)
        row.expires_at = obs.expires_at
        row.registered_at = obs.registered_at
        row.transferred_at = obs.transferred_at
        row.source = obs.source[:32] or None
        row.checked_at = now
        row.last_error = None
        row.verdict = verdict.kind.value
        row.verdict_until = verdict.until
        row.verdict_reason = verdict.reason
        if is_lapse_signal(obs, now):
            row.lapse_seen_at = row.lapse_seen_at or now
        else:
            row.lapse_seen_at = None
        if verdict.unsafe:
            row.unsafe_since = row.unsafe_since or now
            confirm_by = now + settings.confirm_after
            if row.next_check_at is None or row.next_check_at > confirm_by:
                row.next_check_at = confirm_by
        else:
            row.unsafe_since = None
        if previous != verdict.kind.value:
            tx.record(
                EventKind.DOMAIN_VERDICT,
                actor=actor,
                signal=signals.domain_verdict_changed,
                domain=name,
                verdict=verdict.kind.value,
                previous=previous,
                reason=verdict.reason,
            )
    return verdict


def check_domain(
    guard: DomainGuard,
    name: str,
    *,
    verified_at: datetime | None,
    force: bool = False,
    actor: str = "system",
) -> DomainCheck:
    """Judge ``name`` for an address verified at ``verified_at``, looking it up live if due.

    A lookup is due when the last successful check is older than
    ``DOMAINGUARD_RESET_LIVE_CHECK_AFTER`` (or missing), unless ``DOMAINGUARD_RESET_LIVE_CHECK``
    is ``"off"``; ``force`` (verification, the operator's ``reverify``) always looks up. It is
    bounded by
    ``DOMAINGUARD_RESET_LIVE_TIMEOUT``. Trusted provider domains are never looked up.
    A failed lookup leaves the row untouched and the verdict comes from the stored state;
    what to make of the failure (``"required"`` refuses) is the caller's decision.
    """
    settings = guard.settings
    now = utcnow()
    if name in settings.trusted_domains:
        verdict = Verdict(
            kind=VerdictKind.OK,
            unsafe=False,
            until=None,
            reason=f"{name} is a trusted mail provider (DOMAINGUARD_TRUSTED_DOMAINS).",
        )
        return DomainCheck(name, verdict, None, False, False, True, None)

    Domain = guard.models.Domain
    row = guard.db.session.get(Domain, name)
    if row is None:
        ensure_domains(guard, [name])
        guard.db.session.commit()
        row = guard.db.session.get(Domain, name)
        if row is None:  # pragma: no cover - ensure_domains just made it
            raise RuntimeError(f"Domain row {name} vanished")
    checked_at = row.checked_at
    stale = checked_at is None or now - checked_at >= settings.reset_live_check_after
    if not force and (settings.reset_live_check == "off" or not stale):
        verdict = stored_verdict(guard, row, verified_at=verified_at, now=now)
        return DomainCheck(name, verdict, None, False, False, False, checked_at)

    lapse_seen_at = row.lapse_seen_at  # the judgement uses the state before this lookup
    obs = lookup(guard, name, timeout=settings.reset_live_timeout)
    live = judge(
        obs, now=now, verified_at=verified_at, lapse_seen_at=lapse_seen_at, policy=policy_of(guard)
    )
    if live.kind is VerdictKind.UNKNOWN:
        verdict = stored_verdict(guard, row, verified_at=verified_at, now=now)
        return DomainCheck(name, verdict, obs, True, True, False, checked_at)
    record_observation(guard, name, obs, actor=actor, now=now)
    return DomainCheck(name, live, obs, True, False, False, now)
