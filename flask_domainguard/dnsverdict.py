"""What the DNS says about an address: the pure half of DNS evidence (no I/O, no clock).

The DNS answers for every TLD, and it changes when a domain changes hands: a registry that
drops or holds a name removes its delegation, and a new owner who wants the mail must point
the name's NS or MX records at servers of their own. So each address keeps the fingerprint
its domain had when the address was proved (its *baseline*, :class:`Baseline`), and
:func:`judge_dns` compares the domain's last DNS sighting (:class:`DnsState`) with it:

1. not delegated (NXDOMAIN, no NS records): a lapse signal. ``IN_GRACE`` from the moment it
   was first seen, ``EXPIRED`` once the grace period has run out.
2. NS set *and* MX set both changed, neither sharing a single host with the baseline:
   ``DNS_CHANGED`` (unsafe for this address; an address proved later has its own baseline).
3. otherwise: ``OK``, the DNS is continuous with the proof. Without a baseline (an address
   adopted, or proved while the DNS could not be read) the sighting becomes the baseline:
   "first seen", weaker evidence than a baseline recorded at verification.

A set changes only when it differs *and* shares nothing: one name server or mail exchanger
kept is continuity (a provider moving one host, an owner adding a backup MX). Two empty sets
are the same set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .status.observation import DnsFingerprint, DnsObservation
from .timeutil import as_utc
from .verdict import Policy, Verdict, VerdictKind

__all__ = [
    "BASELINE_COLUMNS",
    "FIRST_SEEN",
    "VERIFICATION",
    "Baseline",
    "DnsState",
    "advance_dns",
    "changed_hands",
    "judge_dns",
]

#: Baseline recorded when the address was verified (the mailbox and the DNS seen together).
VERIFICATION = "verification"
#: Baseline recorded at the first successful check after the proof (adopted addresses):
#: weaker, the domain may already have changed hands by then.
FIRST_SEEN = "first_seen"


@dataclass(frozen=True)
class Baseline:
    """An address's DNS fingerprint at its proof.

    :param kind: :data:`VERIFICATION` or :data:`FIRST_SEEN`.
    """

    fingerprint: DnsFingerprint
    recorded_at: datetime
    kind: str = VERIFICATION

    @classmethod
    def of(cls, row: Any) -> Baseline | None:
        """The baseline stored on an address row (its ``dns_baseline_*`` columns), if any."""
        recorded_at = getattr(row, "dns_baseline_at", None)
        if recorded_at is None:
            return None
        fingerprint = DnsFingerprint.from_columns(
            row.dns_baseline_ns, row.dns_baseline_mx, row.dns_baseline_ds
        )
        return cls(fingerprint, as_utc(recorded_at), row.dns_baseline_kind or VERIFICATION)

    @staticmethod
    def columns(baseline: Baseline | None) -> dict[str, Any]:
        """The ``dns_baseline_*`` column values that store ``baseline`` (``None`` clears them)."""
        if baseline is None:
            return dict.fromkeys(BASELINE_COLUMNS)
        ns, mx, ds = baseline.fingerprint.columns()
        return {
            "dns_baseline_ns": ns,
            "dns_baseline_mx": mx,
            "dns_baseline_ds": ds,
            "dns_baseline_at": baseline.recorded_at,
            "dns_baseline_kind": baseline.kind,
        }


#: The address columns a :class:`Baseline` lives in.
BASELINE_COLUMNS = (
    "dns_baseline_ns",
    "dns_baseline_mx",
    "dns_baseline_ds",
    "dns_baseline_at",
    "dns_baseline_kind",
)


@dataclass(frozen=True)
class DnsState:
    """A domain's last successful DNS sighting and its lapse memory.

    :param checked_at: when the sighting was made.
    :param delegated: whether the domain had name servers.
    :param fingerprint: the NS, MX and DS seen when delegated.
    :param lapse_seen_at: when the domain was first seen without a delegation, in the current
        run of such sightings; cleared when it is seen delegated again.
    """

    checked_at: datetime
    delegated: bool
    fingerprint: DnsFingerprint | None = None
    lapse_seen_at: datetime | None = None


def advance_dns(state: DnsState | None, sighting: DnsObservation, now: datetime) -> DnsState | None:
    """The DNS state after ``sighting`` at ``now``; a failed lookup changes nothing."""
    if not sighting.ok:
        return state
    if not sighting.delegated:
        seen = state.lapse_seen_at if state is not None and state.lapse_seen_at else now
        return DnsState(checked_at=now, delegated=False, lapse_seen_at=seen)
    return DnsState(checked_at=now, delegated=True, fingerprint=sighting.fingerprint)


def _changed(before: frozenset[str], after: frozenset[str]) -> bool:
    return before != after and before.isdisjoint(after)


def changed_hands(baseline: DnsFingerprint, current: DnsFingerprint) -> bool:
    """Whether ``current`` keeps none of ``baseline``'s name servers and none of its mail
    exchangers (both sets changed)."""
    return _changed(baseline.ns, current.ns) and _changed(baseline.mx, current.mx)


def judge_dns(
    state: DnsState,
    *,
    domain: str,
    now: datetime,
    baseline: Baseline | None,
    policy: Policy,
) -> Verdict:
    """Judge a domain's DNS for an address with ``baseline`` (see the module docstring)."""
    if not state.delegated:
        start = min(state.lapse_seen_at or now, now)
        ends = start + policy.grace
        since = f"{domain} has had no delegation in the DNS since {start.date().isoformat()}"
        if now >= ends:
            return Verdict(
                kind=VerdictKind.EXPIRED,
                unsafe=True,
                until=None,
                reason=f"{since} and its grace period ended on {ends.date().isoformat()}.",
            )
        return Verdict(
            kind=VerdictKind.IN_GRACE,
            unsafe=False,
            until=ends,
            reason=f"{since} and counts as expired from {ends.date().isoformat()} "
            "unless it comes back.",
        )
    current = state.fingerprint or DnsFingerprint(ns=frozenset(), mx=frozenset())
    if baseline is not None and changed_hands(baseline.fingerprint, current):
        return Verdict(
            kind=VerdictKind.DNS_CHANGED,
            unsafe=True,
            until=None,
            reason=f"The name servers and mail servers of {domain} have all changed since the "
            f"address was verified on {baseline.recorded_at.date().isoformat()}, so the "
            "domain may belong to someone else now.",
        )
    if baseline is None:
        reason = f"{domain} is delegated in the DNS; this sighting is the address's first."
    elif baseline.kind == FIRST_SEEN:
        reason = (
            f"The DNS of {domain} is continuous with what was first seen for the address on "
            f"{baseline.recorded_at.date().isoformat()}."
        )
    else:
        reason = (
            f"The DNS of {domain} is continuous with what it was when the address was "
            f"verified on {baseline.recorded_at.date().isoformat()}."
        )
    return Verdict(kind=VerdictKind.OK, unsafe=False, until=None, reason=reason)
