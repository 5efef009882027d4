"""The sweep's lookups in a child process: :class:`~.lookupthread.LookupThread`'s work on a second
core.

Why: a sweep is bound by CPU in one interpreter. Its lookups (HTTP, JSON, the backend's
reading of the answer) and its database work (judging, storing, mail) take turns holding one
GIL, so on a machine with a second core half of the time goes to waiting. In a child process
the lookups hold a GIL of their own.

How: the child is forked, so it has the status backend exactly as configured (a host's own
class included) without pickling it. It runs the same :class:`~.lookups.Lookups` in an event
loop, reads domain names from a pipe and writes observations back, a few hundred at a time.
It never touches the database, the app or the mail: it leaves with :func:`os._exit`, so no
inherited connection, ``atexit`` handler or finalizer of the parent runs in it.

Failing closed: if the child dies or falls silent for longer than any lookup may take, every
unfinished batch fails with :class:`LookupProcessError`; the sweep then releases its leases and
stops, having applied nothing it did not look up. An observation that cannot cross the pipe
comes back as a failed lookup ("cannot tell"), never as an answer.

:func:`choose_worker` decides between the thread and the process
(``DOMAINGUARD_SWEEP_LOOKUPS``).

Long because the parent's and the child's halves of one pipe protocol belong side by side:
what one sends, the other reads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

from .lookups import LookupLimits, Lookups, LookupWorker
from .status.base import StatusBackend
from .status.dnslookup import DnsLookup
from .status.observation import Observation

__all__ = [
    "AUTO_MIN_DOMAINS",
    "LookupProcess",
    "LookupProcessError",
    "can_fork_safely",
    "choose_worker",
]

log = logging.getLogger(__name__)

#: ``auto`` runs lookups in a process from this many due domains: below it the fork and the
#: pipe cost more than the second core gives back.
AUTO_MIN_DOMAINS = 2000

#: Seconds the child gathers finished lookups before sending them (fewer, larger messages).
_FLUSH_EVERY = 0.02

#: Observations per message at most.
_FLUSH_SIZE = 500

#: The batch number of streamed lookups (:meth:`LookupProcess.stream`).
_STREAM = -1

#: Seconds of silence, beyond the longest a lookup may take, after which a child with work in
#: hand is taken for hung.
_SILENCE_MARGIN = 30.0


class LookupProcessError(RuntimeError):
    """The lookup process died, hung or could not start; its unfinished lookups are lost."""


def can_fork_safely() -> bool:
    """Whether forking now is safe: a platform that forks well (Linux), a process with no
    other thread (a lock another thread holds at the fork stays held in the child), and not
    a daemonic pool worker (which :mod:`multiprocessing` does not let have children)."""
    return (
        sys.platform == "linux"
        and threading.active_count() == 1
        and not multiprocessing.current_process().daemon
    )


def choose_worker(mode: str, due: int) -> str:
    """``"process"`` or ``"thread"`` for ``DOMAINGUARD_SWEEP_LOOKUPS`` = ``mode`` and ``due``
    domains: ``auto`` takes the process for a large sweep on a machine with a second core,
    when forking is safe."""
    if mode in ("thread", "process"):
        return mode
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if due >= AUTO_MIN_DOMAINS and (cores or 1) > 1 and can_fork_safely():
        return "process"
    return "thread"


class LookupProcess(LookupWorker):
    """:class:`~.lookupthread.LookupThread`'s interface (``start``, ``submit``, ``pending``,
    ``attempts``, ``close``) with the event loop in a forked child process."""

    def __init__(
        self,
        backend: StatusBackend,
        limits: LookupLimits,
        *,
        dns: DnsLookup | None = None,
        dns_mode: str = "off",
    ) -> None:
        super().__init__(backend, limits, dns=dns, dns_mode=dns_mode)
        self._conn: Connection | None = None
        self._process: Any = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._batches: dict[int, _Batch] = {}
        self._ids = itertools.count()
        self._pending = 0
        self._attempts = 0
        self._failure: str | None = None
        # Longest a lookup may take with its retries, plus the margin: silence beyond it with
        # work in hand means the child hangs.
        self._silence = limits.worst_case() + _SILENCE_MARGIN

    def start(self) -> LookupProcess:
        """Fork the child and wait until its HTTP client is ready."""
        context = multiprocessing.get_context("fork")
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=_child_main,
            args=(child_end, self.new_lookups),
            name="domainguard-lookups",
            daemon=True,
        )
        process.start()
        child_end.close()
        self._conn, self._process = parent_end, process
        # The RDAP bootstrap loads before "ready"; it is bounded by the timeout.
        if not parent_end.poll(self._limits.timeout + _SILENCE_MARGIN):
            self._stop_child()
            raise LookupProcessError("the lookup process did not start in time")
        try:
            message = parent_end.recv()
        except (EOFError, OSError) as exc:
            self._stop_child()
            raise LookupProcessError("the lookup process ended while starting") from exc
        if message[0] != "ready":
            self._stop_child()
            raise LookupProcessError(f"could not start the lookups: {message[1]}")
        self._reader = threading.Thread(
            target=self._read, name="domainguard-lookups-reader", daemon=True
        )
        self._reader.start()
        return self

    @property
    def pending(self) -> int:
        """Domains submitted whose observations have not come back."""
        return self._pending

    @property
    def attempts(self) -> int:
        """Lookup attempts the child has made so far (retries included)."""
        return self._attempts

    def submit(self, domains: Iterable[str]) -> concurrent.futures.Future[dict[str, Observation]]:
        """Send ``domains`` to the child; the future holds their observations."""
        if self._conn is None:
            raise RuntimeError("call start() first")
        names = list(dict.fromkeys(domains))
        future: concurrent.futures.Future[dict[str, Observation]] = concurrent.futures.Future()
        if not names:
            future.set_result({})
            return future
        batch_id = next(self._ids)
        with self._lock:
            if self._failure is not None:
                raise LookupProcessError(self._failure)
            self._batches[batch_id] = _Batch(future, names)
            self._pending += len(names)
        try:
            self._conn.send(("look", batch_id, names))
        except (OSError, ValueError) as exc:
            self._fail(f"the lookup process cannot be reached ({type(exc).__name__})")
        return future

    def stream(self, domains: Iterable[str]) -> None:
        """Send ``domains`` to the child; :meth:`take` hands their observations over as they
        come in."""
        if self._conn is None:
            raise RuntimeError("call start() first")
        names = list(dict.fromkeys(domains))
        with self._lock:
            if self._failure is not None:
                raise LookupProcessError(self._failure)
            self._pending += len(names)
        try:
            self._conn.send(("look", _STREAM, names))
        except (OSError, ValueError) as exc:
            self._fail(f"the lookup process cannot be reached ({type(exc).__name__})")

    def close(self) -> None:
        """Stop the child and the reader; lookups still running are abandoned (their
        batches fail), as a closing :class:`~.lookupthread.LookupThread` abandons its own."""
        if self._conn is None:
            return
        # A child already gone has had its unfinished lookups failed by the reader.
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(("stop",))
        if self._reader is not None:
            self._reader.join()
        self._stop_child()

    def __enter__(self) -> LookupProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the parent's side of the pipe ----------------------------------------------------

    def _read(self) -> None:
        """Take the child's messages until it says it is done, dies or hangs."""
        conn = self._conn
        if conn is None:
            return
        heard = time.monotonic()
        while True:
            try:
                if not conn.poll(1.0):
                    if not self._pending:
                        heard = time.monotonic()  # idle, not silent
                    elif time.monotonic() - heard > self._silence:
                        # Hung (a backend blocking its event loop): it will finish nothing.
                        self._process.kill()
                        self._fail(f"the lookup process sent nothing for {self._silence:g} s")
                        return
                    continue
                message = conn.recv()
                heard = time.monotonic()
            except (EOFError, OSError):
                # The pipe closes before the child is reaped: wait a moment for its code.
                self._process.join(timeout=5.0)
                code = self._process.exitcode
                self._fail(f"the lookup process ended unexpectedly (exit code {code})")
                return
            except Exception as exc:
                # A message that cannot be read (the child checks, but a bug must not leave
                # the sweep waiting for ever): its observations are lost, so is the run.
                self._process.kill()
                self._fail(f"a message of the lookup process was unreadable ({type(exc).__name__})")
                return
            if message[0] == "results":
                self._attempts = message[2]
                self._take(message[1])
            elif message[0] == "error":
                self._fail(f"the lookup process failed: {message[1]}")
                return
            elif message[0] == "done":
                self._attempts = message[1]
                self._fail("the lookup process stopped")  # anything still unanswered
                return

    def _take(self, results: list[tuple[int, str, Observation]]) -> None:
        finished: list[_Batch] = []
        with self._lock:
            for batch_id, name, observation in results:
                if batch_id == _STREAM:
                    self._finished.put((name, observation))
                    self._pending -= 1
                    continue
                batch = self._batches.get(batch_id)
                if batch is None or name in batch.results:
                    continue
                batch.results[name] = observation
                self._pending -= 1
                if len(batch.results) == len(batch.names):
                    finished.append(self._batches.pop(batch_id))
        for batch in finished:
            batch.future.set_result({name: batch.results[name] for name in batch.names})

    def _fail(self, why: str) -> None:
        """Fail every unfinished batch (nothing of theirs may be applied) and any later one."""
        with self._lock:
            if self._failure is None:
                self._failure = why
            batches = list(self._batches.values())
            self._batches.clear()
            streamed = self._pending - sum(len(b.names) - len(b.results) for b in batches)
            self._pending = 0
        if streamed:
            self._finished.put((None, LookupProcessError(why)))
        if batches or streamed:
            log.error("sweep lookups lost: %s", why)
        for batch in batches:
            batch.future.set_exception(LookupProcessError(why))

    def _stop_child(self) -> None:
        process = self._process
        if process is not None:
            process.join(timeout=self._limits.timeout + 5.0)
            if process.is_alive():
                process.kill()
                process.join()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Batch:
    """One submitted batch: its future, its names in order, the observations so far."""

    __slots__ = ("future", "names", "results")

    def __init__(self, future: concurrent.futures.Future[dict[str, Observation]], names: list[str]):
        self.future = future
        self.names = names
        self.results: dict[str, Observation] = {}


