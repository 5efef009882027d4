"""The sweep's SQL: which domains are due, leasing them, reading a batch's states and
addresses, and writing a batch's results, plans and warning marks, each in one statement per
batch.

A domain's observation, memory and verdict columns are computed by :mod:`..domainstate`
(:func:`~..domainstate.advance`, :func:`~..domainstate.row_values`), the one path for them;
this module writes the rows it gives, with the sweep's own columns (schedule, lease).

Long because every statement on the sweep's tables sits together, so that their locking
order reads in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..dnsverdict import BASELINE_COLUMNS, Baseline
from ..domainstate import STATE_COLUMNS, DomainState, first_seen_update
from ..models import MYSQL_DIALECTS, UnverifyReason
from ..sqlcompat import in_chunks, update_returning
from ..timeutil import as_utc, utcnow
from ..verdict import Verdict, VerdictKind

if TYPE_CHECKING:
    from ..context import Guard

__all__ = ["APPLIED", "DISMISSED", "OBSOLETE", "PLANNED", "AddressRow", "Claim", "SweepStore"]

log = logging.getLogger(__name__)

#: A held action's ``resolution``: planned by a run (its circuit breaker decides), then
#: applied, dismissed or obsolete; ``None`` while held for review.
PLANNED = "planned"
APPLIED = "applied"
DISMISSED = "dismissed"
OBSOLETE = "obsolete"

#: The unverify reason for each unsafe verdict.
REASONS = {
    VerdictKind.RELEASED: UnverifyReason.DOMAIN_RELEASED,
    VerdictKind.EXPIRED: UnverifyReason.DOMAIN_EXPIRED,
    VerdictKind.REREGISTERED: UnverifyReason.DOMAIN_REREGISTERED,
    VerdictKind.DNS_CHANGED: UnverifyReason.DNS_CHANGED,
}


@dataclass(frozen=True)
class Claim:
    """A domain leased to this run. Its state is read again when the results are applied,
    under the batch's locks (:meth:`SweepStore.confirm_leases`, then
    :meth:`SweepStore.load_states`).

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


@dataclass(frozen=True)
class AddressRow:
    """A verified address on a batch's domain, as the sweep judges it."""

    id: int
    user_id: Any
    address: str
    registrable: str
    verified_at: datetime
    expiry_warned_for: datetime | None
    baseline: Baseline | None = None


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def table_of(model: type[Any]) -> sa.Table:
    """The mapped class's table (Core statements skip the ORM's per-row work)."""
    table: sa.Table = model.__table__
    return table


def dialect_of(guard: Guard) -> str:
    """The name of the Domain table's database dialect."""
    bind = guard.db.session.get_bind(mapper=sa.inspect(guard.models.Domain))
    return str(bind.dialect.name)


