"""The durable job table: work promised by a commit is done at least once, or journalled.

A reset request, a verification mail, an expiry warning and an unverify notice each become a
row of ``domainguard_job``, written in the same transaction as the state change (and journal
row) that causes it: the transactional-outbox pattern. A crash after that commit loses
nothing; a crash before it loses the change and the job together.

Workers (the in-process thread pool of :mod:`.background`, the Celery task of
:mod:`flask_domainguard.contrib.celery`, ``flask domainguard jobs --drain``) take rows as the
sweep takes domains: :func:`claim` leases due rows to one owner, with ``SELECT ... FOR UPDATE
SKIP LOCKED`` on PostgreSQL and one ``UPDATE ... WHERE <lease free>`` under SQLite's write
lock, so two workers never hold the same job. A job that raises is tried again after a
backoff (30 s, doubling, capped at an hour) up to ``DOMAINGUARD_JOBS_MAX_ATTEMPTS`` runs,
then marked ``failed``; a job whose worker died runs again once its lease
(``DOMAINGUARD_JOBS_LEASE``) has expired.

Mail is sent at least once: each delivery attempt is journalled (``mail_attempt``) and
committed before the SMTP conversation starts, and the job is marked done after it, so a
crash in between sends one duplicate, never nothing. The journal row that says what was
decided (``expiry_warning_sent``, ``reset_sent``, ...) is written once: with the job, or in
the same transaction that marks the job done.

Reset requests for the same address coalesce into one waiting job (``dedupe_key``). Past
``DOMAINGUARD_JOBS_MAX_PENDING`` waiting reset requests the workers shed load
(:func:`shed`): requests for unknown addresses first (nothing is lost: no mail would have
gone out), then the newest requests for known accounts, each with a ``reset_shed`` journal
row. Shed rows stay in the table (state ``shed``) and are counted by ``flask domainguard
status``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from .journal import EventKind, transaction
from .models import MYSQL_DIALECTS
from .runid import new_run_id
from .sqlcompat import locked_ids, update_returning
from .timeutil import utcnow

if TYPE_CHECKING:
    from .context import Guard

__all__ = [
    "EXPIRY_WARNING",
    "RESET_REQUEST",
    "UNVERIFY_NOTICE",
    "VERIFICATION_MAIL",
    "ClaimedJob",
    "DrainReport",
    "JobRun",
    "claim",
    "drain",
    "enqueue",
    "enqueue_many",
    "job_stats",
    "register",
    "retry_failed",
    "run_claimed",
    "shed",
]

log = logging.getLogger(__name__)

PENDING = "pending"
DONE = "done"
FAILED = "failed"
SHED = "shed"

RESET_REQUEST = "reset_request"
VERIFICATION_MAIL = "verification_mail"
EXPIRY_WARNING = "expiry_warning"
UNVERIFY_NOTICE = "unverify_notice"
KINDS = (RESET_REQUEST, VERIFICATION_MAIL, EXPIRY_WARNING, UNVERIFY_NOTICE)

#: First retry delay after a failed run; doubled per failed run, capped, with jitter.
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)

#: Shedding looks at the queue at most this often per process (it costs a count query).
SHED_INTERVAL = 1.0
#: Finished rows older than DOMAINGUARD_JOBS_KEEP are deleted at most this often per process.
PURGE_INTERVAL = 300.0


@dataclass(frozen=True)
class ClaimedJob:
    """A job row leased to one worker (a snapshot; the row may change under it)."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    address: str | None
    requests: int


class JobRun:
    """One run of a claimed job: what a handler uses to journal its attempt and to mark the
    job done inside its own final transaction.

    :param guard: the extension.
    :param job: the claimed job.
    :param owner: the lease owner that claimed it.
    """

    def __init__(self, guard: Guard, job: ClaimedJob, owner: str) -> None:
        self.guard = guard
        self.job = job
        self.owner = owner
        self.attempted = False
        self.marked_done = False

    def record_attempt(
        self, *, recipients: int, user_id: Any = None, address: Any = None, **details: Any
    ) -> None:
        """Journal (and commit) a delivery attempt, just before the mail is handed to SMTP."""
        with transaction(self.guard.db, self.guard.models) as tx:
            tx.record(
                EventKind.MAIL_ATTEMPT,
                actor="worker",
                user_id=user_id,
                address=address,
                job=self.job.id,
                job_kind=self.job.kind,
                attempt=self.job.attempts,
                recipients=recipients,
                **details,
            )
        self.attempted = True

    def mark_done(self) -> None:
        """Mark the job done in the current transaction (committed with the caller's)."""
        _finish(self.guard, self.job.id, self.owner, DONE)
        self.marked_done = True