# -- the child --------------------------------------------------------------------------------


def _child_main(conn: Connection, new_lookups: Callable[[], Lookups]) -> None:
    """The child's whole life: serve lookups, then leave without running the parent's exit
    code (its database connections, ``atexit`` handlers and finalizers are not the child's)."""
    # Ctrl-C reaches the whole process group: the parent stops the sweep and then the child,
    # which finishes its lookups in flight rather than dying in the middle of one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent's own SIGTERM handler (a host's, a task queue's) is not the child's to run.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 0
    try:
        asyncio.run(_serve(conn, new_lookups))
    except BaseException as exc:  # reported by the parent as the child ending
        code = 1
        # If the pipe is gone too, the exit code tells.
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        try:
            conn.close()
        finally:
            os._exit(code)


async def _serve(conn: Connection, new_lookups: Callable[[], Lookups]) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def receive() -> None:
        # A thread of the child's own, so that a large message never blocks the event loop.
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = ("stop",)
            loop.call_soon_threadsafe(inbox.put_nowait, message)
            if message[0] == "stop":
                return

    async with new_lookups() as lookups:
        outbox = _Outbox(conn, lookups)
        conn.send(("ready",))
        threading.Thread(target=receive, name="domainguard-lookups-inbox", daemon=True).start()
        tasks: set[asyncio.Task[None]] = set()

        async def one(batch_id: int, name: str) -> None:
            observation = await lookups.observe(name)
            outbox.add(batch_id, name, observation)

        while True:
            message = await inbox.get()
            if message[0] == "stop":
                break
            _, batch_id, names = message
            for name in names:
                task = asyncio.ensure_future(one(batch_id, name))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        # A sweep stops its lookups once it has applied all it claimed, or when it fails:
        # then what is still running is of no use to anyone, and waiting for it (up to the
        # longest a lookup may take) would only hold up the failing run.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        outbox.flush()
        conn.send(("done", lookups.attempts))


