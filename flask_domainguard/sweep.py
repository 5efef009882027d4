"""The sweep: look up every registrable domain that is due, judge it, act on the verdicts.

One engine, in steps that can run separately (a task queue can give each chunk to a worker
and call :meth:`Sweep.finish` once at the end, with the same ``run_id``; see
:mod:`flask_domainguard.contrib.celery`, which splits a run with :meth:`Sweep.chunk_ranges`
and sweeps each range with ``Sweep(..., name_range=...).run(finish=False)``):

1. :meth:`Sweep.claim_batch` leases due domains to this run. A domain is due when at least
   one verified address uses it, it is not trusted, its ``next_check_at`` has come and no live
   sweeper holds its lease. On PostgreSQL the claim is ``SELECT ... FOR UPDATE SKIP LOCKED``
   inside one ``UPDATE``; on SQLite one ``UPDATE ... WHERE <lease free>``, which SQLite runs
   under its write lock. Either way two sweepers never get the same domain.
2. :meth:`Sweep.lookup_batch` looks the claimed domains up (one lookup per registrable
   domain, however many addresses share it) within the limits of :mod:`.lookups`.
3. :meth:`Sweep.apply_results` judges every verified address of each domain, stores the
   observation, verdict and next check, journals verdict changes, mails expiry warnings and
   *plans* the unverifications that passed the confirmation rule, all in one transaction per
   batch (a crash loses at most the batch in flight; its leases expire and the next run
   carries on).
4. :meth:`Sweep.finish` applies the run's planned unverifications, unless there are more
   than ``DOMAINGUARD_MAX_UNVERIFY``: then it applies none and holds them all for review
   (:func:`apply_held`, :func:`dismiss_held`). The count lives in the database (planned
   :class:`~flask_domainguard.models.HeldAction` rows of the run), so chunks on several
   workers share one circuit breaker.

Guard rails: an unsafe verdict acts only when a second check at least
``DOMAINGUARD_CONFIRM_AFTER`` after the first still finds it unsafe; a safe verdict in between
starts over. A failed lookup changes nothing but the schedule (backoff, capped at a day).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import signals
from .addresses.store import unverify
from .dnsevidence import dns_lookup
from .dnsverdict import BASELINE_COLUMNS, Baseline
from .domainstate import (
    STATE_COLUMNS,
    DomainState,
    advance,
    depends_on_proof,
    dns_row_values,
    evidence_source_ok,
    first_seen_baselines,
    is_informative,
    policy_of,
    record,
    row_values,
    verdict_for,
)
from .jobs import EXPIRY_WARNING, UNVERIFY_NOTICE, deliver_now
from .jobs import drain as drain_jobs
from .journal import EventKind, transaction
from .lookups import LookupLimits, LookupThread
from .models import MYSQL_DIALECTS, UnverifyReason
from .notices import queue_expiry_warning, queue_unverify_notice
from .sqlcompat import update_returning
from .status.observation import Observation
from .timeutil import as_utc, utcnow
from .verdict import SEVERITY, Verdict, VerdictKind, judge

if TYPE_CHECKING:
    from .context import Guard
    from .journal import Transaction
    from .status.base import StatusBackend

__all__ = [
    "Claim",
    "HeldOutcome",
    "Sweep",
    "SweepReport",
    "apply_held",
    "dismiss_held",
    "new_run_id",
    "next_check_after_failure",
]

log = logging.getLogger(__name__)

#: Batches whose lookups may be unfinished at once (each holds its domains' leases).
MAX_BATCHES_IN_FLIGHT = 16

#: Lapsing, expiring and in-grace domains (and confirmed unsafe ones) are checked daily.
LAPSING_RECHECK = timedelta(days=1)
#: First retry delay after a failed lookup; doubled per consecutive failure, capped at a day.
FAILURE_BACKOFF = timedelta(minutes=30)
FAILURE_BACKOFF_CAP = timedelta(days=1)
#: Healthy domains are rechecked after DOMAINGUARD_RECHECK_AFTER, spread by this fraction
#: either way so that a first sweep's domains do not all come due at the same moment again.
RECHECK_JITTER = 0.1

PLANNED = "planned"
APPLIED = "applied"
DISMISSED = "dismissed"
OBSOLETE = "obsolete"

_REASONS = {
    VerdictKind.RELEASED: UnverifyReason.DOMAIN_RELEASED,
    VerdictKind.EXPIRED: UnverifyReason.DOMAIN_EXPIRED,
    VerdictKind.REREGISTERED: UnverifyReason.DOMAIN_REREGISTERED,
    VerdictKind.DNS_CHANGED: UnverifyReason.DNS_CHANGED,
}
# Which verdict a domain shows when its addresses differ (REREGISTERED and DNS_CHANGED depend
# on the address): the most severe one.
_SEVERITY = SEVERITY
_WARN_KINDS = frozenset({VerdictKind.EXPIRING_SOON, VerdictKind.IN_GRACE})


def new_run_id() -> str:
    """A fresh run id or lease owner: host, process and a random part (64 characters at most)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(6)}"[:64]


def owner_alive(owner: str | None) -> bool | None:
    """Whether the process a run id or lease owner (:func:`new_run_id`) names still runs:
    ``False`` only when it ran on this host and no such process exists now, ``None`` when
    this host cannot tell (another host, or not our format)."""
    host, _, rest = (owner or "").partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname()[:32] or not pid_text.isdigit():
        return None
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, but belongs to another user
        return True
    return True


def _jitter(delta: timedelta, fraction: float) -> timedelta:
    return delta * random.uniform(1 - fraction, 1 + fraction)  # noqa: S311 - load spreading


def next_check_after_failure(failures: int, retry_after: float | None = None) -> timedelta:
    """Delay before the next check after ``failures`` failed checks in a row (at least 1).

    Exponential from :data:`FAILURE_BACKOFF`, capped at :data:`FAILURE_BACKOFF_CAP`, with
    jitter; never sooner than the server's ``Retry-After``.
    """
    exponent = min(max(failures, 1) - 1, 16)
    delay = min(FAILURE_BACKOFF * (2**exponent), FAILURE_BACKOFF_CAP)
    delay = min(_jitter(delay, RECHECK_JITTER), FAILURE_BACKOFF_CAP)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(timedelta(seconds=retry_after), FAILURE_BACKOFF_CAP))
    return delay


