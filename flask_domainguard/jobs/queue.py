"""The job table's core: kinds, enqueueing, leasing (claim), running and retrying one job."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from ..journal import EventKind, transaction
from ..models import MYSQL_DIALECTS
from ..sqlcompat import locked_ids, update_returning
from ..timeutil import utcnow

if TYPE_CHECKING:
    from ..context import Guard

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
        record_attempts(
            self.guard,
            [(self, {"recipients": recipients, "user_id": user_id, "address": address, **details})],
        )

    def mark_done(self) -> None:
        """Mark the job done in the current transaction (committed with the caller's)."""
        finish(self.guard, self.job.id, self.owner, DONE)
        self.marked_done = True


def record_attempts(guard: Guard, attempts: list[tuple[JobRun, dict[str, Any]]]) -> None:
    """Journal (and commit) the delivery attempts of several runs in one transaction, just
    before their mail is handed to SMTP; each ``details`` holds ``recipients`` and may hold
    ``user_id``, ``address`` and more."""
    if not attempts:
        return
    with transaction(guard.db, guard.models) as tx:
        for run, details in attempts:
            tx.record(
                EventKind.MAIL_ATTEMPT,
                actor="worker",
                job=run.job.id,
                job_kind=run.job.kind,
                attempt=run.job.attempts,
                **details,
            )
    for run, _ in attempts:
        run.attempted = True


Handler = Callable[["Guard", JobRun], None]
#: ``handler(guard, runs)``: runs several claimed jobs of one kind together (one recipient
#: query, one attempt commit, one SMTP connection); it raises to have each job run alone.
#: Nothing may leave the process before its attempts are committed (:func:`record_attempts`):
#: that commit may be the one that commits the claim (:func:`.running.run_claimed_together`).
BatchHandler = Callable[["Guard", list[JobRun]], None]
_HANDLERS: dict[str, Handler] = {}
_BATCH_HANDLERS: dict[str, BatchHandler] = {}


def register(kind: str) -> Callable[[Handler], Handler]:
    """Register the function that runs jobs of ``kind`` (it raises to ask for a retry)."""

    def decorate(fn: Handler) -> Handler:
        _HANDLERS[kind] = fn
        return fn

    return decorate


def register_batch(kind: str) -> Callable[[BatchHandler], BatchHandler]:
    """Register a function that runs several jobs of ``kind`` at once, beside the one-job
    handler of :func:`register` (which a failed batch falls back to)."""

    def decorate(fn: BatchHandler) -> BatchHandler:
        _BATCH_HANDLERS[kind] = fn
        return fn

    return decorate


def batch_handler_for(kind: str) -> BatchHandler | None:
    """The function registered to run several jobs of ``kind`` at once, if any."""
    return _BATCH_HANDLERS.get(kind)


def handler_for(kind: str) -> Handler:
    """The function registered for jobs of ``kind``."""
    # The modules that own the kinds register their handlers when imported, which importing
    # flask_domainguard does (the extension imports every feature module).
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
    commit: bool = True,
) -> list[ClaimedJob]:
    """Lease up to ``limit`` due jobs (of ``kinds``, or with ``ids``) to ``owner``; commits,
    unless ``commit`` is false: then the caller commits the claim with its next write (a
    batch's attempts, :func:`.running.run_claimed_together`) or rolls it back.

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
    try:
        rows = update_picked(
            guard,
            pick,
            where,
            {
                "lease_owner": owner,
                "lease_until": now + guard.settings.jobs_lease,
                "attempts": J.c.attempts + 1,
                # A new request for the same work starts a new job from now on.
                "dedupe_key": None,
            },
            [J.c.id, J.c.kind, J.c.payload, J.c.attempts, J.c.address, J.c.requests],
        )
        if commit:
            db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    jobs = [ClaimedJob(r[0], r[1], dict(r[2] or {}), int(r[3]), r[4], int(r[5])) for r in rows]
    return sorted(jobs, key=lambda job: job.id)


def update_picked(
    guard: Guard,
    pick: sa.Select[Any],
    where: list[sa.ColumnElement[bool]],
    values: dict[str, Any],
    columns: list[sa.Column[Any]],
) -> list[tuple[Any, ...]]:
    """Set ``values`` on the jobs ``pick`` selects that still match ``where``, in the current
    transaction, passing over rows another worker holds; their ``columns``, as updated."""
    J = _table(guard)
    session, dialect = guard.db.session, _dialect(guard)
    picked = J.c.id.in_(locked_ids(session, dialect, pick))
    return update_returning(session, dialect, J, J.c.id, [picked, *where], values, columns)


def finish(guard: Guard, job_id: int, owner: str, state: str, error: str | None = None) -> bool:
    return finish_many(guard, [job_id], owner, state, error) == 1


def finish_many(
    guard: Guard, job_ids: list[int], owner: str, state: str = DONE, error: str | None = None
) -> int:
    """End the given jobs this owner still holds; how many it ended."""
    if not job_ids:
        return 0
    J = _table(guard)
    result = guard.db.session.execute(
        sa.update(J)
        .where(J.c.id.in_(job_ids), J.c.lease_owner == owner, J.c.state == PENDING)
        .values(
            state=state,
            done_at=utcnow(),
            lease_owner=None,
            lease_until=None,
            last_error=error,
            dedupe_key=None,
        )
    )
    return int(result.rowcount)