class _Outbox:
    """Finished observations, sent to the parent every few milliseconds or few hundred."""

    def __init__(self, conn: Connection, lookups: Lookups) -> None:
        self._conn = conn
        self._lookups = lookups
        self._items: list[tuple[int, str, Observation]] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, batch_id: int, name: str, observation: Observation) -> None:
        self._items.append((batch_id, name, observation))
        if len(self._items) >= _FLUSH_SIZE:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(_FLUSH_EVERY, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._items = self._items, []
        if not items:
            return
        try:
            payload = pickle.dumps(("results", items, self._lookups.attempts))
            # Read back here (about 1.5 µs per observation): some objects pickle but do not
            # unpickle (an exception whose __init__ takes keyword-only arguments, such as
            # httpx.HTTPStatusError), and the parent must never meet one.
            pickle.loads(payload)  # noqa: S301 - the bytes just made here
        except Exception:
            portable = [_portable(item) for item in items]
            payload = pickle.dumps(("results", portable, self._lookups.attempts))
        self._conn.send_bytes(payload)


def _portable(item: tuple[int, str, Observation]) -> tuple[int, str, Observation]:
    """``item`` itself if it pickles and unpickles, else a failed lookup: a host backend's
    observation that cannot cross the pipe tells the sweep nothing, so it must not read as an
    answer."""
    try:
        pickle.loads(pickle.dumps(item))  # noqa: S301 - our own bytes
    except Exception as exc:
        batch_id, name, observation = item
        failed = Observation.failed(
            name,
            f"the observation could not be passed between processes ({type(exc).__name__})",
            source=getattr(observation, "source", None) or "unknown",
        )
        return batch_id, name, failed
    return item