Handler = Callable[["Guard", JobRun], None]
_HANDLERS: dict[str, Handler] = {}


def register(kind: str) -> Callable[[Handler], Handler]:
    """Register the function that runs jobs of ``kind`` (it raises to ask for a retry)."""

    def decorate(fn: Handler) -> Handler:
        _HANDLERS[kind] = fn
        return fn

    return decorate


def _handler(kind: str) -> Handler:
    if kind not in _HANDLERS:
        # The modules that own the kinds register their handlers when imported.
        from . import notices, reset, verification  # noqa: F401
    try:
        return _HANDLERS[kind]
    except KeyError:
        raise LookupError(f"no handler for job kind {kind!r}") from None


def _table(guard: Guard) -> sa.Table:
    table: sa.Table = guard.models.Job.__table__  # type: ignore[attr-defined]
    return table


def _dialect(guard: Guard) -> str:
    bind = guard.db.session.get_bind(mapper=sa.inspect(guard.models.Job))
    return str(bind.dialect.name)


def digest(text: str) -> str:
    """A digest of ``text`` for dedupe keys (addresses do not belong in a unique index)."""
    return hashlib.sha256(text.encode()).hexdigest()[:48]


# -- writing -------------------------------------------------------------------------------


def enqueue(
    guard: Guard,
    kind: str,
    payload: dict[str, Any],
    *,
    address: str | None = None,
    dedupe_key: str | None = None,
    not_before: datetime | None = None,
) -> int:
    """Add a job in the current transaction (the caller commits it with its change).

    With ``dedupe_key``, a job with the same key still waiting for its first run absorbs
    this one instead (its ``requests`` count goes up): the same statement either way.

    :returns: the id of the job that will do the work.
    """
    J = _table(guard)
    now = utcnow()
    values = {
        "kind": kind,
        "payload": payload,
        "address": address,
        "dedupe_key": dedupe_key,
        "requests": 1,
        "state": PENDING,
        "attempts": 0,
        "not_before": not_before or now,
        "created_at": now,
    }
    session = guard.db.session
    if dedupe_key is None:
        return _insert(session, J, values)
    dialect = _dialect(guard)
    if dialect in MYSQL_DIALECTS:
        session.execute(
            mysql_insert(J).values(values).on_duplicate_key_update(requests=J.c.requests + 1)
        )
        return int(session.scalar(sa.select(J.c.id).where(J.c.dedupe_key == dedupe_key)))
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
        stmt = (
            insert(J)
            .values(values)
            .on_conflict_do_update(
                index_elements=[J.c.dedupe_key], set_={"requests": J.c.requests + 1}
            )
            .returning(J.c.id)
        )
        return int(session.execute(stmt).scalar_one())
    try:  # pragma: no cover - other databases: a savepoint and the unique index
        with session.begin_nested():
            return _insert(session, J, values)
    except IntegrityError:  # pragma: no cover
        session.execute(
            sa.update(J).where(J.c.dedupe_key == dedupe_key).values(requests=J.c.requests + 1)
        )
        return int(session.scalar(sa.select(J.c.id).where(J.c.dedupe_key == dedupe_key)))


def enqueue_many(guard: Guard, kind: str, payloads: list[dict[str, Any]]) -> list[int]:
    """Add one job of ``kind`` per payload in the current transaction, in one statement where
    the database returns the new ids of a many-row insert (a sweep batch's warnings).

    :returns: the jobs' ids, in the order of ``payloads``.
    """
    if not payloads:
        return []
    J = _table(guard)
    now = utcnow()
    rows = [
        {
            "kind": kind,
            "payload": payload,
            "requests": 1,
            "state": PENDING,
            "attempts": 0,
            "not_before": now,
            "created_at": now,
        }
        for payload in payloads
    ]
    session = guard.db.session
    bind = session.get_bind(mapper=sa.inspect(guard.models.Job))
    if not bind.dialect.insert_executemany_returning_sort_by_parameter_order:
        return [_insert(session, J, row) for row in rows]  # MySQL: no RETURNING on INSERT
    stmt = sa.insert(J).returning(J.c.id, sort_by_parameter_order=True)
    return [int(row[0]) for row in session.execute(stmt, rows)]


def _insert(session: Any, J: sa.Table, values: dict[str, Any]) -> int:
    # inserted_primary_key works on every database; RETURNING on INSERT is not in MySQL.
    return int(session.execute(sa.insert(J).values(values)).inserted_primary_key[0])


# -- claiming and finishing ----------------------------------------------------------------


