"""Many status lookups at once, politely: the sweep's I/O half.

:class:`Lookups` runs lookups through one status backend and one shared HTTP client with

- a global concurrency limit and a per-server limit (``backend.server_key(domain)``),
- a global rate limit (a token bucket; ``0`` turns it off),
- a per-lookup timeout, and bounded retries with exponential backoff and jitter,
- ``Retry-After`` honoured: a 429 pauses every lookup to that server, not just one domain;
- a DNS lookup beside the status lookup where ``DOMAINGUARD_DNS_EVIDENCE`` gives the DNS a
  role (:func:`~.dnsevidence.observe_with_dns`), at most ``concurrency`` of them at once; no
  retries for a TLD the backend has no server for.

A lookup never raises: whatever goes wrong comes back as a failed
:class:`~flask_domainguard.status.observation.Observation`, which the policy reads as
"cannot tell" and never acts on.

:mod:`~flask_domainguard.lookupthread` and :mod:`~flask_domainguard.lookupprocess` run
them for the sweep beside its database work, in a thread or in a child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from .dnsevidence import observe_with_dns
from .httpclient import AiohttpClient
from .status.base import StatusBackend, backend_covers, bounds_itself
from .status.dnslookup import DnsLookup
from .status.observation import DnsObservation, Observation
from .timeutil import within

__all__ = [
    "LookupLimits",
    "LookupWorker",
    "Lookups",
    "TokenBucket",
    "make_client",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class LookupLimits:
    """How hard the lookups may push.

    :param concurrency: lookups in flight at once.
    :param per_server: lookups in flight at once against one server.
    :param rate: lookups started per second overall; ``0`` means no limit.
    :param retries: extra attempts after a failed lookup.
    :param timeout: seconds one attempt may take.
    :param retry_base: first backoff delay in seconds (doubled per attempt, with jitter).
    :param retry_cap: longest backoff delay in seconds.
    :param max_retry_after: a longer ``Retry-After`` ends the retries for this run; the sweep
        then schedules the domain's next check after it instead.
    """

    concurrency: int = 32
    per_server: int = 8
    rate: float = 0.0
    retries: int = 3
    timeout: float = 10.0
    retry_base: float = 0.5
    retry_cap: float = 30.0
    max_retry_after: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Delay before retry ``attempt`` (0-based): exponential, half of it random jitter."""
        delay = min(self.retry_cap, self.retry_base * 2.0**attempt)
        return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - jitter, not security

    def worst_case(self) -> float:
        """Upper bound in seconds on one domain's lookups, retries and waits included (not the
        waits for a free slot, during which other lookups finish)."""
        attempts = self.retries + 1
        waits = sum(max(self.backoff_cap(a), self.max_retry_after) for a in range(self.retries))
        # Before each attempt, a pause another lookup's Retry-After put on the server (at
        # most max_retry_after: a longer one ends that lookup's retries instead; without
        # retries no lookup pauses a server).
        paused = attempts * self.max_retry_after if self.retries else 0.0
        return attempts * (self.timeout + 1.0) + waits + paused

    def backoff_cap(self, attempt: int) -> float:
        """The longest delay :meth:`backoff` can return for ``attempt``."""
        return min(self.retry_cap, self.retry_base * 2.0**attempt)


class TokenBucket:
    """At most ``rate`` takes per second on average, bursts of up to ``burst``.

    Callers reserve a token and sleep until it is theirs, so waiting callers are served in
    order without a lock (the event loop is single-threaded).
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive; use no bucket for no limit")
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def reserve(self) -> float:
        """Take a token now and return how many seconds to wait before using it."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def take(self) -> None:
        """Wait for a token."""
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)


def make_client(max_connections: int) -> httpx.AsyncClient:
    """One HTTP client for a whole sweep, holding at most ``max_connections`` connections.

    It is an :class:`~flask_domainguard.httpclient.AiohttpClient` (aiohttp's C parser,
    measured: about a third of the CPU per lookup of httpx's own transport). With proxy
    variables in the environment httpx's own transport is used, since the peer-address
    checks of :mod:`~flask_domainguard.netguard` know how httpx applies them.
    """
    if any(key in ("http", "https", "all") for key in urllib.request.getproxies()):
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        return httpx.AsyncClient(limits=limits)
    return AiohttpClient(max_connections)


