"""Work done after the response: what keeps every reset answer equally fast.

A reset request may take a live domain lookup (up to ``DOMAINGUARD_RESET_LIVE_TIMEOUT``) and
an SMTP conversation, but only for some addresses. Doing that work in the request would tell
an attacker, by the time it takes, which addresses have accounts. So the request only checks
the form and hands the work to a small thread pool; the requester gets the same answer at
the same speed whatever happens next.

The pool is per app and per process (it is rebuilt after a fork, so pre-forking servers
work), bounded (a flood is dropped rather than queued without end), and each job runs in a
request context rebuilt from the original request, with its own session object, so
``url_for(..., _external=True)``, ``g`` and the host's view code behave as in the request
while nothing they do reaches the response already sent.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable

from flask import Flask, current_app, request
from flask.ctx import RequestContext

log = logging.getLogger(__name__)

_KEY = "domainguard.background"


class BackgroundJobs:
    """A bounded thread pool running jobs inside a copy of the submitting request's context.

    :param app: the app whose context the jobs run in.
    :param workers: threads in the pool.
    :param max_pending: jobs waiting or running at once; more are dropped (and logged).
    """

    def __init__(self, app: Flask, *, workers: int = 2, max_pending: int = 256) -> None:
        self.app = app
        self.workers = workers
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: set[concurrent.futures.Future[None]] = set()

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None or self._pid != os.getpid():
            # A forked worker inherits the parent's pool object but none of its threads.
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="domainguard"
            )
            self._pending = set()
            self._pid = os.getpid()
        return self._pool

    def submit(self, job: Callable[[], None]) -> bool:
        """Run ``job`` later in a copy of the current request's context.

        :returns: ``False`` when the queue is full and the job was dropped.
        """
        req = request._get_current_object()  # type: ignore[attr-defined]
        # Parse the body now: the input stream is gone once the response has been sent.
        req.form  # noqa: B018
        environ = req.environ

        def run() -> None:
            # No session is passed: the copy opens its own from the request's cookie, so
            # whatever the job does to it (a flash message) never races the real response.
            with RequestContext(self.app, environ, request=req):
                try:
                    job()
                except Exception:
                    log.exception("background job failed")

        with self._lock:
            if len(self._pending) >= self.max_pending:
                log.warning("background queue full (%d jobs): job dropped", self.max_pending)
                return False
            future = self._executor().submit(run)
            self._pending.add(future)
        future.add_done_callback(self._done)
        return True

    def _done(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the jobs submitted so far; ``True`` when all finished within ``timeout``."""
        with self._lock:
            pending = set(self._pending)
        if not pending:
            return True
        _, not_done = concurrent.futures.wait(pending, timeout=timeout)
        return not not_done


def jobs_for(app: Flask | None = None) -> BackgroundJobs:
    """The app's job pool, created on first use."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    jobs = app.extensions.get(_KEY)
    if jobs is None:
        jobs = app.extensions.setdefault(_KEY, BackgroundJobs(app))
    return jobs  # type: ignore[no-any-return]