def _claimable(J: sa.Table, now: datetime) -> list[sa.ColumnElement[bool]]:
    return [
        J.c.state == PENDING,
        J.c.not_before <= now,
        sa.or_(J.c.lease_until.is_(None), J.c.lease_until < now),
    ]


def claim(
    guard: Guard,
    owner: str,
    *,
    limit: int = 1,
    kinds: Iterable[str] | None = None,
    ids: Iterable[int] | None = None,
) -> list[ClaimedJob]:
    """Lease up to ``limit`` due jobs (of ``kinds``, or with ``ids``) to ``owner``; commits.

    Each claim counts as an attempt, so a job whose worker dies mid-run counts too.
    """
    J = _table(guard)
    db = guard.db
    now = utcnow()
    where = _claimable(J, now)
    if kinds is not None:
        where.append(J.c.kind.in_(list(kinds)))
    if ids is not None:
        where.append(J.c.id.in_(list(ids)))
    pick = sa.select(J.c.id).where(*where).order_by(J.c.not_before, J.c.id).limit(limit)
    session, dialect = db.session, _dialect(guard)
    try:
        rows = update_returning(
            session,
            dialect,
            J,
            J.c.id,
            [J.c.id.in_(locked_ids(session, dialect, pick)), *where],
            {
                "lease_owner": owner,
                "lease_until": now + guard.settings.jobs_lease,
                "attempts": J.c.attempts + 1,
                # A new request for the same work starts a new job from now on.
                "dedupe_key": None,
            },
            [J.c.id, J.c.kind, J.c.payload, J.c.attempts, J.c.address, J.c.requests],
        )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    jobs = [ClaimedJob(r[0], r[1], dict(r[2] or {}), int(r[3]), r[4], int(r[5])) for r in rows]
    return sorted(jobs, key=lambda job: job.id)


def _finish(guard: Guard, job_id: int, owner: str, state: str, error: str | None = None) -> bool:
    J = _table(guard)
    result = guard.db.session.execute(
        sa.update(J)
        .where(J.c.id == job_id, J.c.lease_owner == owner, J.c.state == PENDING)
        .values(
            state=state,
            done_at=utcnow(),
            lease_owner=None,
            lease_until=None,
            last_error=error,
            dedupe_key=None,
        )
    )
    return bool(result.rowcount == 1)


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
            updated = _finish(guard, job.id, run.owner, FAILED, error)
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
        _handler(job.kind)(guard, run)
        if not run.marked_done:
            _finish(guard, job.id, owner, DONE)
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


# -- shedding ------------------------------------------------------------------------------


@dataclass
class ShedReport:
    """What one :func:`shed` pass dropped."""

    unknown: int = 0
    known: int = 0

    @property
    def total(self) -> int:
        return self.unknown + self.known


def _waiting_resets(J: sa.Table, now: datetime) -> list[sa.ColumnElement[bool]]:
    return [
        J.c.kind == RESET_REQUEST,
        J.c.state == PENDING,
        sa.or_(J.c.lease_until.is_(None), J.c.lease_until < now),
    ]


def shed(guard: Guard) -> ShedReport:
    """Drop waiting reset requests beyond ``DOMAINGUARD_JOBS_MAX_PENDING``; commits.

    Requests for addresses nobody has go first: they would mail nothing, so dropping them
    loses nothing. If the requests for known addresses alone still exceed the depth, the
    newest of them are dropped too, each with a ``reset_shed`` journal row for its account
    (support sees it; the user may ask again). Both are counted (rows in state ``shed``).
    """
    db, settings = guard.db, guard.settings
    J = _table(guard)
    A = guard.models.EmailAddress.__table__  # type: ignore[attr-defined]
    now = utcnow()
    report = ShedReport()
    waiting = _waiting_resets(J, now)
    depth = int(db.session.scalar(sa.select(sa.func.count()).select_from(J).where(*waiting)) or 0)
    if depth <= settings.jobs_max_pending:
        db.session.rollback()
        return report
    try:
        unknown = db.session.execute(
            sa.update(J)
            .where(*waiting, ~sa.exists().where(A.c.address == J.c.address))
            .values(state=SHED, done_at=now, dedupe_key=None, last_error="shed: unknown address")
        )
        report.unknown = int(unknown.rowcount)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    excess = depth - report.unknown - settings.jobs_max_pending
    if excess > 0:
        pick = sa.select(J.c.id).where(*waiting).order_by(J.c.id.desc()).limit(excess)
        EmailAddress = guard.models.EmailAddress
        with transaction(db, guard.models) as tx:
            session, dialect = db.session, _dialect(guard)
            rows = update_returning(
                session,
                dialect,
                J,
                J.c.id,
                [J.c.id.in_(locked_ids(session, dialect, pick)), *waiting],
                {
                    "state": SHED,
                    "done_at": now,
                    "dedupe_key": None,
                    "last_error": "shed: queue full",
                },
                [J.c.id, J.c.address, J.c.requests],
            )
            found = {
                row.address: row
                for row in db.session.scalars(
                    sa.select(EmailAddress).where(EmailAddress.address.in_([r[1] for r in rows]))
                )
            }
            for job_id, address, requests in rows:
                tx.record(
                    EventKind.RESET_SHED,
                    actor="worker",
                    address=found.get(address, address),
                    job=job_id,
                    requests=int(requests),
                    depth=depth,
                )
            report.known = len(rows)
    if report.total:
        log.warning(
            "job queue over DOMAINGUARD_JOBS_MAX_PENDING (%d waiting reset requests, limit %d): "
            "shed %d for unknown addresses and %d for known accounts (journalled)",
            depth,
            settings.jobs_max_pending,
            report.unknown,
            report.known,
        )
    return report