def _retryable(obs: Observation) -> bool:
    return obs.registered is None and obs.error is not None


class Lookups:
    """Look domains up through ``backend`` within ``limits`` (see the module docstring).

    Use inside a running event loop: ``async with Lookups(backend, limits) as lookups``.
    A client passed in is used and left open; otherwise one is made and closed at the end.

    :param dns: the DNS lookup to join (``None``: the DNS is not read).
    :param dns_mode: ``DOMAINGUARD_DNS_EVIDENCE``.
    """

    def __init__(
        self,
        backend: StatusBackend,
        limits: LookupLimits,
        *,
        client: httpx.AsyncClient | None = None,
        dns: DnsLookup | None = None,
        dns_mode: str = "off",
    ) -> None:
        self.backend = backend
        self.limits = limits
        self.dns = _BoundedDns(dns, limits.concurrency) if dns is not None else None
        self.dns_mode = dns_mode
        self._client = client
        self._own_client = client is None
        self._slots: asyncio.Semaphore | None = None
        self._servers: dict[str, asyncio.Semaphore] = {}
        self._paused_until: dict[str, float] = {}
        self._bucket = TokenBucket(limits.rate) if limits.rate > 0 else None
        # The package's HTTP backends end within the timeout by themselves (one clock per
        # lookup); any other backend, a host's own class among them, gets a clock here.
        self._bounds_itself = bounds_itself(backend)
        #: Attempts made, for reports and tests.
        self.attempts = 0
        #: Domains submitted to :meth:`observe_many` whose lookups have not finished.
        self.pending = 0

    async def __aenter__(self) -> Lookups:
        self._slots = asyncio.Semaphore(self.limits.concurrency)
        if self._client is None:
            self._client = make_client(self.limits.concurrency)
        ensure = getattr(self.backend, "ensure_bootstrap", None)
        if ensure is not None:
            # RDAP: know every domain's server up front, so the per-server limit applies to
            # real servers rather than to top-level domains.
            try:
                await asyncio.wait_for(ensure(client=self._client), self.limits.timeout + 1.0)
            except Exception as exc:
                log.warning("RDAP bootstrap not loaded up front: %s", type(exc).__name__)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _server(self, key: str) -> asyncio.Semaphore | contextlib.AbstractAsyncContextManager[None]:
        if self.limits.per_server >= self.limits.concurrency:
            # The global limit keeps every server within its own: one semaphore less.
            return _NO_LIMIT
        slot = self._servers.get(key)
        if slot is None:
            slot = self._servers[key] = asyncio.Semaphore(self.limits.per_server)
        return slot

    async def _attempt(self, domain: str, server: str) -> Observation:
        if self._slots is None:
            raise RuntimeError("use Lookups as an async context manager")
        # Wait out a server's Retry-After before taking a slot, so a paused server does not
        # hold slots that lookups to other servers could use.
        pause = self._paused_until.get(server, 0.0) - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        # The server's slot first: a lookup waiting for a busy server must not hold one of
        # the global slots that lookups to other servers could use.
        async with self._server(server), self._slots:
            if self._bucket is not None:
                await self._bucket.take()
            self.attempts += 1
            timeout = self.limits.timeout
            try:
                lookup = self.backend.observe(domain, client=self._client, timeout=timeout)
                if self._bounds_itself:
                    return await lookup
                # Backends are asked to keep the timeout; this bound catches one that does not.
                return await within(lookup, timeout + 1.0)
            except asyncio.TimeoutError:
                return Observation.failed(
                    domain, f"timed out after {timeout:g} s", source=self.backend.name
                )
            except Exception as exc:  # a backend bug must cost one lookup, not the sweep
                log.error("lookup of %s failed: %s", domain, type(exc).__name__)
                return Observation.failed(
                    domain,
                    f"internal error in the {self.backend.name} backend ({type(exc).__name__})",
                    source=self.backend.name,
                )

    async def observe(self, domain: str) -> Observation:
        """Look ``domain`` up, retrying failures, with the DNS where it has a role; never
        raises."""
        if self.dns is None or self.dns_mode == "off":
            return await self._observe_status(domain)
        return await observe_with_dns(
            domain,
            self._observe_status(domain),
            backend=self.backend,
            lookup=self.dns,
            mode=self.dns_mode,
        )

    async def _observe_status(self, domain: str) -> Observation:
        try:
            server = self.backend.server_key(domain)
        except Exception:
            server = "?"
        # A TLD without a status server fails the same way every time: once is enough.
        retries = 0 if backend_covers(self.backend, domain) is False else self.limits.retries
        attempt = 0
        while True:
            obs = await self._attempt(domain, server)
            if not _retryable(obs) or attempt >= retries:
                return obs
            delay = self.limits.backoff(attempt)
            if obs.retry_after is not None:
                if obs.retry_after > self.limits.max_retry_after:
                    return obs  # the sweep schedules the next check after the server's wish
                delay = max(delay, obs.retry_after)
                until = time.monotonic() + obs.retry_after
                self._paused_until[server] = max(self._paused_until.get(server, 0.0), until)
            log.debug("retrying %s in %.2f s: %s", domain, delay, obs.error)
            await asyncio.sleep(delay)
            attempt += 1

    async def observe_many(self, domains: Iterable[str]) -> dict[str, Observation]:
        """Look every domain up at once (within the limits); results by domain."""
        names = list(dict.fromkeys(domains))
        results: dict[str, Observation] = {}
        await self.observe_each(names, results.__setitem__)
        return {name: results[name] for name in names}

    async def observe_each(
        self, domains: Iterable[str], deliver: Callable[[str, Observation], object]
    ) -> None:
        """Look every domain up at once (within the limits), handing each observation to
        ``deliver`` as soon as it is in."""
        names = list(dict.fromkeys(domains))
        self.pending += len(names)

        async def one(name: str) -> None:
            try:
                deliver(name, await self.observe(name))
            finally:
                self.pending -= 1

        await asyncio.gather(*(one(name) for name in names))


