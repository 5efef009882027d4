"""What a status backend (and the DNS) saw of one registrable domain: facts, no judgement."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


def _names_text(names: frozenset[str]) -> str:
    return " ".join(sorted(names))


def _names_of(text: str | None) -> frozenset[str]:
    return frozenset((text or "").split())


@dataclass(frozen=True, kw_only=True)
class DnsFingerprint:
    """Who runs a registrable domain's DNS and mail, as the DNS says: what a new owner who
    wants the mail has to change.

    :param ns: the domain's name server host names (lower case, no final dot).
    :param mx: its mail exchanger host names (``"."`` for a null MX, RFC 7505); preferences
        are left out, since only *who* receives the mail matters.
    :param ds: its DS records in the parent zone as ``"keytag:algorithm:digest-type:hex"``.

    Names are stored space-separated: DNS presentation format escapes a space inside a label,
    so a hostile name cannot pose as two.
    """

    ns: frozenset[str]
    mx: frozenset[str]
    ds: frozenset[str] = frozenset()

    def columns(self) -> tuple[str, str, str]:
        """``(ns, mx, ds)`` as stored text."""
        return _names_text(self.ns), _names_text(self.mx), _names_text(self.ds)

    @classmethod
    def from_columns(cls, ns: str | None, mx: str | None, ds: str | None) -> DnsFingerprint:
        """The fingerprint :meth:`columns` stored."""
        return cls(ns=_names_of(ns), mx=_names_of(mx), ds=_names_of(ds))


@dataclass(frozen=True, kw_only=True)
class DnsObservation:
    """One DNS lookup of a registrable domain (its NS, MX and DS records).

    :param domain: the registrable domain, lower-case A-label.
    :param delegated: ``True`` when the domain has name servers, ``False`` when the DNS says it
        has none (NXDOMAIN, or no NS records at the name), ``None`` when the lookup failed.
    :param fingerprint: what was seen when delegated; ``None`` otherwise.
    :param error: why the lookup told nothing; ``None`` when it worked.
    :param detail: how a domain was seen undelegated (``"NXDOMAIN"``, ``"no NS records"``).
    :param evidence: the DNS is this domain's evidence: the status backend covers no status
        server for its TLD. Otherwise it is a second signal beside the status source.
    """

    domain: str
    delegated: bool | None
    fingerprint: DnsFingerprint | None = None
    error: str | None = None
    detail: str | None = None
    evidence: bool = False

    @property
    def ok(self) -> bool:
        """Whether the lookup told something (delegated or not)."""
        return self.error is None and self.delegated is not None

    @classmethod
    def failed(cls, domain: str, error: str) -> DnsObservation:
        """A lookup that told nothing: never evidence, never a lapse."""
        return cls(domain=domain, delegated=None, error=error)


@dataclass(frozen=True, kw_only=True)
class Observation:
    """One lookup's result.

    :param domain: the registrable domain, lower-case A-label.
    :param registered: ``True``/``False`` when the source could tell, ``None`` when it could not.
    :param statuses: RDAP status names (RFC 8056 spelling, lower case, e.g. ``"pending delete"``)
        or Domainr/Fastly flags (``"expiring"``, ``"deleting"``, ...).
    :param expires_at: expiration date, aware UTC, ``None`` when absent or absurd.
    :param registered_at: creation date of the current registration, aware UTC.
    :param transferred_at: the latest transfer, aware UTC.
    :param source: which backend answered (``"rdap"``, ``"fastly"``, ``"domainr"``, ``"static"``).
    :param error: why ``registered`` is ``None``; ``None`` when the lookup worked.
    """

    domain: str
    registered: bool | None
    statuses: frozenset[str] = field(default_factory=frozenset)
    expires_at: datetime | None = None
    registered_at: datetime | None = None
    transferred_at: datetime | None = None
    source: str = ""
    error: str | None = None
    retry_after: float | None = None
    """Seconds the server asked us to wait (HTTP 429 ``Retry-After``); ``None`` otherwise."""
    dns: DnsObservation | None = None
    """The DNS lookup made beside the status lookup (``DOMAINGUARD_DNS_EVIDENCE``), or
    ``None`` when the DNS was not consulted for this domain."""

    @classmethod
    def failed(
        cls, domain: str, error: str, *, source: str, retry_after: float | None = None
    ) -> Observation:
        """An observation for a lookup that could not tell anything."""
        return cls(
            domain=domain, registered=None, source=source, error=error, retry_after=retry_after
        )
