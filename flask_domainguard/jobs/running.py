"""Running claimed jobs: one at a time or a claim's batch together, and retrying failures."""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..journal import EventKind, transaction
from ..timeutil import utcnow
from .queue import (
    DONE,
    FAILED,
    PENDING,
    RETRY_BASE,
    RETRY_CAP,
    ClaimedJob,
    JobRun,
    _table,
    batch_handler_for,
    claim,
    finish,
    finish_many,
    handler_for,
)

if TYPE_CHECKING:
    from ..context import Guard

log = logging.getLogger(__name__)


def retry_delay(attempts: int) -> timedelta:
    """Delay before the next run of a job that failed ``attempts`` times (at least 1)."""
    delay = min(RETRY_BASE * (2 ** min(max(attempts, 1) - 1, 16)), RETRY_CAP)
    jittered: timedelta = delay * random.uniform(0.9, 1.1)  # noqa: S311 - load spreading
    return jittered


def _failed(guard: Guard, run: JobRun, exc: BaseException) -> str:
    """Schedule the next run of a job that raised, or give it up; journal a failed delivery."""
    job, db = run.job, guard.db
    J = _table(guard)
    error = type(exc).__name__  # the type only: messages may carry addresses or URLs
    give_up = job.attempts >= guard.settings.jobs_max_attempts
    retry_at = None if give_up else utcnow() + retry_delay(job.attempts)
    with transaction(db, guard.models) as tx:
        if give_up:
            updated = finish(guard, job.id, run.owner, FAILED, error)
        else:
            updated = (
                db.session.execute(
                    sa.update(J)
                    .where(J.c.id == job.id, J.c.lease_owner == run.owner, J.c.state == PENDING)
                    .values(
                        not_before=retry_at, lease_owner=None, lease_until=None, last_error=error
                    )
                ).rowcount
                == 1
            )
        if updated and (run.attempted or give_up):
            tx.record(
                EventKind.MAIL_FAILED,
                actor="worker",
                address=job.address,
                job=job.id,
                job_kind=job.kind,
                attempt=job.attempts,
                error=error,
                retry_at=retry_at.isoformat() if retry_at else None,
            )
    what = (job.id, job.kind, job.attempts, error)
    if give_up:
        log.error("job %d (%s) failed for good after %d runs: %s", *what)
    else:
        log.warning("job %d (%s) failed (run %d): %s; retried later", *what)
    return FAILED if give_up else PENDING


def run_claimed(guard: Guard, job: ClaimedJob, owner: str) -> bool:
    """Run one claimed job in the current app context; ``True`` when it finished.

    A job that raises is rolled back and scheduled again (or given up); the error is logged
    by type, never by message.
    """
    run = JobRun(guard, job, owner)
    try:
        handler_for(job.kind)(guard, run)
        if not run.marked_done:
            finish(guard, job.id, owner, DONE)
            guard.db.session.commit()
    except Exception as exc:
        guard.db.session.rollback()
        try:
            _failed(guard, run, exc)
        except Exception:  # the database itself is gone: the lease expires, the job reruns
            guard.db.session.rollback()
            log.exception("could not record the failure of job %d", job.id)
        return False
    return True


def runs_together(jobs: list[ClaimedJob]) -> bool:
    """Whether :func:`run_claimed_together` runs ``jobs`` (a claim's) as one batch: several
    jobs, all of one kind that has a batch handler."""
    kind = jobs[0].kind if jobs else None
    return (
        len(jobs) > 1
        and all(job.kind == kind for job in jobs)
        and batch_handler_for(jobs[0].kind) is not None
    )


def run_claimed_together(
    guard: Guard, jobs: list[ClaimedJob], owner: str, *, claim_committed: bool = True
) -> list[bool]:
    """Run claimed jobs of one kind; together when the kind has a batch handler.

    A batch commits its attempts once and marks every job done in one statement. If it
    raises, each job runs alone (:func:`run_claimed`), so a bad job fails by itself; a mail
    the batch had already handed to SMTP is then sent again: at least once, never nothing.

    :param claim_committed: false when the claim of a batch (:func:`runs_together`) is not
        committed yet: the batch's attempts commit it (one commit fewer per claim). A batch
        that fails before that commit has sent nothing, and its rollback gave the jobs back
        as they were: they are claimed again, committed, and run one by one.
    """
    batch = batch_handler_for(jobs[0].kind) if len(jobs) > 1 else None
    if batch is None:
        return [run_claimed(guard, job, owner) for job in jobs]
    runs = [JobRun(guard, job, owner) for job in jobs]
    try:
        batch(guard, runs)
        finish_many(guard, [run.job.id for run in runs if not run.marked_done], owner)
        guard.db.session.commit()
    except Exception as exc:
        guard.db.session.rollback()
        log.warning(
            "a batch of %d %s jobs failed (%s); running them one by one",
            len(jobs),
            jobs[0].kind,
            type(exc).__name__,
        )
        if not claim_committed and not any(run.attempted for run in runs):
            try:
                jobs = claim(guard, owner, limit=len(jobs), ids=[job.id for job in jobs])
            except Exception:  # the database itself is gone: the jobs wait, unclaimed
                log.exception("could not claim the jobs of a failed batch again")
                return [False] * len(jobs)
        return [run_claimed(guard, job, owner) for job in jobs]
    return [True] * len(jobs)