class LookupWorker:
    """What the sweep's two lookup workers (:mod:`.lookupthread`, :mod:`.lookupprocess`)
    share: the :class:`Lookups` they run, and the queue of streamed observations that
    :meth:`take` hands over."""

    def __init__(
        self,
        backend: StatusBackend,
        limits: LookupLimits,
        *,
        dns: DnsLookup | None = None,
        dns_mode: str = "off",
    ) -> None:
        self._backend = backend
        self._limits = limits
        self._dns = dns
        self._dns_mode = dns_mode
        #: ``(domain, observation)`` as lookups finish, or ``(None, error)`` once the worker
        #: itself failed.
        self._finished: queue.SimpleQueue[tuple[str | None, Any]] = queue.SimpleQueue()

    def new_lookups(self) -> Lookups:
        """A :class:`Lookups` for this worker's backend, limits and DNS."""
        return Lookups(self._backend, self._limits, dns=self._dns, dns_mode=self._dns_mode)

    def take(self, timeout: float) -> list[tuple[str, Observation]]:
        """The streamed observations that are in: waits up to ``timeout`` seconds for the
        first, then takes whatever else is there. Raises the worker's failure, if it
        reported one."""
        try:
            items = [self._finished.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._finished.get_nowait())
            except queue.Empty:
                break
        taken: list[tuple[str, Observation]] = []
        for name, value in items:
            if name is None:
                raise value
            taken.append((name, value))
        return taken


#: Taken in place of a per-server semaphore that could never make a lookup wait.
_NO_LIMIT = contextlib.nullcontext()


class _BoundedDns:
    """A :class:`DnsLookup` with at most ``limit`` lookups in flight (a sweep submits a whole
    batch of domains at once)."""

    def __init__(self, lookup: DnsLookup, limit: int) -> None:
        self._lookup = lookup
        self._limit = limit
        self._slots: asyncio.Semaphore | None = None

    async def observe(self, domain: str) -> DnsObservation:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._limit)
        async with self._slots:
            return await self._lookup.observe(domain)
