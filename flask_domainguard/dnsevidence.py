"""Where the DNS is consulted, and how a DNS lookup joins a status lookup (the I/O half of
DNS evidence; the judging is :mod:`.dnsverdict`).

``DOMAINGUARD_DNS_EVIDENCE`` decides the DNS's *role* for a domain (:func:`dns_role`):

``"fallback"`` (default)
    The DNS is read only for domains whose TLD the status backend does not cover
    (:func:`~.status.base.backend_covers` is ``False``: no RDAP server in the bootstrap or
    ``DOMAINGUARD_RDAP_SERVERS``). There, DNS continuous with the address's proof is the
    evidence a reset needs.
``"always"``
    The DNS is also read beside the status source for every other domain, as a second,
    independent signal: it can make an address unsafe, and never stands in for the status
    source's evidence.
``"off"``
    Never.

The sweep (through :class:`~.lookups.Lookups`), the live check at reset and verification
time and ``flask domainguard check`` all join the DNS to their status lookup with
:func:`observe_with_dns`. A failed DNS lookup is no evidence, as a failed status lookup.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from flask import Flask, current_app

from .context import current_settings
from .status.base import backend_covers
from .status.dnslookup import DnsLookup
from .status.observation import DnsFingerprint, DnsObservation, Observation

if TYPE_CHECKING:
    from .config import Settings
    from .context import Guard
    from .status.base import StatusBackend

__all__ = [
    "EVIDENCE",
    "SIGNAL",
    "dns_lookup",
    "dns_role",
    "observe_with_dns",
    "proof_fingerprint",
]

#: The DNS is the domain's evidence (no status server covers its TLD).
EVIDENCE = "evidence"
#: The DNS is a second signal beside the status source (``"always"``).
SIGNAL = "signal"


class DnsObserver(Protocol):
    """What :func:`observe_with_dns` needs: a :class:`DnsLookup`, or one behind a limit."""

    async def observe(self, domain: str) -> DnsObservation: ...


_lookups: weakref.WeakKeyDictionary[Flask, DnsLookup] = weakref.WeakKeyDictionary()


def dns_lookup(settings: Settings | None = None) -> DnsLookup | None:
    """The current app's :class:`~.status.dnslookup.DnsLookup` (``None`` with ``"off"``)."""
    settings = settings or current_settings()
    if settings.dns_evidence == "off":
        return None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    lookup = _lookups.get(app)
    if lookup is None:
        lookup = _lookups[app] = DnsLookup(settings.dns_resolvers, timeout=settings.dns_timeout)
    return lookup


def dns_role(mode: str, backend: StatusBackend, name: str) -> str | None:
    """The DNS's role for ``name``: :data:`EVIDENCE`, :data:`SIGNAL` or ``None`` (not read).

    A backend that cannot tell yet whether it covers the TLD (``None``) counts as covering
    it: unknown coverage never lets the DNS stand in for the status source.
    """
    if mode == "off":
        return None
    if backend_covers(backend, name) is False:
        return EVIDENCE
    return SIGNAL if mode == "always" else None


async def observe_with_dns(
    name: str,
    status: Awaitable[Observation],
    *,
    backend: StatusBackend,
    lookup: DnsObserver | None,
    mode: str,
) -> Observation:
    """Await the status lookup ``status`` of ``name`` and, where the DNS has a role for it,
    a DNS lookup; the DNS sighting rides on the observation (:attr:`Observation.dns`).

    With ``"always"`` both run at once. With ``"fallback"`` the DNS is asked after the status
    lookup, which is when an RDAP backend knows its bootstrap (so whether it covers the TLD);
    on a TLD it does not cover the status lookup ends at once, with no request.
    """
    if lookup is None or mode == "off":
        return await status
    if mode == "always":
        obs, sighting = await asyncio.gather(status, lookup.observe(name))
    else:
        obs = await status
        if dns_role(mode, backend, name) != EVIDENCE:
            return obs
        sighting = await lookup.observe(name)
    role = dns_role(mode, backend, name)
    return replace(obs, dns=replace(sighting, evidence=role == EVIDENCE))


def role_for(guard: Guard, name: str) -> str | None:
    """:func:`dns_role` for ``name`` with the current app's settings and backend."""
    settings = guard.settings
    if settings.dns_evidence == "off" or name in settings.trusted_domains:
        return None
    try:
        backend = guard.status_backend()
    except Exception:
        return None
    return dns_role(settings.dns_evidence, backend, name)


def proof_fingerprint(guard: Guard, name: str) -> DnsObservation | None:
    """Read ``name``'s DNS now, for the baseline of an address being proved (bounded by
    ``DOMAINGUARD_DNS_TIMEOUT``; never raises); ``None`` where the DNS has no role for it."""
    if role_for(guard, name) is None:
        return None
    lookup = dns_lookup(guard.settings)
    if lookup is None:
        return None
    return replace(lookup.observe_sync(name), evidence=role_for(guard, name) == EVIDENCE)


def fingerprint_of(sighting: DnsObservation | None) -> DnsFingerprint | None:
    """The fingerprint a successful sighting of a delegated domain saw, else ``None``."""
    if sighting is None or not sighting.ok or not sighting.delegated:
        return None
    return sighting.fingerprint