@dataclass(frozen=True)
class Claim:
    """A domain leased to this run. Its state is read again when the results are applied,
    under the batch's locks (:meth:`Sweep.apply_results`).

    :param claimed_at: when the lease was taken; the lookup was made after it.
    """

    name: str
    failures: int
    claimed_at: datetime | None = None

    def superseded_by(self, state: DomainState) -> bool:
        """Whether ``state`` holds a successful check made after this claim (a live check
        during the lookup): its facts are newer than the ones this run looked up."""
        return (
            self.claimed_at is not None
            and state.checked_at is not None
            and state.checked_at > self.claimed_at
        )


@dataclass
class SweepReport:
    """What a run did (or, with ``dry_run``, would do)."""

    run_id: str = ""
    dry_run: bool = False
    checked: int = 0
    skipped_trusted: int = 0
    errors: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    unsafe_first_seen: int = 0
    planned: int = 0
    unverified: int = 0
    held: int = 0
    breaker_tripped: bool = False
    warnings_sent: int = 0
    notices_sent: int = 0
    lost_leases: int = 0
    leased_elsewhere: int = 0
    leased_by_dead_runs: int = 0
    planned_elsewhere: int = 0
    planned_by_dead_runs: int = 0
    errors_by_server: dict[str, int] = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)
    attempts: int = 0
    seconds: float = 0.0

    def merge(self, other: SweepReport) -> None:
        """Add the counts of ``other`` (a chunk of the same run) to this report."""
        for name in (
            "checked",
            "errors",
            "unsafe_first_seen",
            "planned",
            "unverified",
            "held",
            "warnings_sent",
            "notices_sent",
            "lost_leases",
            "attempts",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        # What other runs hold is counted by each chunk at its end: the latest count wins.
        for name in (
            "leased_elsewhere",
            "leased_by_dead_runs",
            "planned_elsewhere",
            "planned_by_dead_runs",
        ):
            setattr(self, name, max(getattr(self, name), getattr(other, name)))
        for kind, count in other.verdicts.items():
            if count:
                self.verdicts[kind] = self.verdicts.get(kind, 0) + count
        for server, count in other.errors_by_server.items():
            self.errors_by_server[server] = self.errors_by_server.get(server, 0) + count
        self.breaker_tripped = self.breaker_tripped or other.breaker_tripped
        self.not_found += [name for name in other.not_found if name not in self.not_found]
        self.seconds += other.seconds

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepReport:
        """The report :meth:`as_dict` made (from a task result); unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        report = cls(**{key: value for key, value in data.items() if key in known})
        report.verdicts = {kind: int(n) for kind, n in report.verdicts.items() if n}
        report.errors_by_server = {k: int(n) for k, n in report.errors_by_server.items()}
        return report

    @property
    def failed_lookups(self) -> int:
        """Checked domains whose lookup failed or answered "unknown"."""
        return self.verdicts.get(VerdictKind.UNKNOWN.value, 0)

    def outcome(self, failing_share: float) -> tuple[int, str]:
        """The command's exit code and its name (docs/cli.md), most urgent first.

        :param failing_share: ``DOMAINGUARD_SWEEP_FAILING_SHARE``: the share of checked
            domains with failed lookups beyond which the run counts as mostly failed.
        """
        if self.breaker_tripped:
            return 3, "breaker_tripped"
        if self.checked and self.failed_lookups > failing_share * self.checked:
            return 5, "lookups_mostly_failed"
        if self.leased_by_dead_runs or self.planned_by_dead_runs:
            return 6, "dead_run_left_work"
        if self.errors:
            return 1, "some_errors"
        if self.checked == 0 and self.leased_elsewhere:
            return 4, "leased_elsewhere"
        return 0, "ok"

    def count_verdict(self, kind: VerdictKind | str) -> None:
        key = kind.value if isinstance(kind, VerdictKind) else kind
        self.verdicts[key] = self.verdicts.get(key, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``--json``)."""
        data = asdict(self)
        data["verdicts"] = {kind.value: self.verdicts.get(kind.value, 0) for kind in VerdictKind}
        data["seconds"] = round(self.seconds, 3)
        return data

    def summary_rows(self) -> list[tuple[str, Any]]:
        """Rows for the command's summary table."""
        would = "would be " if self.dry_run else ""
        rows: list[tuple[str, Any]] = [
            ("domains checked", self.checked),
            ("trusted domains skipped", self.skipped_trusted),
            ("lookup errors", self.errors),
        ]
        rows += [(f"  {kind}", count) for kind, count in sorted(self.verdicts.items()) if count]
        rows += [
            ("unsafe, awaiting confirmation", self.unsafe_first_seen),
            (f"addresses {would}unverified", self.unverified),
            (f"addresses {would}held for review", self.held),
            ("expiry warnings sent", self.warnings_sent),
            ("notices to other addresses", self.notices_sent),
        ]
        rows.append(("due but leased by other sweeps", self.leased_elsewhere))
        if self.leased_by_dead_runs:
            rows.append(("  of them by runs that died", self.leased_by_dead_runs))
        if self.planned_elsewhere:
            rows.append(("unverifications planned by other runs", self.planned_elsewhere))
        if self.planned_by_dead_runs:
            rows.append(("  of them by runs that died (adopted later)", self.planned_by_dead_runs))
        for server, count in sorted(self.errors_by_server.items()):
            rows.append((f"  lookup errors at {server}", count))
        if self.lost_leases:
            rows.append(("results dropped (lease lost)", self.lost_leases))
        if self.not_found:
            rows.append(("unknown domains", ", ".join(self.not_found)))
        rows.append(("seconds", f"{self.seconds:.1f}"))
        return rows


@dataclass(frozen=True)
class _AddressRow:
    id: int
    user_id: Any
    address: str
    registrable: str
    verified_at: datetime
    expiry_warned_for: datetime | None
    baseline: Baseline | None = None


@dataclass
class _Warning:
    user_id: Any
    domain: str
    kind: VerdictKind
    until: datetime
    reason: str
    rows: list[_AddressRow]


@dataclass
class _Notice:
    user_id: Any
    exclude_id: int
    address: str
    domain: str
    reason: UnverifyReason
    verdict_reason: str


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _dialect(guard: Guard) -> str:
    bind = guard.db.session.get_bind(mapper=sa.inspect(guard.models.Domain))
    return str(bind.dialect.name)


def _table(model: type[Any]) -> sa.Table:
    table: sa.Table = model.__table__
    return table


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
    ) -> None:
        self.guard = guard
        self.settings = settings = guard.settings
        self.backend = backend if backend is not None else guard.status_backend(backend_name)
        self.run_id = run_id or new_run_id()
        self.lease_owner = lease_owner or self.run_id
        self.name_range = name_range
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
        self._dialect = _dialect(guard)
        self._after: str | None = None  # dry-run keyset position
        self._thread: LookupThread | None = None
        self._planned_any = False
        self._beat_at = 0.0
        m = guard.models
        self._D = _table(m.Domain)
        self._A = _table(m.EmailAddress)
        self._H = _table(m.HeldAction)

    # -- 1. what is due ----------------------------------------------------------------------

    def _lease_free(self, now: datetime) -> sa.ColumnElement[bool]:
        D = self._D
        return sa.or_(D.c.lease_until.is_(None), D.c.lease_until < now)

    def _due(self, now: datetime, *, leased_ok: bool = False) -> list[sa.ColumnElement[bool]]:
        D, A = self._D, self._A
        clauses: list[sa.ColumnElement[bool]] = [
            D.c.next_check_at <= self.cutoff,
            # Checked during this run already (a second check due at once, as with
            # CONFIRM_AFTER = 0): that one belongs to the next run.
            sa.or_(D.c.checked_at.is_(None), D.c.checked_at < self.cutoff),
            sa.exists().where(A.c.registrable == D.c.name, A.c.verified_at.is_not(None)),
        ]
        trusted = sorted(self.settings.trusted_domains)
        if trusted:
            clauses.append(D.c.name.not_in(trusted))
        if self.name_range is not None:
            first, stop = self.name_range
            if first is not None:
                clauses.append(D.c.name >= first)
            if stop is not None:
                clauses.append(D.c.name < stop)
        if not leased_ok:
            clauses.append(self._lease_free(now))
        return clauses

    def chunk_ranges(self, size: int) -> list[tuple[str | None, str | None]]:
        """Split the domains due in this run into name ranges of ``size`` domains (the last
        one fewer), for ``Sweep(..., name_range=...)`` on several workers.

        The ranges are open at both ends, so together they cover every name: a domain that
        another sweeper held while the ranges were made still falls into one of them.
        Empty when nothing is due.
        """
        D = self._D
        numbered = (
            sa.select(D.c.name, sa.func.row_number().over(order_by=D.c.name).label("n"))
            .where(*self._due(utcnow()))
            .subquery()
        )
        starts = list(
            self.guard.db.session.scalars(
                sa.select(numbered.c.name)
                .where((numbered.c.n - 1) % size == 0)
                .order_by(numbered.c.name)
            )
        )
        self.guard.db.session.rollback()
        bounds: list[str | None] = [None, *starts[1:], None]
        return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]

    def count_due(self) -> int:
        """Domains due in this run now (for a progress bar)."""
        D = self._D
        query = sa.select(sa.func.count()).select_from(D).where(*self._due(utcnow()))
        return int(self.guard.db.session.scalar(query) or 0)

    def count_trusted(self) -> int:
        """Trusted registrable domains with verified addresses: never looked up."""
        D, A = self._D, self._A
        trusted = sorted(self.settings.trusted_domains)
        if not trusted:
            return 0
        query = (
            sa.select(sa.func.count())
            .select_from(D)
            .where(
                D.c.name.in_(trusted),
                sa.exists().where(A.c.registrable == D.c.name, A.c.verified_at.is_not(None)),
            )
        )
        return int(self.guard.db.session.scalar(query) or 0)

    def count_leased_elsewhere(self) -> int:
        """Due domains whose lease another live sweeper holds."""
        D = self._D
        now = utcnow()
        query = (
            sa.select(sa.func.count())
            .select_from(D)
            .where(
                *self._due(now, leased_ok=True),
                D.c.lease_until >= now,
                D.c.lease_owner != self.lease_owner,
            )
        )
        return int(self.guard.db.session.scalar(query) or 0)

    def count_leftovers(self) -> None:
        """Count, into the report, what other runs hold: due domains they lease and
        unverifications they planned, and how much of each belongs to runs that died (on
        this host, with no such process left; their leases expire and their plans are adopted
        after ``DOMAINGUARD_SWEEP_LEASE``)."""
        D, H = self._D, self._H
        now = utcnow()
        session = self.guard.db.session
        leased = session.execute(
            sa.select(D.c.lease_owner, sa.func.count())
            .where(
                *self._due(now, leased_ok=True),
                D.c.lease_until >= now,
                D.c.lease_owner != self.lease_owner,
            )
            .group_by(D.c.lease_owner)
        ).all()
        planned = session.execute(
            sa.select(H.c.run_id, sa.func.count())
            .where(H.c.resolution == PLANNED, H.c.run_id != self.run_id)
            .group_by(H.c.run_id)
        ).all()
        session.rollback()
        report = self.report
        report.leased_elsewhere = sum(int(n) for _, n in leased)
        report.leased_by_dead_runs = sum(int(n) for o, n in leased if owner_alive(o) is False)
        report.planned_elsewhere = sum(int(n) for _, n in planned)
        report.planned_by_dead_runs = sum(int(n) for r, n in planned if owner_alive(r) is False)

    def _server_of(self, name: str) -> str:
        try:
            return str(self.backend.server_key(name))
        except Exception:
            return "unknown"

    def claim_batch(
        self, size: int | None = None, *, names: Sequence[str] | None = None
    ) -> list[Claim]:
        """Lease up to ``size`` due domains (or the given ``names``, due or not) to this run.

        Commits. With ``dry_run`` nothing is leased: the due domains are read in name order.
        """
        size = size or self.settings.sweep_batch_size
        db = self.guard.db
        D = self._D
        now = utcnow()
        columns = (D.c.name, D.c.failures)
        if names is not None:
            where: list[sa.ColumnElement[bool]] = [D.c.name.in_(list(names))]
            trusted = sorted(self.settings.trusted_domains)
            if trusted:
                where.append(D.c.name.not_in(trusted))
        else:
            where = self._due(now)
        if self.dry_run:
            query = sa.select(*columns).where(*where).order_by(D.c.name).limit(size)
            if self._after is not None and names is None:
                query = query.where(D.c.name > self._after)
            rows = db.session.execute(query).all()
            db.session.rollback()
            if rows and names is None:
                self._after = rows[-1][0]
        else:
            pick = sa.select(D.c.name).where(*where, self._lease_free(now))
            if names is None:
                pick = pick.order_by(D.c.next_check_at, D.c.name)
            pick = pick.limit(size)
            if self._dialect == "postgresql" or self._dialect in MYSQL_DIALECTS:
                pick = pick.with_for_update(skip_locked=True)
            lease = {
                "lease_owner": self.lease_owner,
                "lease_until": now + self.settings.sweep_lease,
            }
            try:
                if self._dialect in MYSQL_DIALECTS:
                    # MySQL/MariaDB have no UPDATE ... RETURNING and refuse LIMIT in an IN
                    # subquery: lock the picked rows (skipping other sweepers' locks), lease
                    # them and read them back, in one transaction.
                    picked = list(db.session.scalars(pick))
                    rows = []
                    if picked:
                        db.session.execute(sa.update(D).where(D.c.name.in_(picked)).values(lease))
                        rows = list(
                            db.session.execute(
                                sa.select(*columns).where(D.c.name.in_(picked)).order_by(D.c.name)
                            ).all()
                        )
                else:
                    claim = (
                        sa.update(D)
                        .where(D.c.name.in_(pick), self._lease_free(now))
                        .values(lease)
                        .returning(*columns)
                    )
                    rows = list(db.session.execute(claim).all())
                db.session.commit()
            except BaseException:
                db.session.rollback()
                raise
        return [Claim(name=row[0], failures=int(row[1] or 0), claimed_at=now) for row in rows]

    def release(self, names: Iterable[str] | None = None) -> None:
        """Give back this run's leases (all of them, or on ``names``) without checking."""
        if self.dry_run:
            return
        D = self._D
        stmt = sa.update(D).where(D.c.lease_owner == self.lease_owner)
        if names is not None:
            stmt = stmt.where(D.c.name.in_(list(names)))
        db = self.guard.db
        try:
            db.session.execute(stmt.values(lease_owner=None, lease_until=None))
            db.session.commit()
        except Exception:
            db.session.rollback()
            log.warning(
                "could not release the leases of run %s; they expire by themselves", self.run_id
            )

    # -- 2. lookups --------------------------------------------------------------------------

    def _lookups(self) -> LookupThread:
        if self._thread is None:
            self._thread = LookupThread(
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
            self.report.attempts = self._thread.attempts
            self._thread.close()
            self._thread = None

    # -- 3. acting on the results ---------------------------------------------------------------

    def _confirm_leases(self, names: list[str], now: datetime) -> set[str]:
        """Re-assert this run's leases in the current transaction; the names still ours.

        The UPDATE takes the write lock (SQLite) or the rows' locks (PostgreSQL; on MySQL the
        locking read before it) first, so nothing another sweeper does can interleave with
        this batch's changes.
        """
        D = self._D
        rows = update_returning(
            self.guard.db.session,
            self._dialect,
            D,
            D.c.name,
            [D.c.name.in_(names), D.c.lease_owner == self.lease_owner],
            {"lease_until": now + self.settings.sweep_lease},
            [D.c.name],
        )
        return {row[0] for row in rows}

    def _load_addresses(self, names: Iterable[str]) -> dict[str, list[_AddressRow]]:
        A = self._A
        wanted = list(names)
        found: dict[str, list[_AddressRow]] = {name: [] for name in wanted}
        if not wanted:
            return found
        query = sa.select(
            A.c.id,
            A.c.user_id,
            A.c.address,
            A.c.registrable,
            A.c.verified_at,
            A.c.expiry_warned_for,
            *(A.c[column] for column in BASELINE_COLUMNS),
        ).where(A.c.registrable.in_(wanted), A.c.verified_at.is_not(None))
        for row in self.guard.db.session.execute(query):
            found[row[3]].append(
                _AddressRow(
                    row[0], row[1], row[2], row[3], as_utc(row[4]), _aware(row[5]), Baseline.of(row)
                )
            )
        return found

    def _load_states(self, names: Iterable[str]) -> dict[str, DomainState]:
        """The stored states of ``names``, read after this batch took their locks, so a live
        check's write between the claim and now is built on, not overwritten."""
        D = self._D
        wanted = list(names)
        if not wanted:
            return {}
        query = sa.select(*(D.c[column] for column in STATE_COLUMNS)).where(D.c.name.in_(wanted))
        return {row.name: DomainState.of(row) for row in self.guard.db.session.execute(query)}

    def apply_results(
        self, claims: Sequence[Claim], observations: dict[str, Observation]
    ) -> SweepReport:
        """Judge, store and schedule a batch of looked-up domains; plan unverifications.

        One transaction for the batch; verdict-change signals after its commit, expiry
        warnings mailed after that. Results for domains whose lease this run lost are
        dropped (the other sweeper acts on its own lookup), and so are results for domains a
        live check observed after the claim: older facts never overwrite newer ones (the next
        run looks again). Each domain's state moves through
        :mod:`.domainstate`, the same path as the live check's, and every verified address is
        judged by its own proof date. Returns the run's report.
        """
        if not claims:
            return self.report
        guard, db, report = self.guard, self.guard.db, self.report
        now = utcnow()
        names = [claim.name for claim in claims]
        warnings: list[_Warning] = []
        with transaction(db, guard.models) as tx:
            ours = set(names) if self.dry_run else self._confirm_leases(names, now)
            report.lost_leases += len(names) - len(ours)
            states = self._load_states(ours)
            work: list[tuple[Claim, Observation, DomainState, Verdict, str | None]] = []
            superseded: list[dict[str, Any]] = []
            for claim in claims:
                if claim.name not in ours:
                    continue
                obs = observations.get(claim.name) or Observation.failed(
                    claim.name, "no lookup result", source=getattr(self.backend, "name", "")
                )
                state = states.get(claim.name) or DomainState(name=claim.name)
                if claim.superseded_by(state):
                    superseded.append({"b_name": claim.name})  # only the lease is given back
                    continue
                try:
                    new = advance(state, obs, now)
                    # A check succeeds when the lookup that speaks for the domain did: the
                    # DNS where no status server covers it, the status source elsewhere.
                    base = (
                        verdict_for(new, None, now, self.policy)
                        if evidence_source_ok(obs)
                        else judge(obs, now=now, policy=self.policy)
                    )
                except Exception:
                    log.exception("judging %s failed", claim.name)
                    obs = Observation.failed(
                        claim.name, "internal error judging the answer", source=obs.source
                    )
                    new, base = state, judge(obs, now=now, policy=self.policy)
                work.append((claim, obs, new, base, state.verdict))
            need = [
                claim.name
                for claim, _, new, base, _ in work
                if base.kind is not VerdictKind.UNKNOWN
                and (base.kind is not VerdictKind.OK or depends_on_proof(new))
            ]
            addresses = self._load_addresses(need)
            done: list[dict[str, Any]] = []
            failed: list[dict[str, Any]] = []
            planned: list[tuple[_AddressRow, Verdict]] = []
            for claim, obs, new, base, previous in work:
                report.checked += 1
                if base.kind is VerdictKind.UNKNOWN:
                    report.errors += 1
                    report.count_verdict(VerdictKind.UNKNOWN)
                    server = self._server_of(claim.name)
                    report.errors_by_server[server] = report.errors_by_server.get(server, 0) + 1
                    failed.append(self._failure_values(claim, obs, base, now, new))
                    continue
                rows = addresses.get(claim.name, [])
                # An address without a baseline takes this sighting as its first (judged so
                # below: no baseline reads as "the current DNS is its first").
                first_seen = first_seen_baselines(guard, claim.name, obs, now)
                if (
                    first_seen is not None
                    and not self.dry_run
                    and any(r.baseline is None for r in rows)
                ):
                    db.session.execute(first_seen)
                judged = [
                    (row, verdict_for(new, row.verified_at, now, self.policy, row.baseline))
                    for row in rows
                ]
                # The summary is the earliest proof's verdict, the most severe one.
                verdict = max([v for _, v in judged] or [base], key=lambda v: _SEVERITY[v.kind])
                report.count_verdict(verdict.kind)
                values, confirmed = self._success_values(new, verdict, now)
                done.append(values)
                if confirmed:
                    planned.extend((row, v) for row, v in judged if v.unsafe)
                warnings.extend(self._warnings_for(claim.name, judged))
                if (
                    not self.dry_run
                    and previous != verdict.kind.value
                    and not (previous is None and verdict.kind is VerdictKind.OK)
                ):
                    # The first "ok" of a new domain is not news; every other change is.
                    tx.record(
                        EventKind.DOMAIN_VERDICT,
                        actor="sweep",
                        signal=signals.domain_verdict_changed,
                        domain=claim.name,
                        verdict=verdict.kind.value,
                        previous=previous,
                        reason=verdict.reason,
                    )
            if self.dry_run:
                report.planned += len(planned)
                report.warnings_sent += len(warnings)
                db.session.rollback()
                return report
            self._write_domains(done, failed, superseded)
            self._plan(planned, now)
            warning_jobs = self._queue_warnings(tx, warnings)
        self._send_warnings(warning_jobs)
        return report

    def _failure_values(
        self, claim: Claim, obs: Observation, base: Verdict, now: datetime, state: DomainState
    ) -> dict[str, Any]:
        # The verdict, observation and unsafe_since stay as they were: failing proves nothing.
        # A DNS sighting beside a failed status lookup is kept (it moved `state` on).
        failures = claim.failures + 1
        error = obs.error or base.reason
        if obs.dns is not None and obs.dns.evidence and obs.dns.error:
            error = obs.dns.error
        return {
            **dns_row_values(state),
            "b_name": claim.name,
            "failures": failures,
            "last_error": error[:500],
            "next_check_at": now + next_check_after_failure(failures, obs.retry_after),
        }

    def _success_values(
        self, state: DomainState, verdict: Verdict, now: datetime
    ) -> tuple[dict[str, Any], bool]:
        """The row's new values (the engine's columns and the schedule), and whether an
        unsafe verdict is confirmed: first seen at least ``CONFIRM_AFTER`` ago."""
        settings = self.settings
        confirmed = False
        if verdict.unsafe:
            if state.unsafe_since is None:
                next_check = now + settings.confirm_after
                self.report.unsafe_first_seen += 1
            else:
                confirm_at = state.unsafe_since + settings.confirm_after
                confirmed = now >= confirm_at
                next_check = now + LAPSING_RECHECK if confirmed else confirm_at
        elif verdict.kind is VerdictKind.OK:
            next_check = now + _jitter(settings.recheck_after, RECHECK_JITTER)
        else:  # expiring soon or in grace: daily, and exactly when the stage ends if sooner
            next_check = now + LAPSING_RECHECK
            if verdict.until is not None and now < verdict.until < next_check:
                next_check = verdict.until
        values = {
            "b_name": state.name,
            **row_values(state, verdict, now),
            "next_check_at": next_check,
            "failures": 0,
            "last_error": None,
        }
        return values, confirmed

    def _write_domains(self, *groups: list[dict[str, Any]]) -> None:
        """Write each group's rows (the same columns within a group) and give their leases back."""
        D = self._D
        session = self.guard.db.session
        for rows in groups:
            if not rows:
                continue
            columns = [key for key in rows[0] if key != "b_name"]
            # Bind names must differ from column names in an UPDATE's SET clause.
            values: dict[str, Any] = {column: sa.bindparam(f"v_{column}") for column in columns}
            values.update(lease_owner=None, lease_until=None)
            stmt = sa.update(D).where(D.c.name == sa.bindparam("b_name")).values(values)
            params = [
                {"b_name": row["b_name"], **{f"v_{c}": row[c] for c in columns}} for row in rows
            ]
            session.execute(stmt, params)

    def _plan(self, planned: list[tuple[_AddressRow, Verdict]], now: datetime) -> None:
        H = self._H
        session = self.guard.db.session
        if self._planned_any or self.lease_owner != self.run_id:
            # Heartbeat: a live run's planned actions are never adopted by another run. A
            # chunk of a shared run beats for its sibling chunks' actions too.
            session.execute(
                sa.update(H)
                .where(H.c.run_id == self.run_id, H.c.resolution == PLANNED)
                .values(held_at=now)
            )
        if not planned:
            return
        ids = [row.id for row, _ in planned]
        pending = set(
            session.scalars(
                sa.select(H.c.address_id).where(
                    H.c.address_id.in_(ids),
                    H.c.resolved_at.is_(None),
                    sa.or_(H.c.resolution.is_(None), H.c.resolution == PLANNED),
                )
            )
        )
        rows = [
            {
                "address_id": row.id,
                "domain": row.registrable,
                "reason": _REASONS[verdict.kind],
                "verdict_reason": verdict.reason,
                "held_at": now,
                "resolution": PLANNED,
                "run_id": self.run_id,
            }
            for row, verdict in planned
            if row.id not in pending
        ]
        if rows:
            session.execute(sa.insert(H), rows)
            self._planned_any = True
            self.report.planned += len(rows)

    def _warnings_for(
        self, domain: str, judged: list[tuple[_AddressRow, Verdict]]
    ) -> list[_Warning]:
        by_user: dict[Any, _Warning] = {}
        for row, verdict in judged:
            if verdict.kind not in _WARN_KINDS or verdict.until is None:
                continue
            if row.expiry_warned_for == verdict.until:
                continue  # one warning per expiry date
            warning = by_user.get(row.user_id)
            if warning is None:
                warning = by_user[row.user_id] = _Warning(
                    row.user_id, domain, verdict.kind, verdict.until, verdict.reason, []
                )
            warning.rows.append(row)
        return list(by_user.values())

    def _queue_warnings(self, tx: Transaction, warnings: list[_Warning]) -> list[int]:
        """Mark the addresses warned, queue the warnings and journal them, all in the batch's
        transaction: a crash after its commit loses no warning and no record of one."""
        A = self._A
        updates = [
            {"b_id": row.id, "warned": warning.until}
            for warning in warnings
            for row in warning.rows
        ]
        if updates:
            stmt = (
                sa.update(A)
                .where(A.c.id == sa.bindparam("b_id"))
                .values(expiry_warned_for=sa.bindparam("warned"))
            )
            self.guard.db.session.execute(stmt, updates)
        ids: list[int] = []
        for warning in warnings:
            job_id = queue_expiry_warning(
                self.guard,
                tx,
                user_id=warning.user_id,
                domain=warning.domain,
                stage=warning.kind.value,
                until=warning.until,
                reason=warning.reason,
                addresses=[row.address for row in warning.rows],
            )
            if job_id is not None:
                ids.append(job_id)
        return ids

    def _send_warnings(self, job_ids: list[int]) -> None:
        """Deliver the batch's warnings now; a failed one stays queued and is retried."""
        outcome = deliver_now(self.guard, job_ids)
        self.report.warnings_sent += outcome.done
        self.report.errors += outcome.failed

    # -- 4. the circuit breaker ------------------------------------------------------------------

    def finish(self) -> SweepReport:
        """Apply the run's planned unverifications, or hold them all when there are too many.

        Planned actions of runs that died (no heartbeat for a lease period) are adopted first.
        """
        report, settings = self.report, self.settings
        if self.dry_run:
            if report.planned > settings.max_unverify:
                report.held, report.breaker_tripped = report.planned, True
            else:
                report.unverified = report.planned
            return report
        db, H = self.guard.db, self._H
        now = utcnow()
        db.session.execute(
            sa.update(H)
            .where(
                H.c.resolution == PLANNED,
                H.c.run_id != self.run_id,
                H.c.held_at < now - settings.sweep_lease,
            )
            .values(run_id=self.run_id, held_at=now)
        )
        db.session.commit()
        count = int(
            db.session.scalar(
                sa.select(sa.func.count())
                .select_from(H)
                .where(H.c.run_id == self.run_id, H.c.resolution == PLANNED)
            )
            or 0
        )
        if count > settings.max_unverify:
            self._hold_all(count)
        elif count:
            self._apply_planned()
        return report

    def _hold_all(self, count: int) -> None:
        guard, db, H = self.guard, self.guard.db, self._H
        log.warning(
            "circuit breaker: this run would unverify %d addresses (more than "
            "DOMAINGUARD_MAX_UNVERIFY = %d); all are held for review",
            count,
            self.settings.max_unverify,
        )
        EmailAddress = guard.models.EmailAddress
        with transaction(db, guard.models) as tx:
            rows = update_returning(
                db.session,
                self._dialect,
                H,
                H.c.id,
                [H.c.run_id == self.run_id, H.c.resolution == PLANNED],
                {"resolution": None},
                [H.c.id, H.c.address_id, H.c.domain, H.c.reason],
            )
            by_id = {
                a.id: a
                for a in db.session.scalars(
                    sa.select(EmailAddress).where(EmailAddress.id.in_([r[1] for r in rows]))
                )
            }
            for held_id, address_id, domain, reason in rows:
                address = by_id.get(address_id)
                tx.record(
                    EventKind.UNVERIFY_HELD,
                    actor="sweep",
                    address=address,
                    signal=signals.unverify_held,
                    held_action=held_id,
                    domain=domain,
                    reason=UnverifyReason(reason).value,
                    run=self.run_id,
                )
        self.report.held += len(rows)
        self.report.breaker_tripped = True

    def _apply_planned(self) -> None:
        guard, db, H = self.guard, self.guard.db, self._H
        HeldAction = guard.models.HeldAction
        while True:
            actions = list(
                db.session.scalars(
                    sa.select(HeldAction)
                    .where(HeldAction.run_id == self.run_id, HeldAction.resolution == PLANNED)
                    .order_by(HeldAction.id)
                    .limit(200)
                )
            )
            if not actions:
                return
            notices: list[_Notice] = []
            with transaction(db, guard.models) as tx:
                for action in actions:
                    # (the loop unverifies; the notices are queued in the same transaction)
                    # Taking the action row first makes the transition happen once, whatever
                    # other run (adopting orphans) looks at it at the same time.
                    taken = db.session.execute(
                        sa.update(H)
                        .where(
                            H.c.id == action.id,
                            H.c.run_id == self.run_id,
                            H.c.resolution == PLANNED,
                        )
                        .values(resolution=APPLIED, resolved_at=utcnow())
                    )
                    if taken.rowcount != 1:
                        continue
                    notice = _unverify_for(guard, tx, action, actor="sweep", run=self.run_id)
                    if notice is None:
                        db.session.execute(
                            sa.update(H).where(H.c.id == action.id).values(resolution=OBSOLETE)
                        )
                    else:
                        notices.append(notice)
                notice_jobs = _queue_notices(guard, tx, notices, actor="sweep")
            db.session.expire_all()
            self.report.unverified += len(notices)
            self.report.notices_sent += _send_notices(guard, notice_jobs, self.report)

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

        Batches are applied as their lookups complete, in any order, and new batches are
        claimed while fewer than two batches' worth of lookups are unfinished: a batch
        waiting for a few retries (with backoff, or a server's Retry-After) does not hold
        up the others.

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
        batch_size = self.settings.sweep_batch_size
        remaining = limit
        pending_names = list(names) if names is not None else None
        in_flight: dict[Any, list[Claim]] = {}
        applying: list[Claim] = []
        exhausted = False
        try:
            while True:
                while (
                    not exhausted
                    and len(in_flight) < MAX_BATCHES_IN_FLIGHT
                    and (len(in_flight) < 2 or self._lookups().pending < 2 * batch_size)
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
                        in_flight[self.submit_lookups(c.name for c in claims)] = claims
                if not in_flight:
                    break
                # A short wait, so that claiming resumes as soon as lookups free up.
                done, _ = concurrent.futures.wait(
                    list(in_flight), timeout=0.05, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    claims = applying = in_flight.pop(future)
                    self.apply_results(claims, future.result())
                    applying = []
                    if on_progress is not None:
                        on_progress(len(claims))
                    if finish:
                        self.heartbeat()
        except BaseException:
            # Leases of unfinished batches would expire anyway; giving them back now lets
            # the next run start at once.
            self.close()
            self.release(c.name for claims in [applying, *in_flight.values()] for c in claims)
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

    # -- the run record (flask domainguard status) --------------------------------------------

    #: Seconds between two heartbeats of a run's record.
    HEARTBEAT_EVERY = 10.0

    def record_start(self, started_at: datetime | None = None) -> None:
        """Write the run's record (``domainguard_sweep_run``) as running; commits."""
        if self.dry_run:
            return
        SweepRun = self.guard.models.SweepRun
        db = self.guard.db
        now = utcnow()
        if db.session.get(SweepRun, self.run_id) is None:
            db.session.add(
                SweepRun(
                    run_id=self.run_id,
                    started_at=started_at or now,
                    heartbeat_at=now,
                    outcome="running",
                    report={},
                )
            )
        db.session.commit()
        self._beat_at = time.monotonic()

    def heartbeat(self) -> None:
        """Refresh the run record's ``heartbeat_at`` (at most every few seconds)."""
        if self.dry_run or time.monotonic() - self._beat_at < self.HEARTBEAT_EVERY:
            return
        self._beat_at = time.monotonic()
        R = _table(self.guard.models.SweepRun)
        try:
            self.guard.db.session.execute(
                sa.update(R).where(R.c.run_id == self.run_id).values(heartbeat_at=utcnow())
            )
            self.guard.db.session.commit()
        except Exception:
            self.guard.db.session.rollback()
            log.warning("could not refresh the record of sweep run %s", self.run_id)

    def record_end(self, *, crashed: bool = False) -> None:
        """Store the run's outcome, exit code and report in its record; commits."""
        if self.dry_run:
            return
        code, outcome = self.report.outcome(self.settings.sweep_failing_share)
        R = _table(self.guard.models.SweepRun)
        now = utcnow()
        values: dict[str, Any] = {
            "heartbeat_at": now,
            "finished_at": now,
            "outcome": "crashed" if crashed else outcome,
            "exit_code": None if crashed else code,
            "report": self.report.as_dict(),
        }
        session = self.guard.db.session
        try:
            if not session.execute(
                sa.update(R).where(R.c.run_id == self.run_id).values(values)
            ).rowcount:
                session.execute(sa.insert(R).values(run_id=self.run_id, started_at=now, **values))
            session.commit()
        except Exception:
            session.rollback()
            log.warning("could not store the outcome of sweep run %s", self.run_id)


# -- acting on one address (shared by the sweep and apply_held) ------------------------------


def _unverify_for(
    guard: Guard, tx: Transaction, action: Any, *, actor: str, **details: Any
) -> _Notice | None:
    EmailAddress = guard.models.EmailAddress
    query = sa.select(EmailAddress).where(EmailAddress.id == action.address_id)
    if _dialect(guard) != "sqlite":  # SQLite has no row locks (its writer lock serialises)
        query = query.with_for_update()
    row = guard.db.session.scalar(query)
    if row is None or row.verified_at is None:
        return None
    reason = UnverifyReason(action.reason)
    unverify(
        tx,
        row,
        reason,
        actor=actor,
        domain=action.domain,
        verdict_reason=action.verdict_reason,
        held_action=action.id,
        **details,
    )
    return _Notice(row.user_id, row.id, row.address, action.domain, reason, action.verdict_reason)


def _queue_notices(
    guard: Guard, tx: Transaction, notices: list[_Notice], *, actor: str
) -> list[int]:
    """Queue one notice per user (in ``tx``, with the unverifications) telling their other
    safe addresses which addresses were unverified."""
    by_user: dict[Any, list[_Notice]] = {}
    for notice in notices:
        by_user.setdefault(notice.user_id, []).append(notice)
    ids: list[int] = []
    for user_id, items in by_user.items():
        job_id = queue_unverify_notice(
            guard,
            tx,
            user_id=user_id,
            exclude_id=items[0].exclude_id,
            actor=actor,
            items=[
                {
                    "address": n.address,
                    "domain": n.domain,
                    "reason": n.reason.value,
                    "explanation": n.verdict_reason,
                }
                for n in items
            ],
        )
        if job_id is not None:
            ids.append(job_id)
    return ids


def _send_notices(guard: Guard, job_ids: list[int], report: SweepReport) -> int:
    """Deliver queued notices now; a failed one stays queued and is retried."""
    outcome = deliver_now(guard, job_ids)
    report.errors += outcome.failed
    return outcome.done


# -- held actions --------------------------------------------------------------------------


@dataclass
class HeldOutcome:
    """What ``--apply-held`` or ``--dismiss-held`` did."""

    applied: int = 0
    dismissed: int = 0
    obsolete: int = 0
    still_held: int = 0
    errors: int = 0
    notices_sent: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _held_query(guard: Guard) -> sa.Select[Any]:
    HeldAction = guard.models.HeldAction
    return (
        sa.select(HeldAction)
        .where(HeldAction.resolution.is_(None), HeldAction.resolved_at.is_(None))
        .order_by(HeldAction.id)
    )


def apply_held(
    guard: Guard, *, backend_name: str | None = None, actor: str = "admin:cli"
) -> HeldOutcome:
    """Apply every held action whose domain a fresh lookup still finds unsafe for it.

    Each domain is looked up once; a successful answer is recorded through
    :mod:`.domainstate` like any other check, and each action's address is judged by its own
    proof date. An action whose address is gone, unverified already, or now judged safe
    becomes ``obsolete``; one whose lookup fails stays held.
    """
    db, settings = guard.db, guard.settings
    policy = policy_of(settings)
    outcome = HeldOutcome()
    actions = list(db.session.scalars(_held_query(guard)))
    if not actions:
        return outcome
    sweep = Sweep(guard, backend_name=backend_name)
    try:
        observations = sweep.lookup_batch({a.domain for a in actions})
    finally:
        sweep.close()
    now = utcnow()
    states = {
        name: record(guard, name, obs, actor=actor, now=now)
        for name, obs in observations.items()
        if is_informative(obs)
    }
    EmailAddress = guard.models.EmailAddress
    report = SweepReport()
    notices: list[_Notice] = []
    with transaction(db, guard.models) as tx:
        for action in list(db.session.scalars(_held_query(guard))):
            state = states.get(action.domain)
            if state is None:
                outcome.still_held += 1
                outcome.errors += 1
                continue
            address = db.session.get(EmailAddress, action.address_id)
            verified_at = address.verified_at if address is not None else None
            baseline = Baseline.of(address) if address is not None else None
            verdict = verdict_for(state, verified_at, now, policy, baseline)
            action.resolved_at = now
            if address is None or verified_at is None or not verdict.unsafe:
                action.resolution = OBSOLETE
                outcome.obsolete += 1
                why = "no longer verified" if verified_at is None else verdict.reason
                tx.record(
                    EventKind.HELD_DISMISSED,
                    actor=actor,
                    user_id=address.user_id if address is not None else None,
                    address=address,
                    held_action=action.id,
                    resolution=OBSOLETE,
                    why=why,
                )
                continue
            # The fresh verdict may name another reason (released, then re-registered).
            action.reason = _REASONS[verdict.kind]
            action.verdict_reason = verdict.reason
            action.resolution = APPLIED
            notice = _unverify_for(guard, tx, action, actor=actor)
            if notice is not None:
                notices.append(notice)
                outcome.applied += 1
            tx.record(EventKind.HELD_APPLIED, actor=actor, address=address, held_action=action.id)
        notice_jobs = _queue_notices(guard, tx, notices, actor="sweep")
    outcome.notices_sent = _send_notices(guard, notice_jobs, report)
    outcome.errors += report.errors
    return outcome


def dismiss_held(guard: Guard, *, actor: str = "admin:cli") -> HeldOutcome:
    """Dismiss every held action. Their domains' ``unsafe_since`` is cleared, so acting on
    them again takes two new unsafe checks ``DOMAINGUARD_CONFIRM_AFTER`` apart."""
    db = guard.db
    outcome = HeldOutcome()
    EmailAddress, Domain = guard.models.EmailAddress, guard.models.Domain
    now = utcnow()
    with transaction(db, guard.models) as tx:
        actions = list(db.session.scalars(_held_query(guard)))
        for action in actions:
            action.resolution = DISMISSED
            action.resolved_at = now
            address = db.session.get(EmailAddress, action.address_id)
            tx.record(
                EventKind.HELD_DISMISSED,
                actor=actor,
                user_id=address.user_id if address is not None else None,
                address=address if address is not None else None,
                held_action=action.id,
                domain=action.domain,
                resolution=DISMISSED,
            )
        names = sorted({a.domain for a in actions})
        if names:
            db.session.execute(
                sa.update(_table(Domain))
                .where(_table(Domain).c.name.in_(names))
                .values(unsafe_since=None)
            )
        outcome.dismissed = len(actions)
    return outcome
