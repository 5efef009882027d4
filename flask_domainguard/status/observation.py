"""What a status backend saw of one registrable domain: facts, no judgement."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


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

    @classmethod
    def failed(
        cls, domain: str, error: str, *, source: str, retry_after: float | None = None
    ) -> Observation:
        """An observation for a lookup that could not tell anything."""
        return cls(
            domain=domain, registered=None, source=source, error=error, retry_after=retry_after
        )
