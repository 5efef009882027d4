"""The in-process workers: threads in each app process that drain the job table.

A reset request may take a live domain lookup (up to ``DOMAINGUARD_RESET_LIVE_TIMEOUT``) and
an SMTP conversation, but only for some addresses. Doing that work in the request would tell
an attacker, by the time it takes, which addresses have accounts. So the request only checks
the form and writes one row to the job table (:mod:`.jobs`); the requester gets the same
answer at the same speed whatever happens next, and the row outlives a crash.

These threads are the default worker, enough for small sites: ``DOMAINGUARD_JOBS_WORKERS``
per process (0: none; drain the table with Celery or ``flask domainguard jobs --drain``).
They start on the first job this process writes, or on its first request when the table
holds due jobs (left by a process that died), and are rebuilt after a fork, so pre-forking
servers work. Woken at once when this process writes a job, they also look every
``DOMAINGUARD_JOBS_POLL`` seconds for retries and for jobs other processes wrote, and stop
after a minute with nothing to do and no job waiting in the table.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from flask import Flask, current_app

from .context import current_guard, current_settings
from .runid import new_run_id

log = logging.getLogger(__name__)

_KEY = "domainguard.background"

#: Jobs a thread claims at once (each one's lease covers the others' run time).
CLAIM_BATCH = 4
#: An idle thread ends after this many seconds without work; the next job starts it again.
IDLE_EXIT = 60.0


class JobWorkers:
    """A few threads that drain the job table for one app, in this process.

    :param app: the app whose context the jobs run in.
    :param threads: how many threads (``DOMAINGUARD_JOBS_WORKERS``).
    """

    def __init__(self, app: Flask, *, threads: int) -> None:
        self.app = app
        self.threads = threads
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pid = os.getpid()
        self._alive: set[threading.Thread] = set()
        self._busy = 0
        self._signals = 0
        self._stopping = False
        self._checked_at_start = False
        #: Called on every :meth:`wake` (e.g. to send a Celery task that drains the table).
        self.on_wake: list[Callable[[], object]] = []

    # -- life cycle ------------------------------------------------------------------------

    def _start_locked(self) -> None:
        if self._pid != os.getpid():
            # A forked worker inherits the parent's bookkeeping but none of its threads.
            self._pid = os.getpid()
            self._alive = set()
            self._busy = 0
        self._alive = {t for t in self._alive if t.is_alive()}
        while not self._stopping and len(self._alive) < self.threads:
            thread = threading.Thread(
                target=self._loop, name=f"domainguard-worker-{len(self._alive)}", daemon=True
            )
            self._alive.add(thread)
            thread.start()

    def wake(self) -> None:
        """Start the threads if needed and tell them a job is waiting."""
        for callback in self.on_wake:
            try:
                callback()
            except Exception:  # the job is in the table: a poll or beat finds it later
                log.exception("job worker: a wake-up callback failed")
        if self.threads <= 0:
            return
        with self._lock:
            self._start_locked()
            self._signals += 1
            self._wake.notify()

    def start_if_work(self) -> None:
        """On this process's first request: start the threads when due jobs are waiting."""
        if self._checked_at_start or (self.threads <= 0 and not self.on_wake):
            return
        self._checked_at_start = True
        from .jobs import has_due_jobs

        guard = current_guard()
        try:
            due = has_due_jobs(guard)
        except Exception:
            # A page must not fail for this (a migration not applied yet, a database hiccup):
            # the next enqueue wakes the workers anyway.
            guard.db.session.rollback()
            log.exception("job worker: could not look for jobs left by another process")
            return
        if due:
            self.wake()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads (tests, shutdown); running jobs finish first."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            threads = list(self._alive)
        for thread in threads:
            thread.join(timeout)

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        from .jobs import DrainReport, drain

        owner = new_run_id()
        idle_since = time.monotonic()
        while True:
            with self._lock:
                if self._stopping:
                    break
                seen = self._signals
                self._busy += 1
            done = 0
            try:
                with self.app.app_context():
                    guard = current_guard(self.app)
                    report = drain(guard, owner, batch=CLAIM_BATCH, report=DrainReport())
                    done = report.done + report.failed + report.shed_unknown + report.shed_known
            except Exception:
                log.exception("job worker: draining the job table failed")
            with self._lock:
                self._busy -= 1
                if self._stopping:
                    break
                if done:
                    idle_since = time.monotonic()
                    continue
                if time.monotonic() - idle_since >= IDLE_EXIT:
                    if not self._retries_waiting():
                        break
                    idle_since = time.monotonic()  # a retry is due later: keep watching
                if self._signals == seen:
                    poll = current_settings(self.app).jobs_poll
                    self._wake.wait(poll)
        with self._lock:
            self._alive.discard(threading.current_thread())

    def _retries_waiting(self) -> bool:
        from .jobs import has_pending_jobs

        try:
            with self.app.app_context():
                return has_pending_jobs(current_guard(self.app))
        except Exception:
            return False

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no job is due or running; ``True`` when that happened within ``timeout``.

        Jobs waiting for a retry later do not count.
        """
        from .jobs import has_due_jobs

        deadline = None if timeout is None else time.monotonic() + timeout
        guard = current_guard(self.app)
        while True:
            with self.app.app_context():
                due = has_due_jobs(guard)
            with self._lock:
                busy = self._busy
            if not due and not busy:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if due and self.threads > 0:
                self.wake()
            time.sleep(0.02)


def jobs_for(app: Flask | None = None) -> JobWorkers:
    """The app's worker threads in this process, created (not started) on first use."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    workers = app.extensions.get(_KEY)
    if workers is None:
        threads = current_settings(app).jobs_workers
        workers = app.extensions.setdefault(_KEY, JobWorkers(app, threads=threads))
    return workers  # type: ignore[no-any-return]


def stop_workers(app: Flask) -> None:
    """Stop ``app``'s worker threads in this process, if any were made."""
    workers = app.extensions.get(_KEY)
    if workers is not None:
        workers.stop()
