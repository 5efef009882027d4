"""The sweep: look up every registrable domain that is due, judge it, act on the verdicts.

One engine, in steps that can run separately (a task queue can give each chunk to a worker
and call :meth:`Sweep.finish` once at the end, with the same ``run_id``; see
:mod:`flask_domainguard.contrib.celery`, which splits a run with :meth:`Sweep.chunk_ranges`
and sweeps each range with ``Sweep(..., name_range=...).run(finish=False)``):

1. :meth:`Sweep.claim_batch` leases due domains to this run. A domain is due when at least
   one verified address uses it, it is not trusted, its ``next_check_at`` has come and no live
   sweeper holds its lease. On PostgreSQL the claim is ``SELECT ... FOR UPDATE SKIP LOCKED``
   inside one ``UPDATE``; on SQLite one ``UPDATE ... WHERE <lease free>``, which SQLite runs
   under its write lock. Either way two sweepers never get the same domain (:mod:`.store`).
2. :meth:`Sweep.lookup_batch` looks the claimed domains up (one lookup per registrable
   domain, however many addresses share it) within the limits of
   :mod:`flask_domainguard.lookups`.
3. :meth:`Sweep.apply_results` judges every verified address of each domain, stores the
   observation, verdict and next check (:mod:`.schedule`), journals verdict changes, mails
   expiry warnings (:mod:`.notices`) and *plans* the unverifications that passed the
   confirmation rule, all in one transaction per batch (a crash loses at most the batch in
   flight; its leases expire and the next run carries on).
4. :meth:`Sweep.finish` applies the run's planned unverifications through the circuit breaker
   (:mod:`.breaker`); held ones wait for :func:`~.held.apply_held` or
   :func:`~.held.dismiss_held`.

Guard rails: an unsafe verdict acts only when a second check at least
``DOMAINGUARD_CONFIRM_AFTER`` after the first still finds it unsafe; a safe verdict in between
starts over. A failed lookup changes nothing but the schedule (backoff, capped at a day).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..dnsevidence import dns_lookup
from ..domainstate import (
    policy_of,
)
from ..jobs import EXPIRY_WARNING, UNVERIFY_NOTICE
from ..jobs import drain as drain_jobs
from ..lookupprocess import LookupProcess, choose_worker
from ..lookups import LookupLimits
from ..lookupthread import LookupThread
from ..owners import new_run_id, owner_alive
from ..status.observation import Observation
from ..timeutil import as_utc, utcnow
from . import breaker
from .apply import BatchApplier
from .report import SweepReport
from .runs import RunRecord
from .store import Claim, SweepStore

if TYPE_CHECKING:
    from ..context import Guard
    from ..status.base import StatusBackend

__all__ = ["APPLY_WITHIN", "MAX_BATCHES_IN_FLIGHT", "Sweep"]

log = logging.getLogger(__name__)

#: Batches' worth of claimed domains that may be unapplied at once (each holds its lease).
MAX_BATCHES_IN_FLIGHT = 16

#: Seconds a finished lookup waits for others to fill its batch before it is applied anyway:
#: a few slow retries must not hold back the observations that are in.
APPLY_WITHIN = 0.5


class Sweep:
    """One sweep run (see the module docstring); use inside the app context.

    :param guard: the extension.
    :param backend: a status backend; default ``guard.status_backend(backend_name)``.
    :param backend_name: ``--backend``; ``None`` uses ``DOMAINGUARD_STATUS_BACKEND``.
    :param run_id: the run's name; chunks of one run share it (the circuit breaker counts
        the run's planned unverifications by it).
    :param cutoff: domains due at or before this moment belong to the run (default now);
        chunks of one run share it, so that no domain is checked twice in a run.
    :param lease_owner: whom the claimed domains are leased to (default ``run_id``); chunks
        of one run running at once give each its own (:func:`new_run_id`), so that a chunk
        whose leases lapsed and were taken over drops its results.
    :param name_range: ``(first, stop)``: only domains with ``first <= name < stop`` (either
        end ``None`` for open), a chunk from :meth:`chunk_ranges`.
    :param dry_run: look up and report, write nothing (no leases either).
    :param concurrency: lookups in flight at once (``DOMAINGUARD_SWEEP_CONCURRENCY``).
    :param retry_base: first retry delay in seconds within the run.
    :param lookups: where the lookups run: ``"thread"``, ``"process"`` (a forked child, see
        :mod:`flask_domainguard.lookupprocess`) or ``"auto"``
        (``DOMAINGUARD_SWEEP_LOOKUPS`` by default).
    """

    def __init__(
        self,
        guard: Guard,
        *,
        backend: StatusBackend | None = None,
        backend_name: str | None = None,
        run_id: str | None = None,
        cutoff: datetime | None = None,
        lease_owner: str | None = None,
        name_range: tuple[str | None, str | None] | None = None,
        dry_run: bool = False,
        concurrency: int | None = None,
        retry_base: float = 0.5,
        lookups: str | None = None,
    ) -> None:
        self.guard = guard
        self.settings = settings = guard.settings
        self.backend = backend if backend is not None else guard.status_backend(backend_name)
        self.run_id = run_id or new_run_id()
        self.lease_owner = lease_owner or self.run_id
        self.cutoff = as_utc(cutoff) if cutoff is not None else utcnow()
        self.dry_run = dry_run
        self.policy = policy_of(settings)
        concurrency = concurrency or settings.sweep_concurrency
        self.limits = LookupLimits(
            concurrency=concurrency,
            per_server=min(settings.sweep_per_server, concurrency),
            rate=settings.sweep_rate,
            retries=settings.sweep_retries,
            timeout=settings.http_timeout,
            retry_base=retry_base,
        )
        self.report = SweepReport(run_id=self.run_id, dry_run=dry_run)
        self.store = SweepStore(
            guard,
            run_id=self.run_id,
            lease_owner=self.lease_owner,
            cutoff=self.cutoff,
            name_range=name_range,
            dry_run=dry_run,
        )
        self.record = RunRecord(guard, self.run_id, dry_run=dry_run)
        self._applier = BatchApplier(self.store, self.report, self.backend)
        self._thread: LookupThread | LookupProcess | None = None
        #: ``"thread"``, ``"process"`` or ``"auto"``, which :meth:`run` settles by the number
        #: of domains due before its first claim (a bare :meth:`lookup_batch` uses a thread).
        self.lookups = lookups or settings.sweep_lookups
        if self.lookups not in ("auto", "thread", "process"):
            raise ValueError(f"lookups must be 'auto', 'thread' or 'process', not {lookups!r}")

    # -- 1. what is due (the SQL is in .store) -----------------------------------------------

    def chunk_ranges(self, size: int) -> list[tuple[str | None, str | None]]:
        """Split the domains due in this run into name ranges of ``size`` domains (the last
        one fewer), for ``Sweep(..., name_range=...)`` on several workers.

        The ranges are open at both ends, so together they cover every name: a domain that
        another sweeper held while the ranges were made still falls into one of them.
        Empty when nothing is due.
        """
        starts = self.store.chunk_starts(size)
        bounds: list[str | None] = [None, *starts[1:], None]
        return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]

    def count_due(self) -> int:
        """Domains due in this run now (for a progress bar)."""
        return self.store.count_due()

    def count_trusted(self) -> int:
        """Trusted registrable domains with verified addresses: never looked up."""
        return self.store.count_trusted()

    def count_leased_elsewhere(self) -> int:
        """Due domains whose lease another live sweeper holds."""
        return self.store.count_leased_elsewhere()

    def count_leftovers(self) -> None:
        """Count, into the report, what other runs hold: due domains they lease and
        unverifications they planned, and how much of each belongs to runs that died (on
        this host, with no such process left; their leases expire and their plans are adopted
        after ``DOMAINGUARD_SWEEP_LEASE``)."""
        leased, planned = self.store.leftovers()
        report = self.report
        report.leased_elsewhere = sum(n for _, n in leased)
        report.leased_by_dead_runs = sum(n for o, n in leased if owner_alive(o) is False)
        report.planned_elsewhere = sum(n for _, n in planned)
        report.planned_by_dead_runs = sum(n for r, n in planned if owner_alive(r) is False)

    def claim_batch(
        self, size: int | None = None, *, names: Sequence[str] | None = None
    ) -> list[Claim]:
        """Lease up to ``size`` due domains (or the given ``names``, due or not) to this run.

        Commits. With ``dry_run`` nothing is leased: the due domains are read in name order.
        """
        return self.store.claim(size or self.settings.sweep_batch_size, names)

    def release(self, names: Iterable[str] | None = None) -> None:
        """Give back this run's leases (all of them, or on ``names``) without checking."""
        self.store.release(names)

    # -- 2. lookups --------------------------------------------------------------------------

    def _lookups(self) -> LookupThread | LookupProcess:
        if self._thread is None:
            in_process = self.lookups == "process"
            worker = LookupProcess if in_process else LookupThread
            self.report.lookups_in = "process" if in_process else "thread"
            self._thread = worker(
                self.backend,
                self.limits,
                dns=dns_lookup(self.settings),
                dns_mode=self.settings.dns_evidence,
            ).start()
        return self._thread

    def submit_lookups(self, names: Iterable[str]) -> Any:
        """Start looking ``names`` up in the background; a future of the observations."""
        return self._lookups().submit(names)

    def lookup_batch(self, names: Iterable[str]) -> dict[str, Observation]:
        """Look ``names`` up (concurrently, within the limits) and return the observations."""
        result: dict[str, Observation] = self.submit_lookups(names).result()
        return result

    def close(self) -> None:
        """Stop the lookup thread and its HTTP client."""
        if self._thread is not None:
            self._thread.close()
            # After closing: a lookup process reports its last count as it stops.
            self.report.attempts = self._thread.attempts
            self._thread = None

    # -- 3. acting on the results (.apply) ----------------------------------------------------

    def apply_results(
        self, claims: Sequence[Claim], observations: dict[str, Observation]
    ) -> SweepReport:
        """Judge, store and schedule a batch of looked-up domains; plan unverifications
        (:meth:`.apply.BatchApplier.apply`). Returns the run's report."""
        self._applier.apply(claims, observations)
        return self.report

    # -- 4. the circuit breaker (.breaker) -------------------------------------------------------

    def finish(self) -> SweepReport:
        """Apply the run's planned unverifications, or hold them all when there are more than
        ``DOMAINGUARD_MAX_UNVERIFY``. Planned actions of runs that died are adopted first."""
        return breaker.finish(self.store, self.report)

    # -- the whole run -----------------------------------------------------------------------

    def run(
        self,
        *,
        limit: int | None = None,
        names: Sequence[str] | None = None,
        on_progress: Callable[[int], None] | None = None,
        finish: bool = True,
    ) -> SweepReport:
        """Claim, look up and apply batch after batch until nothing is due, then finish.

        Observations are applied as they come in, a batch at a time (or sooner, when the
        first of them has waited :data:`APPLY_WITHIN`), and new batches are claimed while
        fewer than two batches' worth of lookups are unfinished: a domain waiting for a few
        retries (with backoff, or a server's Retry-After) holds up no other.

        :param limit: check at most this many domains.
        :param names: check these registrable domains (due or not) instead of the due ones.
        :param finish: call :meth:`finish` at the end; ``False`` for one chunk of a run that
            several workers share (the run's coordinator finishes it once, and counts the
            trusted domains once).
        """
        started = time.monotonic()
        report = self.report
        if finish:
            self.record_start()
            report.skipped_trusted = self.count_trusted() if names is None else 0
            if names is not None:
                trusted = self.settings.trusted_domains
                report.skipped_trusted = sum(1 for name in names if name in trusted)
        if self.lookups == "auto" and self._thread is None:
            due = len(names) if names is not None else self.count_due()
            self.lookups = choose_worker("auto", due if limit is None else min(due, limit))
        batch_size = self.settings.sweep_batch_size
        remaining = limit
        pending_names = list(names) if names is not None else None
        # Leased to this run and not yet applied, by name: what a failure gives back.
        claimed: dict[str, Claim] = {}
        ready: list[tuple[Claim, Observation]] = []
        ready_since = 0.0
        exhausted = False
        try:
            while True:
                while (
                    not exhausted
                    and len(claimed) < MAX_BATCHES_IN_FLIGHT * batch_size
                    and (self._thread is None or self._thread.pending < 2 * batch_size)
                ):
                    size = batch_size if remaining is None else min(batch_size, remaining)
                    if size <= 0:
                        exhausted = True
                        break
                    if pending_names is not None:
                        chunk, pending_names = pending_names[:size], pending_names[size:]
                        claims = self.claim_batch(size, names=chunk) if chunk else []
                        exhausted = not pending_names
                    else:
                        claims = self.claim_batch(size)
                        exhausted = not claims
                    if claims:
                        if remaining is not None:
                            remaining -= len(claims)
                        # A domain claimed again (its lease ran out while it waited) keeps
                        # its one lookup and its first claim, whose time is before that
                        # lookup (a live check since then must still win over it).
                        fresh = [c for c in claims if c.name not in claimed]
                        claimed.update((c.name, c) for c in fresh)
                        if not fresh:
                            break  # only those: wait for their answers before claiming more
                        self._lookups().stream(c.name for c in fresh)
                if not claimed:
                    break
                # A short wait, so that claiming resumes as soon as lookups free up.
                for name, observation in self._lookups().take(timeout=0.05):
                    if not ready:
                        ready_since = time.monotonic()
                    ready.append((claimed[name], observation))
                # Everything due to be applied goes before the next claim: a backlog would only
                # age the leases of the domains waiting in it.
                while ready and (
                    len(ready) >= batch_size
                    or len(ready) == len(claimed)
                    or time.monotonic() - ready_since >= APPLY_WITHIN
                ):
                    batch, ready = ready[:batch_size], ready[batch_size:]
                    ready_since = time.monotonic()
                    self.apply_results([c for c, _ in batch], {c.name: o for c, o in batch})
                    for claim, _ in batch:
                        del claimed[claim.name]
                    if on_progress is not None:
                        on_progress(len(batch))
                    if finish:
                        self.heartbeat()
        except BaseException:
            # Leases of unapplied domains would expire anyway; giving them back now lets the
            # next run start at once.
            self.close()
            self.release(claimed)
            if finish:
                self.record_end(crashed=True)
            raise
        self.close()
        if finish:
            self.finish()
            if not self.dry_run:
                # Warnings and notices queued by a run that died before mailing them.
                left = drain_jobs(self.guard, self.run_id, kinds=(EXPIRY_WARNING, UNVERIFY_NOTICE))
                report.warnings_sent += left.by_kind.get(EXPIRY_WARNING, 0)
                report.notices_sent += left.by_kind.get(UNVERIFY_NOTICE, 0)
                report.errors += left.failed
        if names is None:
            self.count_leftovers()
        report.seconds = time.monotonic() - started
        if finish:
            self.record_end()
        return report

    # -- the run record (.runs: flask domainguard status) -------------------------------------

    def record_start(self, started_at: datetime | None = None) -> None:
        """Write the run's record (``domainguard_sweep_run``) as running; commits."""
        self.record.start(started_at)

    def heartbeat(self) -> None:
        """Refresh the run record's ``heartbeat_at`` (at most every few seconds)."""
        self.record.heartbeat()

    def record_end(self, *, crashed: bool = False) -> None:
        """Store the run's outcome, exit code and report in its record; commits."""
        self.record.end(self.report, self.settings.sweep_failing_share, crashed=crashed)
