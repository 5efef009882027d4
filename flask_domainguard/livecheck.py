"""Live domain checks for the moments that matter: a reset request and an address verification.

The sweep checks every domain on a schedule; a reset cannot wait for it (PyPI's ``ctx`` domain
was re-registered 12 minutes before the reset). :func:`check_domain` decides whether the stored
state is *evidence* enough (a successful check younger than ``DOMAINGUARD_RESET_LIVE_CHECK_AFTER``
that judges the domain ``OK`` for the address) and otherwise looks the domain up with a short
timeout, recording a successful observation through :mod:`.domainstate` so the sweep builds
on it. It never unverifies: that is the sweep's job, with its confirmation rule; refusing a
reset needs no confirmation.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import httpx

from .dnsevidence import EVIDENCE, dns_lookup, observe_with_dns, role_for
from .dnsverdict import Baseline, judge_dns
from .domainstate import (
    DomainState,
    advance,
    evidence_source_ok,
    has_reset_evidence,
    is_informative,
    load_state,
    policy_of,
    record,
    verdict_for,
)
from .status.base import run_sync
from .status.observation import Observation
from .timeutil import utcnow
from .verdict import Policy, Verdict, VerdictKind, is_conclusive, judge

if TYPE_CHECKING:
    from .context import Guard

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
    :param evidence: whether a successful observation shows the domain safe for the address
        now: this live one (any verdict that is not unsafe; where the DNS is the domain's
        evidence, DNS continuous with the address's baseline), or a stored one younger than
        ``DOMAINGUARD_RESET_LIVE_CHECK_AFTER`` that judges it ``OK``. Always true for trusted
        providers.
    """

    domain: str
    verdict: Verdict
    observation: Observation | None
    looked_up: bool
    failed: bool
    trusted: bool
    checked_at: datetime | None
    evidence: bool = False


def lookup(guard: Guard, name: str, *, timeout: float) -> Observation:
    """Look ``name`` up through the app's status backend, with the DNS where
    ``DOMAINGUARD_DNS_EVIDENCE`` gives it a role (:attr:`Observation.dns`); never raises, never
    outlasts the timeout (plus a second's slack, plus ``DOMAINGUARD_DNS_TIMEOUT`` where the
    DNS is asked after the status source).

    A lookup that fails within the first half of ``timeout`` (a 5xx, a refused connection,
    garbage) is tried once more in the time left: with resets refused on a failed lookup, one
    retry turns a source failing a share *p* of lookups into refusals for about *p*² of them.
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

    async def attempt(client: httpx.AsyncClient, budget: float) -> Observation:
        try:
            return await asyncio.wait_for(
                backend.observe(name, client=client, timeout=budget), budget + _DEADLINE_SLACK
            )
        except Exception as exc:
            # The type only: messages can carry URLs with API credentials in their query.
            return Observation.failed(name, f"lookup failed ({type(exc).__name__})", source=source)

    async def status() -> Observation:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with httpx.AsyncClient() as client:
            obs = await attempt(client, timeout)
            left = timeout - (loop.time() - started)
            if not is_conclusive(obs) and left >= timeout / 2:
                obs = await attempt(client, left)
        return obs

    settings = guard.settings
    mode = "off" if name in settings.trusted_domains else settings.dns_evidence
    dns = dns_lookup(settings)

    async def run() -> Observation:
        # The same join as the sweep's; the DNS lookup has its own bound (DNS_TIMEOUT).
        return await observe_with_dns(name, status(), backend=backend, lookup=dns, mode=mode)

    try:
        return run_sync(run())
    except Exception as exc:
        return Observation.failed(name, f"lookup failed ({type(exc).__name__})", source=source)


def check_domain(
    guard: Guard,
    name: str,
    *,
    verified_at: datetime | None,
    baseline: Baseline | None = None,
    force: bool = False,
    actor: str = "system",
) -> DomainCheck:
    """Judge ``name`` for an address verified at ``verified_at`` with DNS ``baseline``
    (``None`` for a proof being made now: the DNS seen now becomes its baseline), looking it
    up live unless the stored state is evidence enough.

    The stored state is reused only when :func:`~.domainstate.has_reset_evidence` holds (a
    recent check that judged the domain ``OK`` for this address) or when
    ``DOMAINGUARD_RESET_LIVE_CHECK`` is ``"off"``; ``force`` (verification, the operator's
    ``reverify``) always looks up. The lookup is bounded by ``DOMAINGUARD_RESET_LIVE_TIMEOUT``.
    Trusted provider domains are never looked up. A failed lookup writes nothing and the
    verdict comes from the stored state; what to make of the missing evidence is the
    caller's decision.
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
        return DomainCheck(name, verdict, None, False, False, True, None, evidence=True)

    policy = policy_of(settings)
    state = load_state(guard, name)
    stored = verdict_for(state, verified_at, now, policy, baseline)
    evidence = has_reset_evidence(
        state,
        verified_at,
        now,
        within=settings.reset_live_check_after,
        policy=policy,
        baseline=baseline,
        dns_evidence=role_for(guard, name) == EVIDENCE,
    )
    if not force and (settings.reset_live_check == "off" or evidence):
        return DomainCheck(name, stored, None, False, False, False, state.checked_at, evidence)

    obs = lookup(guard, name, timeout=settings.reset_live_timeout)
    if not is_informative(obs):
        return DomainCheck(name, stored, obs, True, True, False, state.checked_at, evidence)
    new = record(guard, name, obs, actor=actor, now=now)
    verdict = verdict_for(new, verified_at, now, policy, baseline)
    if not evidence_source_ok(obs):
        # Only the second signal answered (the DNS beside a failed status lookup): it may
        # refuse, but it is no evidence for this domain.
        return DomainCheck(name, verdict, obs, True, True, False, state.checked_at, evidence)
    live = not verdict.unsafe and _dns_continuous(obs, new, name, now, baseline, policy)
    return DomainCheck(name, verdict, obs, True, False, False, now, live)


def _dns_continuous(
    obs: Observation,
    state: DomainState,
    name: str,
    now: datetime,
    baseline: Baseline | None,
    policy: Policy,
) -> bool:
    """Where the DNS is the domain's evidence, whether it shows the domain delegated and
    continuous with the address's baseline (in grace is no evidence here: the DNS says nothing
    about who pays for the name); elsewhere ``True``."""
    if obs.dns is None or not obs.dns.evidence or state.dns is None:
        return True
    dns = judge_dns(state.dns, domain=name, now=now, baseline=baseline, policy=policy)
    return dns.kind is VerdictKind.OK


def live_verdict(
    guard: Guard,
    name: str,
    obs: Observation,
    verified_at: datetime | None,
    baseline: Baseline | None = None,
) -> Verdict:
    """The verdict ``obs`` would give an address proved at ``verified_at`` with DNS
    ``baseline``, with the stored memories, writing nothing (``flask domainguard check``);
    ``UNKNOWN`` when the lookup that speaks for the domain failed."""
    now = utcnow()
    policy = policy_of(guard.settings)
    if not evidence_source_ok(obs):
        if obs.dns is not None and obs.dns.evidence:
            detail = obs.dns.error or "no answer"
            return Verdict(
                kind=VerdictKind.UNKNOWN,
                unsafe=False,
                until=None,
                reason=f"The DNS lookup of {name} failed ({detail}), so nothing is concluded "
                "until it is checked again.",
            )
        return judge(obs, now=now, verified_at=verified_at, policy=policy)
    state = advance(load_state(guard, name), obs, now)
    return verdict_for(state, verified_at, now, policy, baseline)
