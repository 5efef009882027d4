"""Workers' loop: claim due jobs and run them, with shedding and purging on the way."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..owners import new_run_id
from ..sqlcompat import in_chunks
from ..timeutil import utcnow
from .queue import (
    FAILED,
    PENDING,
    PURGE_INTERVAL,
    SHED_INTERVAL,
    ClaimedJob,
    _table,
    claim,
)
from .running import run_claimed_together, runs_together
from .shedding import shed

if TYPE_CHECKING:
    from ..context import Guard


@dataclass
class DrainReport:
    """What a :func:`drain` did."""

    done: int = 0
    failed: int = 0
    shed_unknown: int = 0
    shed_known: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "failed": self.failed,
            "shed_unknown": self.shed_unknown,
            "shed_known": self.shed_known,
            "by_kind": dict(sorted(self.by_kind.items())),
        }


class _Throttle:
    """Lets one caller through per ``interval`` seconds, per process."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last = 0.0

    def ready(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval:
                return False
            self._last = now
            return True


#: Jobs :func:`deliver_now` claims (and runs together, one kind at a time) at once.
DELIVER_CHUNK = 50

_shed_throttle = _Throttle(SHED_INTERVAL)
_purge_throttle = _Throttle(PURGE_INTERVAL)


def purge(guard: Guard) -> int:
    """Delete finished jobs older than ``DOMAINGUARD_JOBS_KEEP``; commits. Returns the count."""
    J = _table(guard)
    cutoff = utcnow() - guard.settings.jobs_keep
    result = guard.db.session.execute(
        sa.delete(J).where(J.c.state != PENDING, J.c.done_at < cutoff)
    )
    guard.db.session.commit()
    return int(result.rowcount)


def housekeeping(guard: Guard, report: DrainReport | None = None) -> None:
    """Shed (at most once a second) and purge (every few minutes) on behalf of this process."""
    if _shed_throttle.ready():
        shed_report = shed(guard)
        if report is not None:
            report.shed_unknown += shed_report.unknown
            report.shed_known += shed_report.known
    if _purge_throttle.ready():
        purge(guard)


def drain(
    guard: Guard,
    owner: str,
    *,
    kinds: Iterable[str] | None = None,
    ids: Iterable[int] | None = None,
    batch: int = 4,
    max_jobs: int | None = None,
    deadline: float | None = None,
    report: DrainReport | None = None,
) -> DrainReport:
    """Claim and run due jobs until none is left (or ``max_jobs`` ran, or ``deadline``, a
    :func:`time.monotonic` value, passed). Sheds load on the way."""
    report = report if report is not None else DrainReport()
    wanted = list(kinds) if kinds is not None else None
    id_list = list(ids) if ids is not None else None
    ran = 0
    while (max_jobs is None or ran < max_jobs) and id_list != []:
        if deadline is not None and time.monotonic() >= deadline:
            break
        if id_list is None:
            housekeeping(guard, report)
        size = batch if max_jobs is None else min(batch, max_jobs - ran)
        jobs = claim(guard, owner, limit=size, kinds=wanted, ids=id_list, commit=False)
        together = runs_together(jobs)
        if not together:  # a batch's claim is committed with its attempts
            _commit_claim(guard)
        if not jobs:
            break
        if id_list is not None:
            # The claim that would find nothing (a query and a commit) is skipped: claimed
            # jobs are not claimable again, and a short claim leaves only given jobs nobody
            # may claim now (another worker's, done, or waiting for a retry).
            claimed = {job.id for job in jobs}
            id_list = [] if len(jobs) < size else [i for i in id_list if i not in claimed]
        by_kind: dict[str, list[ClaimedJob]] = {}
        for job in jobs:
            by_kind.setdefault(job.kind, []).append(job)
        for kind, group in by_kind.items():
            for ok in run_claimed_together(guard, group, owner, claim_committed=not together):
                ran += 1
                if ok:
                    report.done += 1
                    report.by_kind[kind] = report.by_kind.get(kind, 0) + 1
                else:
                    report.failed += 1
    return report


def _commit_claim(guard: Guard) -> None:
    """Commit the claim in the current transaction (rolled back if the commit fails)."""
    try:
        guard.db.session.commit()
    except BaseException:
        guard.db.session.rollback()
        raise


def deliver_now(guard: Guard, ids: Iterable[int]) -> DrainReport:
    """Run the given jobs right away in this thread (a sweep's warnings after its commit, a
    verification mail): whatever fails here stays in the table for the workers."""
    id_list = list(ids)
    report, owner = DrainReport(), new_run_id()
    # Claims of DELIVER_CHUNK: each claim costs two or three commits (the lease, the
    # attempts, the jobs marked done), so a sweep batch's warnings go out in a few claims;
    # small enough that a process dying mid-claim leaves few jobs waiting for their leases to
    # expire and a batch falling back to one job at a time re-sends few mails. Each claim
    # names the ids it may take, a chunk of them at a time (in_chunks): a sweep may queue a
    # job for each of the many users of one domain.
    for chunk in in_chunks(id_list):
        drain(guard, owner, ids=chunk, batch=DELIVER_CHUNK, report=report)
    return report


def retry_failed(guard: Guard) -> int:
    """Put every ``failed`` job back in the queue (due now, attempts counted afresh); commits."""
    J = _table(guard)
    result = guard.db.session.execute(
        sa.update(J)
        .where(J.c.state == FAILED)
        .values(state=PENDING, attempts=0, not_before=utcnow(), done_at=None)
    )
    guard.db.session.commit()
    return int(result.rowcount)


def has_pending_jobs(guard: Guard) -> bool:
    """Whether any job is pending at all, due now or waiting for a retry later."""
    J = _table(guard)
    found = guard.db.session.scalar(sa.select(J.c.id).where(J.c.state == PENDING).limit(1))
    guard.db.session.rollback()
    return found is not None


def has_due_jobs(guard: Guard) -> bool:
    """Whether any job is waiting to run now or running (for waits in tests and start-up)."""
    J = _table(guard)
    now = utcnow()
    found = guard.db.session.scalar(
        sa.select(J.c.id).where(J.c.state == PENDING, J.c.not_before <= now).limit(1)
    )
    guard.db.session.rollback()
    return found is not None
