"""The interface every status backend implements, and helpers the backends share.

A backend does I/O and reports what it saw as an :class:`~.observation.Observation`; it never
judges (that is :func:`flask_domainguard.verdict.judge`) and it never raises for an answer it
could not read: such lookups come back as ``Observation.failed(...)`` with ``error`` set.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import weakref
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from typing import Any, Protocol, TypeVar, runtime_checkable

import httpx
import idna

from .observation import Observation

__all__ = [
    "MAX_YEAR",
    "MIN_YEAR",
    "LoopClient",
    "StatusBackend",
    "backend_covers",
    "bounds_itself",
    "keeps_its_timeout",
    "observe_sync",
    "parse_datetime",
    "run_sync",
    "to_alabel",
    "user_agent",
]

#: Dates outside these years are taken as absent: the first ``.com`` name was registered in
#: 1985, and :class:`datetime` cannot hold years past 9999 (registry test data has 294247).
MIN_YEAR = 1985
MAX_YEAR = 9999

_T = TypeVar("_T")


@runtime_checkable
class StatusBackend(Protocol):
    """Where domain status comes from (RDAP, Fastly, the legacy Domainr API, a static file).

    A host may plug in its own class (``DOMAINGUARD_STATUS_BACKEND = "pkg.mod:Class"``); it is
    constructed with the app's :class:`~flask_domainguard.config.Settings` and needs only these
    four members.
    """

    #: Short name recorded as :attr:`Observation.source` (``"rdap"``, ``"fastly"``, ...).
    name: str

    async def observe(
        self,
        domain: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float | None = None,
    ) -> Observation:
        """Look ``domain`` (a registrable domain) up and report what the source said.

        :param client: HTTP client to use; the sweep passes one shared client.
        :param timeout: seconds the lookup may take in total; ``None`` uses the settings.
        """
        ...

    def server_key(self, domain: str) -> str:
        """Name the server a lookup of ``domain`` goes to, so callers can cap load per server."""
        ...

    async def aclose(self) -> None:
        """Release what the backend holds (an HTTP client it created itself)."""
        ...


def backend_covers(backend: StatusBackend, domain: str) -> bool | None:
    """Whether ``backend`` has a status server for ``domain``'s TLD.

    A backend says so with an optional ``covers(domain) -> bool | None`` method (``None``:
    cannot tell yet). One without it is taken to cover every domain: the DNS then never
    stands in for it as evidence (``DOMAINGUARD_DNS_EVIDENCE = "fallback"``).
    """
    covers = getattr(backend, "covers", None)
    if covers is None:
        return True
    try:
        answer = covers(domain)
    except Exception:
        return None
    return answer if isinstance(answer, bool) else None


_Method = TypeVar("_Method", bound=Callable[..., Any])

#: The functions :func:`keeps_its_timeout` marked, themselves: not an attribute, which
#: :func:`functools.wraps` would copy onto a host's wrapper along with the function's
#: ``__dict__`` (a wrapper's own awaits are bounded by nothing but ``Lookups``' clock).
_KEEP_TIMEOUTS: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


def keeps_its_timeout(observe: _Method) -> _Method:
    """Mark a backend's ``observe`` as ending within its ``timeout`` argument by itself
    (every await inside one bound), so :class:`~flask_domainguard.lookups.Lookups` need not
    put a second clock around it: a timer per lookup is measurable CPU in a sweep.

    The mark names the function, not the class: a subclass that overrides ``observe`` (a
    host's own code), or wraps it (even with :func:`functools.wraps`), loses it and is
    bounded by ``Lookups`` again.
    """
    _KEEP_TIMEOUTS.add(observe)
    return observe


def bounds_itself(backend: StatusBackend) -> bool:
    """Whether ``backend.observe`` is a function :func:`keeps_its_timeout` marked."""
    observe = getattr(backend, "observe", None)
    try:
        return getattr(observe, "__func__", observe) in _KEEP_TIMEOUTS
    except TypeError:  # not a function (nor weakly referable): no mark
        return False


def observe_sync(backend: StatusBackend, domain: str, timeout: float | None = None) -> Observation:
    """Run one lookup from synchronous code (a view, the CLI) and return its observation.

    The lookup gets its own short-lived HTTP client, because an :class:`httpx.AsyncClient` is
    tied to the event loop it first ran on. When this thread already runs an event loop,
    :func:`asyncio.run` is not allowed there, so the lookup runs in a helper thread instead.
    """

    async def run() -> Observation:
        async with httpx.AsyncClient() as client:
            return await backend.observe(domain, client=client, timeout=timeout)

    return run_sync(run())


def run_sync(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` to its end from synchronous code (a view, the CLI) and return its result.

    :func:`asyncio.run` is not allowed in a thread that already runs an event loop, so there
    the coroutine runs on a new loop in a helper thread instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class LoopClient:
    """The HTTP client a backend's lookups go through.

    That is the client the caller passes to a lookup, else the one given to the backend at
    construction, else one the backend creates for itself. An :class:`httpx.AsyncClient`
    belongs to the event loop it first ran on, and a backend lives as long as the app while
    :func:`observe_sync` runs a new loop per call; so the backend's own client is kept per
    loop and replaced when the loop changes.

    :param injected: the client given at construction; never closed here (its owner does).
    """

    def __init__(self, injected: httpx.AsyncClient | None = None) -> None:
        self._injected = injected
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None

    def get(self, client: httpx.AsyncClient | None = None) -> httpx.AsyncClient:
        """``client`` if given, else the injected client, else the own client for the running
        loop, created on first use."""
        if client is not None:
            return client
        if self._injected is not None:
            return self._injected
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # The previous loop is gone or busy elsewhere; its client cannot be closed from here.
            self._client = httpx.AsyncClient()
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the own client if it belongs to the running loop, and forget it either way."""
        client, loop = self._client, self._loop
        self._client = self._loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()


def user_agent() -> str:
    """The User-Agent of every lookup: registries ask clients to name themselves."""
    try:
        release = version("flask-domainguard")
    except Exception:  # an uninstalled checkout has no metadata; the name matters most
        release = "dev"
    return f"flask-domainguard/{release} (domain lifecycle check)"


_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def to_alabel(name: str) -> str | None:
    """Return ``name`` as a lower-case A-label domain (punycode), or ``None`` if it is not one.

    A trailing dot is dropped. A name needs at least two labels: a lone TLD is no domain.
    """
    if not isinstance(name, str):
        return None
    text = name.strip().rstrip(".")
    if not text:
        return None
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            return None
    text = text.lower()
    labels = text.split(".")
    if len(labels) < 2 or len(text) > 253:
        return None
    if not all(_LDH_LABEL.match(label) for label in labels):
        return None
    return text


# RFC 3339 as RDAP servers really write it: fractions of any length, ``Z`` or an offset with or
# without a colon, years of more than four digits (so they can be recognised and dropped).
_DATETIME = re.compile(
    r"^\s*(?P<year>[+-]?\d{4,})-(?P<month>\d{1,2})-(?P<day>\d{1,2})"
    r"(?:[Tt ](?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<frac>\d+))?)?)?"
    r"\s*(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?\s*$"
)


def not_a_domain(query: object, *, source: str) -> Observation:
    """The answer to a query that is not a domain name: nothing is looked up."""
    text = repr(query)
    shown = text if len(text) <= 60 else text[:57] + "..."
    return Observation.failed(
        str(query).strip().lower(), f"{shown} is not a domain name", source=source
    )


def parse_datetime(value: object) -> datetime | None:
    """Parse an RDAP/ISO 8601 date into an aware UTC datetime; ``None`` when it cannot be used.

    ``None`` is returned for anything that is not a string, is not a date, or whose year
    (after conversion to UTC) lies outside :data:`MIN_YEAR`..:data:`MAX_YEAR`: an absurd date
    is treated as absent rather than guessed at. A date without an offset is taken as UTC; a
    bare date as midnight UTC; a leap second as the second before it.
    """
    if not isinstance(value, str) or len(value) > 64:
        return None
    match = _DATETIME.match(value)
    if match is None:
        return None
    parts = match.groupdict()
    year = int(parts["year"])
    if not MIN_YEAR - 1 <= year <= MAX_YEAR:  # 1984 may still land in 1985 once in UTC
        return None
    try:
        frac = (parts["frac"] or "0")[:6].ljust(6, "0")
        local = datetime(
            year,
            int(parts["month"]),
            int(parts["day"]),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            min(int(parts["second"] or 0), 59),
            int(frac),
        )
        tz = parts["tz"]
        if tz and tz not in ("Z", "z"):
            sign = -1 if tz[0] == "-" else 1
            digits = tz[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            if offset >= timedelta(hours=24):
                return None
            result = local.replace(tzinfo=timezone(sign * offset)).astimezone(timezone.utc)
        else:
            result = local.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError):
        return None
    if not MIN_YEAR <= result.year <= MAX_YEAR:
        return None
    return result
