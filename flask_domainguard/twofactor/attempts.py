"""Second-factor guessing: a sliding window of attempts and escalating lockouts, in the database,
and how each 2FA attempt spends from it (:func:`begin`, :func:`fail`, :func:`succeed`).

Each key (a user, a client address; stored hashed) has its attempts as
:class:`~flask_domainguard.models.Attempt` rows. A key with ``DOMAINGUARD_2FA_LIMIT`` attempts
within the last window (sliding: the last five minutes whenever it is asked, so no burst fits
across a window edge) is locked out for the first of ``DOMAINGUARD_2FA_LOCKOUTS`` (5 minutes,
30 minutes, 2 hours); a lockout that starts within ``DOMAINGUARD_2FA_LOCKOUT_MEMORY`` of the
end of the last one takes the next duration, and the last one repeats. A lockout empties the
key's window: once it ends, the key has the limit again, and then a longer lockout. Five
guesses per five minutes make 1,440 a day; with the defaults a guesser gets about 70.

Across processes and machines: an attempt is inserted and committed before it is counted, so
of concurrent attempts the k-th to commit counts at least k, and no more than the limit get
through. A lockout starts with a compare-and-set on the key's
:class:`~flask_domainguard.models.Lockout` row, so two processes that both reach the limit
start one lockout and escalate once.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .. import signals
from ..journal import EventKind, transaction
from ..models import MYSQL_DIALECTS
from ..timeutil import utcnow
from .devices import notify

if TYPE_CHECKING:
    from ..context import Guard

_NEVER = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: MySQL/MariaDB error codes of a transaction rolled back to break a lock wait.
_DEADLOCK_CODES = frozenset({1205, 1213})
_DEADLOCK_RETRIES = 3


def _is_deadlock(exc: sa.exc.OperationalError) -> bool:
    args: tuple[object, ...] = tuple(getattr(exc.orig, "args", ()))
    return bool(args) and args[0] in _DEADLOCK_CODES


def _digest(key: str) -> str:
    # Keys hold client addresses and account ids, which do not belong in the table.
    return hashlib.sha256(f"2fa-lockout\0{key}".encode()).hexdigest()


@dataclass(frozen=True)
class Lock:
    """A lockout of a key: until when, how far escalated, and whether this call started it."""

    until: datetime
    level: int
    started: bool = False

    def retry_after(self, now: datetime) -> timedelta:
        """How long until the lockout ends."""
        return max(self.until - now, timedelta(0))


class Throttle:
    """Attempts and lockouts of keys, for the current app's 2FA settings."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        settings = guard.settings
        self.limit = settings.twofactor_limit.count
        self.window = settings.twofactor_limit.window
        self.steps = settings.twofactor_lockouts
        self.memory = settings.twofactor_lockout_memory

    @property
    def _session(self) -> sa.orm.Session:
        session: sa.orm.Session = self.guard.db.session
        return session

    def active(self, key: str) -> Lock | None:
        """The key's lockout while it lasts, else ``None``."""
        Lockout = self.guard.models.Lockout
        row = self._session.execute(
            sa.select(Lockout.locked_until, Lockout.level).where(Lockout.key == _digest(key))
        ).first()
        if row is None or row.locked_until <= utcnow():
            return None
        return Lock(row.locked_until, row.level)

    def count(self, key: str) -> int:
        """The key's attempts within the window ending now."""
        Attempt = self.guard.models.Attempt
        since = utcnow() - self.window
        value = self._session.scalar(
            sa.select(sa.func.count())
            .select_from(Attempt)
            .where(Attempt.key == _digest(key), Attempt.at > since)
        )
        return int(value or 0)

    def record(self, key: str) -> int:
        """Add one attempt of ``key``, commit it, then count (see the module description).

        :returns: the key's attempts within the window, this one included.
        """
        Attempt = self.guard.models.Attempt
        now = utcnow()
        session = self._session
        # Rows that left every window are dead weight, whichever key they belong to. On
        # MySQL/MariaDB the range DELETE takes gap locks that can deadlock with another
        # process's attempt; the database then rolls one back, which is retried as it advises.
        for retry in range(_DEADLOCK_RETRIES + 1):
            try:
                session.execute(sa.delete(Attempt).where(Attempt.at <= now - self.window))
                session.add(Attempt(key=_digest(key), at=now))
                session.commit()
                break
            except sa.exc.OperationalError as exc:
                session.rollback()
                if retry == _DEADLOCK_RETRIES or not _is_deadlock(exc):
                    raise
        return self.count(key)

    def clear(self, key: str) -> None:
        """Forget the key's attempts (after a success), keeping how far it has escalated."""
        Attempt = self.guard.models.Attempt
        self._session.execute(sa.delete(Attempt).where(Attempt.key == _digest(key)))
        self._session.commit()

    def lock(self, key: str) -> Lock:
        """Start a lockout of ``key``, one step longer than a recent last one; the lockout
        already running when there is one (then ``started`` is false)."""
        Lockout = self.guard.models.Lockout
        digest = _digest(key)
        session = self._session
        self._ensure_row(digest)
        now = utcnow()
        row = session.execute(
            sa.select(Lockout.locked_until, Lockout.level).where(Lockout.key == digest)
        ).one()
        if row.locked_until > now:
            return Lock(row.locked_until, row.level)
        level = row.level + 1 if row.level and now - row.locked_until < self.memory else 1
        until = now + self.steps[min(level, len(self.steps)) - 1]
        changed: sa.CursorResult[object] = session.execute(  # type: ignore[assignment]
            sa.update(Lockout)
            .where(
                Lockout.key == digest,
                Lockout.level == row.level,
                Lockout.locked_until <= now,
            )
            .values(level=level, locked_until=until)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:  # another process started it first
            session.commit()
            running = self.active(key)
            return running if running is not None else Lock(until, level)
        # The lockout consumes the attempts that caused it.
        Attempt = self.guard.models.Attempt
        session.execute(sa.delete(Attempt).where(Attempt.key == digest))
        session.commit()
        return Lock(until, level, started=True)

    def _ensure_row(self, digest: str) -> None:
        Lockout = self.guard.models.Lockout
        session = self._session
        table: sa.Table = Lockout.__table__  # type: ignore[attr-defined]
        dialect = session.get_bind(mapper=sa.inspect(Lockout)).dialect.name
        values = {"key": digest, "level": 0, "locked_until": _NEVER}
        if dialect in ("sqlite", "postgresql"):
            insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
            session.execute(insert(table).values(**values).on_conflict_do_nothing())
        elif dialect in MYSQL_DIALECTS:
            # A no-op update on a duplicate key: two processes may create the row at once.
            session.execute(
                mysql_insert(table).values(**values).on_duplicate_key_update(level=table.c.level)
            )
        elif session.get(Lockout, digest) is None:  # pragma: no cover - no ON CONFLICT
            session.add(Lockout(**values))
        session.commit()


# -- how a 2FA attempt spends the budget ----------------------------------------------------


class Outcome(str, enum.Enum):
    """How a second-factor attempt ended."""

    OK = "ok"
    WRONG = "wrong_code"
    REPLAY = "replay"
    WRONG_PASSWORD = "wrong_password"  # noqa: S105 - an outcome name
    LOCKED = "locked"
    NOT_ENROLLED = "not_enrolled"
    UNREADABLE = "secret_unreadable"


@dataclass(frozen=True)
class AttemptResult:
    """The outcome of one attempt; ``retry_after`` is set when locked out."""

    outcome: Outcome
    retry_after: timedelta | None = None
    recovery_codes: tuple[str, ...] = ()
    """New recovery codes, only after a successful enrolment."""
    remaining_recovery_codes: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the attempt succeeded."""
        return self.outcome is Outcome.OK


def _user_key(user_id: Any) -> str:
    return f"2fa:user:{user_id}"


def _client_key(client: str) -> str:
    return f"2fa:client:{client}"


def _locked(lock: Lock) -> AttemptResult:
    return AttemptResult(Outcome.LOCKED, retry_after=lock.retry_after(utcnow()))


def begin(guard: Guard, user_id: Any, client: str | None) -> AttemptResult | None:
    """Take one attempt from the user's budget before checking anything.

    Counting first (committed, then counted: see the module description) means parallel requests
    against one account cannot all slip in before the first failure is counted; a success
    gives the attempts back. The client's budget counts failures only, so people behind one
    NAT address can log in.

    :returns: a LOCKED result while either is locked out, else ``None``.
    """
    throttle = Throttle(guard)
    keys = [_client_key(client)] if client is not None else []
    for key in [*keys, _user_key(user_id)]:
        lock = throttle.active(key)
        if lock is not None:
            return _locked(lock)
    if throttle.record(_user_key(user_id)) > throttle.limit:
        # Concurrent attempts went past the limit before any of them failed: lock out now.
        lock = throttle.lock(_user_key(user_id))
        if lock.started:
            _journal_lockout(guard, user_id, lock, "user")
            _tell_owner_of_lockout(guard, user_id, lock)
        return _locked(lock)
    # A lockout that started since the first look emptied the window this attempt was
    # counted in: it must not pass as the first of a fresh window.
    started = throttle.active(_user_key(user_id))
    return _locked(started) if started is not None else None


def _journal_lockout(guard: Guard, user_id: Any, lock: Lock, scope: str) -> None:
    with transaction(guard.db, guard.models) as tx:
        tx.record(
            EventKind.TWOFACTOR_LOCKED_OUT,
            actor="system",
            user_id=user_id,
            signal=signals.twofactor_locked_out,
            scope=scope,
            level=lock.level,
            lockout_seconds=int(lock.retry_after(utcnow()).total_seconds()),
            window_seconds=int(guard.settings.twofactor_limit.window.total_seconds()),
        )


def _tell_owner_of_lockout(guard: Guard, user_id: Any, lock: Lock) -> None:
    # At the first lockout of a run only: the owner hears that someone is guessing (and so
    # knows the password), without a mail for every escalation.
    if lock.level == 1:
        minutes = max(1, round(lock.retry_after(utcnow()).total_seconds() / 60))
        notify(guard, user_id, "twofactor_locked_out", minutes=minutes)


def fail(
    guard: Guard,
    user_id: Any,
    client: str | None,
    outcome: Outcome,
    method: str,
    purpose: str,
) -> AttemptResult:
    """Count a failure against the client, journal it, and start the lockouts it causes."""
    throttle = Throttle(guard)
    locks: list[tuple[Lock, str]] = []
    if client is not None and throttle.record(_client_key(client)) >= throttle.limit:
        locks.append((throttle.lock(_client_key(client)), "client"))
    if throttle.count(_user_key(user_id)) >= throttle.limit:
        locks.append((throttle.lock(_user_key(user_id)), "user"))
    with transaction(guard.db, guard.models) as tx:
        tx.record(
            EventKind.TWOFACTOR_FAILED,
            actor="user",
            user_id=user_id,
            signal=signals.twofactor_failed,
            method=method,
            reason=outcome.value,
            purpose=purpose,
        )
    for lock, scope in locks:
        if lock.started:
            _journal_lockout(guard, user_id, lock, scope)
            if scope == "user":
                _tell_owner_of_lockout(guard, user_id, lock)
    now = utcnow()
    retry = max((lock.retry_after(now) for lock, _ in locks), default=None)
    return AttemptResult(outcome, retry_after=retry)


def succeed(guard: Guard, user_id: Any) -> None:
    """Give the user's attempts back after a success."""
    # The user proved the factor: their attempts start over (how far their lockouts have
    # escalated does not). The client's do not, so one address cannot spread guesses over
    # accounts it controls.
    Throttle(guard).clear(_user_key(user_id))
