"""The sweep's lookups in a background thread: an event loop running one
:class:`~.lookups.Lookups` beside the sweep's database work (synchronous, in the Flask app
context), which overlaps with the lookups in flight. :mod:`.lookupprocess` does the same in a
child process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterable

from .lookups import LookupLimits, Lookups, LookupWorker
from .status.base import StatusBackend
from .status.dnslookup import DnsLookup
from .status.observation import Observation

__all__ = ["LookupThread"]


class LookupThread(LookupWorker):
    """An event loop in a daemon thread running one :class:`Lookups` for a whole sweep.

    ``submit(domains)`` returns a :class:`concurrent.futures.Future` of the observations, so
    the caller can claim and apply other batches while these lookups run.
    """

    def __init__(
        self,
        backend: StatusBackend,
        limits: LookupLimits,
        *,
        dns: DnsLookup | None = None,
        dns_mode: str = "off",
    ) -> None:
        super().__init__(backend, limits, dns=dns, dns_mode=dns_mode)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._lookups: Lookups | None = None
        self._thread = threading.Thread(target=self._run, name="domainguard-lookups", daemon=True)
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with self.new_lookups() as lookups:
                self._lookups = lookups
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # reported to the caller by start()
            self._error = exc
            self._ready.set()

    def start(self) -> LookupThread:
        """Start the loop and its HTTP client."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError(f"could not start the lookups: {self._error}") from self._error
        return self

    @property
    def pending(self) -> int:
        """Domains submitted whose lookups have not finished (read from any thread)."""
        return self._lookups.pending if self._lookups is not None else 0

    @property
    def attempts(self) -> int:
        """Lookup attempts made so far (retries included)."""
        return self._lookups.attempts if self._lookups is not None else 0

    def submit(self, domains: Iterable[str]) -> concurrent.futures.Future[dict[str, Observation]]:
        """Start looking ``domains`` up; the future holds their observations."""
        if self._lookups is None:
            raise RuntimeError("call start() first")
        return asyncio.run_coroutine_threadsafe(
            self._lookups.observe_many(list(domains)), self._loop
        )

    def stream(self, domains: Iterable[str]) -> None:
        """Start looking ``domains`` up; :meth:`take` hands their observations over as they
        come in."""
        if self._lookups is None:
            raise RuntimeError("call start() first")
        future = asyncio.run_coroutine_threadsafe(
            self._lookups.observe_each(domains, lambda *item: self._finished.put(item)),
            self._loop,
        )
        future.add_done_callback(self._report_failure)

    def _report_failure(self, future: concurrent.futures.Future[None]) -> None:
        # Lookups never raise; this is a bug or a stopped loop, and it must stop the sweep.
        if not future.cancelled() and future.exception() is not None:
            self._finished.put((None, future.exception()))

    def close(self) -> None:
        """Close the HTTP client and stop the loop (waits for lookups in flight)."""
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    def __enter__(self) -> LookupThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
