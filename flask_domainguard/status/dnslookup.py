"""DNS lookups of a registrable domain: its NS, MX and DS records, through recursive resolvers.

:class:`DnsLookup` asks the resolvers of ``DOMAINGUARD_DNS_RESOLVERS`` (or the system's) with
dnspython and reports a :class:`~.observation.DnsObservation`. Like a status backend it never
raises and never judges. How answers are read:

- NXDOMAIN for the domain, or an NS answer without records: ``delegated=False`` (a registry
  that drops or holds a name removes its delegation).
- NS records: ``delegated=True`` with the NS, MX and DS sets (an MX or DS answer without
  records is an empty set; a null MX is ``"."``).
- Anything else is ``delegated=None`` with ``error`` set: a timeout, SERVFAIL or REFUSED from
  every resolver, an answer about another name (a CNAME at the domain, a wrong question), an
  answer with more than :data:`MAX_RECORDS` records, MX or DS contradicting NS (NXDOMAIN for
  one, records for the other). dnspython drops answers with a wrong id or question and
  retries a truncated UDP answer over TCP.

All three queries run at once and together take at most ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from .base import not_a_domain, run_sync, to_alabel
from .observation import DnsFingerprint, DnsObservation

__all__ = ["MAX_RECORDS", "DnsLookup"]

log = logging.getLogger(__name__)

#: An answer with more records than this is hostile or broken, not a fingerprint.
MAX_RECORDS = 32

#: EDNS payload size: answers up to it come over UDP, larger ones are truncated (then TCP).
#: 1232 bytes avoids IP fragmentation (DNS flag day 2020).
EDNS_PAYLOAD = 1232


class _Unusable(Exception):
    """An answer that cannot be read as a fingerprint (the message says why)."""


class DnsLookup:
    """Look registrable domains up in the DNS; safe to share between event loops and threads.

    :param resolvers: ``(ip, port)`` pairs; ``None`` reads the system's (``/etc/resolv.conf``).
    :param timeout: seconds one domain's lookup may take in total.
    """

    def __init__(
        self, resolvers: Iterable[tuple[str, int]] | None = None, *, timeout: float = 2.0
    ) -> None:
        self.timeout = timeout
        self.resolvers = tuple(resolvers) if resolvers is not None else None
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._setup_error: str | None = None
        try:
            self._resolver = self._make_resolver()
        except Exception as exc:  # no /etc/resolv.conf, no nameserver in it
            self._setup_error = f"no DNS resolver available ({type(exc).__name__})"
            log.warning("DNS evidence has no resolver: %s", exc)

    def _make_resolver(self) -> dns.asyncresolver.Resolver:
        if self.resolvers is None:
            resolver = dns.asyncresolver.Resolver()
        else:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(ip, port) for ip, port in self.resolvers
            ]
        resolver.use_edns(0, 0, EDNS_PAYLOAD)
        resolver.lifetime = self.timeout
        # Half the budget per try, so a lost UDP packet is sent again once in time.
        resolver.timeout = max(self.timeout / 2, 0.1)
        resolver.cache = None  # each lookup is a fresh look; the resolver upstream caches
        return resolver

    async def observe(self, domain: str) -> DnsObservation:
        """Look ``domain`` up; never raises, never outlasts the timeout (plus a little)."""
        name = to_alabel(domain) if isinstance(domain, str) else None
        if name is None:
            return DnsObservation.failed(
                str(domain), not_a_domain(domain, source="dns").error or ""
            )
        if self._resolver is None:
            return DnsObservation.failed(name, self._setup_error or "no DNS resolver")
        try:
            return await asyncio.wait_for(self._observe(self._resolver, name), self.timeout + 0.5)
        except asyncio.TimeoutError:
            return DnsObservation.failed(name, f"DNS lookup timed out after {self.timeout:g} s")
        except Exception as exc:  # a bug here must cost one lookup, not a sweep
            log.exception("DNS lookup of %s failed unexpectedly", name)
            return DnsObservation.failed(name, f"DNS lookup failed ({type(exc).__name__})")

    def observe_sync(self, domain: str) -> DnsObservation:
        """:meth:`observe` from synchronous code (a view, the CLI)."""
        return run_sync(self.observe(domain))

    async def _observe(self, resolver: dns.asyncresolver.Resolver, name: str) -> DnsObservation:
        qname = dns.name.from_text(name)
        ns, mx, ds = await asyncio.gather(
            self._query(resolver, qname, dns.rdatatype.NS),
            self._query(resolver, qname, dns.rdatatype.MX),
            self._query(resolver, qname, dns.rdatatype.DS),
        )
        try:
            ns_set = _read(ns, qname)
            if ns_set is None or not ns_set:
                detail = "NXDOMAIN" if ns_set is None else "no NS records"
                return DnsObservation(domain=name, delegated=False, detail=detail)
            mx_set, ds_set = _read(mx, qname), _read(ds, qname)
            if mx_set is None or ds_set is None:
                raise _Unusable("NXDOMAIN for MX or DS while NS records exist")
        except _Unusable as exc:
            return DnsObservation.failed(name, f"DNS answer unusable: {exc}")
        return DnsObservation(
            domain=name,
            delegated=True,
            fingerprint=DnsFingerprint(ns=ns_set, mx=mx_set, ds=ds_set),
        )

    @staticmethod
    async def _query(
        resolver: dns.asyncresolver.Resolver, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.resolver.Answer | Exception:
        try:
            return await resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False)
        except Exception as exc:
            return exc


def _read(result: dns.resolver.Answer | Exception, qname: dns.name.Name) -> frozenset[str] | None:
    """The record texts of one answer; ``None`` for NXDOMAIN.

    :raises _Unusable: for a failed query or an answer that is not a fingerprint.
    """
    if isinstance(result, dns.resolver.NXDOMAIN):
        return None
    if isinstance(result, dns.exception.Timeout):
        raise _Unusable("no resolver answered in time")
    if isinstance(result, dns.resolver.NoNameservers):
        raise _Unusable("every resolver failed (SERVFAIL, REFUSED or a malformed answer)")
    if isinstance(result, Exception):
        raise _Unusable(type(result).__name__)
    if result.canonical_name != qname:
        # A CNAME at a registrable domain: these records belong to another name.
        raise _Unusable(f"the answer is about {result.canonical_name.to_text(True)}")
    rrset = result.rrset
    if rrset is None:
        return frozenset()
    if len(rrset) > MAX_RECORDS:
        raise _Unusable(f"{len(rrset)} records (more than {MAX_RECORDS})")
    rdtype = rrset.rdtype
    texts: set[str] = set()
    for rdata in rrset:
        if rdtype == dns.rdatatype.NS:
            texts.add(_host(rdata.target))
        elif rdtype == dns.rdatatype.MX:
            texts.add(_host(rdata.exchange))
        elif rdtype == dns.rdatatype.DS:
            texts.add(f"{rdata.key_tag}:{rdata.algorithm}:{rdata.digest_type}:{rdata.digest.hex()}")
    return frozenset(texts)


def _host(name: dns.name.Name) -> str:
    if name == dns.name.root:
        return "."  # a null MX (RFC 7505): the domain takes no mail
    # Presentation format escapes spaces and control bytes, so a name is one word.
    return name.to_text(omit_final_dot=True).lower()