class SweepStore:
    """The database side of one sweep run (see :class:`~.engine.Sweep` for the parameters)."""

    def __init__(
        self,
        guard: Guard,
        *,
        run_id: str,
        lease_owner: str,
        cutoff: datetime,
        name_range: tuple[str | None, str | None] | None,
        dry_run: bool,
    ) -> None:
        self.guard = guard
        self.settings = guard.settings
        self.run_id = run_id
        self.lease_owner = lease_owner
        self.cutoff = cutoff
        self.name_range = name_range
        self.dry_run = dry_run
        self.dialect = dialect_of(guard)
        self.planned_any = False
        self._after: str | None = None  # dry-run keyset position
        m = guard.models
        self.D = table_of(m.Domain)
        self.A = table_of(m.EmailAddress)
        self.H = table_of(m.HeldAction)

    @property
    def session(self) -> Any:
        return self.guard.db.session

    # -- what is due -------------------------------------------------------------------------

    def lease_free(self, now: datetime) -> sa.ColumnElement[bool]:
        D = self.D
        return sa.or_(D.c.lease_until.is_(None), D.c.lease_until < now)

    def due(self, now: datetime, *, leased_ok: bool = False) -> list[sa.ColumnElement[bool]]:
        """The conditions of a domain due in this run."""
        D, A = self.D, self.A
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
            clauses.append(self.lease_free(now))
        return clauses

    def chunk_starts(self, size: int) -> list[str]:
        """The first name of every ``size`` due domains, in name order."""
        D = self.D
        numbered = (
            sa.select(D.c.name, sa.func.row_number().over(order_by=D.c.name).label("n"))
            .where(*self.due(utcnow()))
            .subquery()
        )
        starts = list(
            self.session.scalars(
                sa.select(numbered.c.name)
                .where((numbered.c.n - 1) % size == 0)
                .order_by(numbered.c.name)
            )
        )
        self.session.rollback()
        return starts

    def count_due(self) -> int:
        query = sa.select(sa.func.count()).select_from(self.D).where(*self.due(utcnow()))
        return int(self.session.scalar(query) or 0)

    def count_trusted(self) -> int:
        D, A = self.D, self.A
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
        return int(self.session.scalar(query) or 0)

    def _leased_elsewhere(self, now: datetime) -> list[sa.ColumnElement[bool]]:
        D = self.D
        return [
            *self.due(now, leased_ok=True),
            D.c.lease_until >= now,
            D.c.lease_owner != self.lease_owner,
        ]

    def count_leased_elsewhere(self) -> int:
        query = (
            sa.select(sa.func.count()).select_from(self.D).where(*self._leased_elsewhere(utcnow()))
        )
        return int(self.session.scalar(query) or 0)

    def leftovers(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """What other runs hold: due domains per lease owner, planned actions per run."""
        D, H = self.D, self.H
        session = self.session
        leased = session.execute(
            sa.select(D.c.lease_owner, sa.func.count())
            .where(*self._leased_elsewhere(utcnow()))
            .group_by(D.c.lease_owner)
        ).all()
        planned = session.execute(
            sa.select(H.c.run_id, sa.func.count())
            .where(H.c.resolution == PLANNED, H.c.run_id != self.run_id)
            .group_by(H.c.run_id)
        ).all()
        session.rollback()
        return [(o, int(n)) for o, n in leased], [(r, int(n)) for r, n in planned]

    # -- leases ------------------------------------------------------------------------------

    def claim(self, size: int, names: Sequence[str] | None = None) -> list[Claim]:
        """Lease up to ``size`` due domains (or the given ``names``, due or not); commits.

        With ``dry_run`` nothing is leased: the due domains are read in name order.
        """
        session, D = self.session, self.D
        now = utcnow()
        columns = (D.c.name, D.c.failures)
        if names is not None:
            where: list[sa.ColumnElement[bool]] = [D.c.name.in_(list(names))]
            trusted = sorted(self.settings.trusted_domains)
            if trusted:
                where.append(D.c.name.not_in(trusted))
        else:
            where = self.due(now)
        if self.dry_run:
            query = sa.select(*columns).where(*where).order_by(D.c.name).limit(size)
            if self._after is not None and names is None:
                query = query.where(D.c.name > self._after)
            rows = session.execute(query).all()
            session.rollback()
            if rows and names is None:
                self._after = rows[-1][0]
            return [Claim(name=row[0], failures=int(row[1] or 0), claimed_at=now) for row in rows]
        pick = sa.select(D.c.name).where(*where, self.lease_free(now))
        if names is None:
            pick = pick.order_by(D.c.next_check_at, D.c.name)
        pick = pick.limit(size)
        if self.dialect == "postgresql" or self.dialect in MYSQL_DIALECTS:
            pick = pick.with_for_update(skip_locked=True)
        lease = {"lease_owner": self.lease_owner, "lease_until": now + self.settings.sweep_lease}
        try:
            if self.dialect in MYSQL_DIALECTS:
                # MySQL/MariaDB have no UPDATE ... RETURNING and refuse LIMIT in an IN
                # subquery: lock the picked rows (skipping other sweepers' locks), lease
                # them and read them back, in one transaction.
                picked = list(session.scalars(pick))
                rows = []
                if picked:
                    session.execute(sa.update(D).where(D.c.name.in_(picked)).values(lease))
                    rows = list(
                        session.execute(
                            sa.select(*columns).where(D.c.name.in_(picked)).order_by(D.c.name)
                        ).all()
                    )
            else:
                claim = (
                    sa.update(D)
                    .where(D.c.name.in_(pick), self.lease_free(now))
                    .values(lease)
                    .returning(*columns)
                )
                rows = list(session.execute(claim).all())
            session.commit()
        except BaseException:
            session.rollback()
            raise
        return [Claim(name=row[0], failures=int(row[1] or 0), claimed_at=now) for row in rows]

    def release(self, names: Iterable[str] | None = None) -> None:
        """Give back this run's leases (all of them, or on ``names``); commits."""
        if self.dry_run:
            return
        D = self.D
        stmt = sa.update(D).where(D.c.lease_owner == self.lease_owner)
        if names is not None:
            stmt = stmt.where(D.c.name.in_(list(names)))
        try:
            self.session.execute(stmt.values(lease_owner=None, lease_until=None))
            self.session.commit()
        except Exception:
            self.session.rollback()
            log.warning(
                "could not release the leases of run %s; they expire by themselves", self.run_id
            )

    def confirm_leases(self, names: list[str], now: datetime) -> set[str]:
        """Re-assert this run's leases in the current transaction; the names still ours.

        The UPDATE takes the write lock (SQLite) or the rows' locks (PostgreSQL; on MySQL the
        locking read before it) first, so nothing another sweeper does can interleave with
        this batch's changes.
        """
        D = self.D
        rows = update_returning(
            self.session,
            self.dialect,
            D,
            D.c.name,
            [D.c.name.in_(names), D.c.lease_owner == self.lease_owner],
            {"lease_until": now + self.settings.sweep_lease},
            [D.c.name],
        )
        return {row[0] for row in rows}

    # -- reading a batch ---------------------------------------------------------------------

    def load_states(self, names: Iterable[str]) -> dict[str, DomainState]:
        """The stored states of ``names``, read after this batch took their locks, so a live
        check's write between the claim and now is built on, not overwritten."""
        D = self.D
        wanted = list(names)
        if not wanted:
            return {}
        query = sa.select(*(D.c[column] for column in STATE_COLUMNS)).where(D.c.name.in_(wanted))
        return {row.name: DomainState.of(row) for row in self.session.execute(query)}

    def load_addresses(self, names: Iterable[str]) -> dict[str, list[AddressRow]]:
        """The verified addresses on each of ``names``."""
        A = self.A
        wanted = list(names)
        found: dict[str, list[AddressRow]] = {name: [] for name in wanted}
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
        for row in self.session.execute(query):
            found[row[3]].append(
                AddressRow(
                    row[0], row[1], row[2], row[3], as_utc(row[4]), _aware(row[5]), Baseline.of(row)
                )
            )
        return found

    # -- writing a batch -----------------------------------------------------------------------

    def write_domains(self, *groups: list[dict[str, Any]]) -> None:
        """Write every row (``b_name`` naming the domain, the other keys its new column
        values) and give their leases back: one executemany per set of columns."""
        D = self.D
        # Rows of one group may differ in their columns: a domain judged on DNS evidence
        # alone (no status observation) has no status columns to write.
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for rows in groups:
            for row in rows:
                shapes.setdefault(tuple(key for key in row if key != "b_name"), []).append(row)
        for columns, rows in shapes.items():
            # Bind names must differ from column names in an UPDATE's SET clause.
            values: dict[str, Any] = {column: sa.bindparam(f"v_{column}") for column in columns}
            values.update(lease_owner=None, lease_until=None)
            stmt = sa.update(D).where(D.c.name == sa.bindparam("b_name")).values(values)
            params = [
                {"b_name": row["b_name"], **{f"v_{c}": row[c] for c in columns}} for row in rows
            ]
            self.session.execute(stmt, params)

    def write_first_seen(self, rows: list[dict[str, Any]]) -> None:
        """Record first-seen DNS baselines (:func:`~..domainstate.first_seen_params` rows)."""
        if rows:
            self.session.execute(first_seen_update(self.guard), rows)

    def plan(self, planned: list[tuple[AddressRow, Verdict]], now: datetime) -> int:
        """Plan the unverification of each address (unless one is pending already) for this
        run's circuit breaker; refresh the run's planned actions. Returns how many are new."""
        H, session = self.H, self.session
        if self.planned_any or self.lease_owner != self.run_id:
            # Heartbeat: a live run's planned actions are never adopted by another run. A
            # chunk of a shared run beats for its sibling chunks' actions too. By primary key:
            # on MySQL/MariaDB an UPDATE by run_id takes next-key locks on that index, which
            # deadlocked with another run inserting its own plans.
            mine = list(
                session.scalars(
                    sa.select(H.c.id).where(H.c.run_id == self.run_id, H.c.resolution == PLANNED)
                )
            )
            for chunk in in_chunks(mine):
                session.execute(sa.update(H).where(H.c.id.in_(chunk)).values(held_at=now))
        if not planned:
            return 0
        ids = [row.id for row, _ in planned]
        # Every address of a batch's unsafe domains: unbounded, hence a statement per chunk.
        pending = {
            address_id
            for chunk in in_chunks(ids)
            for address_id in session.scalars(
                sa.select(H.c.address_id).where(
                    H.c.address_id.in_(chunk),
                    H.c.resolved_at.is_(None),
                    sa.or_(H.c.resolution.is_(None), H.c.resolution == PLANNED),
                )
            )
        }
        rows = [
            {
                "address_id": row.id,
                "domain": row.registrable,
                "reason": REASONS[verdict.kind],
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
            self.planned_any = True
        return len(rows)

    def mark_warned(self, warned: list[tuple[int, datetime]]) -> None:
        """Set ``expiry_warned_for`` of each ``(address id, expiry)``."""
        if not warned:
            return
        A = self.A
        stmt = (
            sa.update(A)
            .where(A.c.id == sa.bindparam("b_id"))
            .values(expiry_warned_for=sa.bindparam("warned"))
        )
        self.session.execute(stmt, [{"b_id": i, "warned": until} for i, until in warned])