# -- draining ------------------------------------------------------------------------------


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
    while max_jobs is None or ran < max_jobs:
        if deadline is not None and time.monotonic() >= deadline:
            break
        if id_list is None:
            housekeeping(guard, report)
        size = batch if max_jobs is None else min(batch, max_jobs - ran)
        jobs = claim(guard, owner, limit=size, kinds=wanted, ids=id_list)
        if not jobs:
            break
        for job in jobs:
            ok = run_claimed(guard, job, owner)
            ran += 1
            if ok:
                report.done += 1
                report.by_kind[job.kind] = report.by_kind.get(job.kind, 0) + 1
            else:
                report.failed += 1
    return report


def deliver_now(guard: Guard, ids: Iterable[int]) -> DrainReport:
    """Run the given jobs right away in this thread (a sweep's warnings after its commit, a
    verification mail): whatever fails here stays in the table for the workers."""
    id_list = list(ids)
    if not id_list:
        return DrainReport()
    # Small claims: a worker that dies leaves few jobs waiting for their leases to expire.
    return drain(guard, new_run_id(), ids=id_list, batch=10)


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


# -- figures -------------------------------------------------------------------------------


def job_stats(guard: Guard) -> dict[str, Any]:
    """The queue in figures: pending jobs by kind, the oldest one's age, jobs running and by
    whom, failed jobs, and jobs and requests shed within ``DOMAINGUARD_JOBS_KEEP``."""
    J = _table(guard)
    db = guard.db
    now = utcnow()
    pending: dict[str, int] = dict.fromkeys(KINDS, 0)
    for kind, count in db.session.execute(
        sa.select(J.c.kind, sa.func.count()).where(J.c.state == PENDING).group_by(J.c.kind)
    ):
        pending[kind] = int(count)
    # ORDER BY ... LIMIT 1 rather than MIN(): an aggregate loses the column's type on SQLite.
    oldest = db.session.scalar(
        sa.select(J.c.created_at).where(J.c.state == PENDING).order_by(J.c.created_at).limit(1)
    )
    running: dict[str, int] = {}
    for owner, count in db.session.execute(
        sa.select(J.c.lease_owner, sa.func.count())
        .where(J.c.state == PENDING, J.c.lease_until >= now)
        .group_by(J.c.lease_owner)
    ):
        running[str(owner)] = int(count)
    by_state: dict[str, tuple[int, int]] = {}
    for state, count, requests in db.session.execute(
        sa.select(J.c.state, sa.func.count(), sa.func.coalesce(sa.func.sum(J.c.requests), 0))
        .where(J.c.state != PENDING)
        .group_by(J.c.state)
    ):
        by_state[str(state)] = (int(count), int(requests))
    retrying = int(
        db.session.scalar(
            sa.select(sa.func.count()).where(J.c.state == PENDING, J.c.not_before > now)
        )
        or 0
    )
    db.session.rollback()
    return {
        "pending": sum(pending.values()),
        "pending_by_kind": pending,
        "oldest_pending_seconds": round((now - oldest).total_seconds(), 1) if oldest else None,
        "retrying": retrying,
        "running": sum(running.values()),
        "running_by_owner": running,
        "done": by_state.get(DONE, (0, 0))[0],
        "failed": by_state.get(FAILED, (0, 0))[0],
        "shed": by_state.get(SHED, (0, 0))[0],
        "shed_requests": by_state.get(SHED, (0, 0))[1],
    }
