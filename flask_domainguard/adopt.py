"""Adopting a host's existing ``User.email`` values as DomainGuard addresses, in batches.

Built for a million users in modest memory: users are read by keyset pagination on the
primary key, each batch is parsed, checked against what is stored with two ``IN`` queries,
and written with bulk inserts and one commit. A crash loses at most the batch in flight, and
a rerun skips what is already there.

An address adopted as verified needs a proof date, and it is never "now": the policy judges
a domain registered after the address's proof as re-registered, so stamping "now" would make
a domain that changed hands before adoption look safe for ever. The date comes from
``verified_since`` (one date for everybody) or, per user, from the host's creation-datetime
column named by ``DOMAINGUARD_USER_CREATED_ATTR``; ``verified_since`` wins when both exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app

from . import signals
from .addresses.store import ensure_domains
from .emails import InvalidAddress, parse_address
from .journal import EventKind
from .timeutil import as_utc, utcnow

if TYPE_CHECKING:
    from .context import Guard

#: No address on a registered domain can have been proven before the first .com (March 1985).
EARLIEST_PROOF = datetime(1985, 1, 1, tzinfo=timezone.utc)

NO_PROOF_DATE = (
    "adopting addresses as verified needs the date your app proved them: give --verified-since "
    "DATE (an ISO date such as 2021-03-01, no later than the first confirmation mail your app "
    "could have sent for them) or set DOMAINGUARD_USER_CREATED_ATTR to your user model's "
    "creation-datetime column (e.g. 'created_at'). DomainGuard never dates them 'now': a domain "
    "re-registered before the import would then look safe."
)


class AdoptError(ValueError):
    """``adopt`` cannot start as asked; the message says what to give instead."""


def proof_date(value: date | datetime, *, now: datetime | None = None) -> datetime:
    """``value`` as an aware UTC proof date: a ``date`` means 00:00 UTC that day, a naive
    ``datetime`` is UTC.

    :raises AdoptError: when it is before 1985 or in the future.
    """
    moment = _as_moment(value)
    problem = _implausible(moment, now or utcnow())
    if problem is not None:
        raise AdoptError(f"the proof date {moment.date().isoformat()} is {problem}.")
    return moment


def _as_moment(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return as_utc(value)
    return datetime.combine(value, time(0), tzinfo=timezone.utc)


def _implausible(moment: datetime, now: datetime) -> str | None:
    if moment < EARLIEST_PROOF:
        return "before 1985, earlier than any registered domain"
    if moment > now:
        # A later proof date would make a domain re-registered in between look safe.
        return "in the future"
    return None


@dataclass
class AdoptProblem:
    """An address that could not be adopted."""

    user_id: Any
    address: str
    error: str


@dataclass
class AdoptReport:
    """What an ``adopt`` run did; ``proof`` says where verified addresses' dates came from."""

    users: int = 0
    adopted: int = 0
    already_present: int = 0
    no_address: int = 0
    problems: list[AdoptProblem] = field(default_factory=list)
    proof: str = "none (unverified)"

    def summary_rows(self) -> list[tuple[str, Any]]:
        """Rows for the command's summary table."""
        return [
            ("users read", self.users),
            ("adopted", self.adopted),
            ("already present", self.already_present),
            ("without address", self.no_address),
            ("invalid, taken or undated", len(self.problems)),
            ("proof date", self.proof),
        ]


@dataclass(frozen=True)
class ProofSource:
    """Where verified addresses' ``verified_at`` comes from: one date, or a user column."""

    since: datetime | None = None
    column_name: str | None = None


def adopt_addresses(
    guard: Guard,
    *,
    verified: bool,
    verified_since: date | datetime | None = None,
    batch_size: int = 1000,
    on_batch: Callable[[int], None] | None = None,
) -> AdoptReport:
    """Import every user's ``DOMAINGUARD_USER_EMAIL_ATTR`` value; see the module docstring.

    :param verified: adopt the addresses as verified; needs ``verified_since`` or
        ``DOMAINGUARD_USER_CREATED_ATTR``. A user whose creation date is empty, not a
        datetime, before 1985 or in the future is listed in ``problems`` and not adopted,
        so that a rerun after fixing the column adopts it.
    :param verified_since: every verified address's proof date (a ``date`` is 00:00 UTC);
        it wins over ``DOMAINGUARD_USER_CREATED_ATTR``.
    :raises AdoptError: no proof date for ``verified``, an implausible ``verified_since``,
        ``verified_since`` without ``verified``, or a creation attribute that is no column.
    """
    db = guard.db
    User = guard.user_model
    attr = guard.settings.user_email_attr
    if not hasattr(User, attr):
        raise RuntimeError(
            f"{User.__name__} has no attribute {attr!r}; set DOMAINGUARD_USER_EMAIL_ATTR to the "
            "attribute holding each user's address."
        )
    proof = proof_source(guard, verified=verified, verified_since=verified_since)
    pk = guard.models.user_pk
    columns = [pk, getattr(User, attr)]
    if proof.column_name is not None:
        columns.append(getattr(User, proof.column_name))
    report = AdoptReport()
    if proof.since is not None:
        report.proof = proof.since.isoformat()
    elif proof.column_name is not None:
        report.proof = f"{User.__name__}.{proof.column_name}"
    last: Any = None
    while True:
        query = sa.select(*columns).order_by(pk).limit(batch_size)
        if last is not None:
            query = query.where(pk > last)
        batch = db.session.execute(query).all()
        if not batch:
            break
        last = batch[-1][0]
        _adopt_batch(guard, batch, verified, proof, report)
        db.session.expunge_all()  # keep memory flat across a million rows
        if on_batch is not None:
            on_batch(len(batch))
    return report


def proof_source(
    guard: Guard, *, verified: bool, verified_since: date | datetime | None
) -> ProofSource:
    """Check how adopted addresses will be dated, before reading any user.

    :raises AdoptError: as :func:`adopt_addresses` does.
    """
    if not verified:
        if verified_since is not None:
            raise AdoptError("a proof date only applies to addresses adopted as verified.")
        return ProofSource()
    if verified_since is not None:
        return ProofSource(since=proof_date(verified_since))
    name = guard.settings.user_created_attr
    if name is None:
        raise AdoptError(NO_PROOF_DATE)
    User = guard.user_model
    try:
        sa.select(getattr(User, name))
    except (AttributeError, sa.exc.ArgumentError):
        raise AdoptError(
            f"DOMAINGUARD_USER_CREATED_ATTR = {name!r}, but {User.__name__}.{name} is not a "
            "mapped column; name the column holding when each user signed up, or give "
            "--verified-since DATE instead."
        ) from None
    return ProofSource(column_name=name)


def _created_proof(name: str, value: Any, now: datetime) -> datetime | str:
    """A user's creation value as a proof date, or why it cannot be one."""
    if value is None:
        return f"{name} is empty: set it, or adopt with --verified-since DATE"
    if not isinstance(value, date):  # a datetime is a date too
        return f"{name} is a {type(value).__name__}, not a date or datetime"
    moment = _as_moment(value)
    problem = _implausible(moment, now)
    if problem is not None:
        return f"{name} {moment.isoformat()} is {problem}"
    return moment


def _adopt_batch(
    guard: Guard, batch: list[Any], verified: bool, proof: ProofSource, report: AdoptReport
) -> None:
    db = guard.db
    models = guard.models
    EmailAddress = models.EmailAddress
    report.users += len(batch)
    now = utcnow()
    parsed_rows = []
    for user_id, raw, *created in batch:
        if raw is None or not str(raw).strip():
            report.no_address += 1
            continue
        try:
            parsed_rows.append((user_id, parse_address(str(raw)), created[0] if created else None))
        except InvalidAddress as exc:
            report.problems.append(AdoptProblem(user_id, str(raw), str(exc)))
    if not parsed_rows:
        return
    wanted = [p.normalized for _, p, _ in parsed_rows]
    existing = dict(
        db.session.execute(
            sa.select(EmailAddress.address, EmailAddress.user_id).where(
                EmailAddress.address.in_(wanted)
            )
        ).all()
    )
    with_primary = set(
        db.session.scalars(
            sa.select(EmailAddress.user_id).where(
                EmailAddress.user_id.in_([u for u, _, _ in parsed_rows]), EmailAddress.primary
            )
        )
    )
    new_rows: list[dict[str, Any]] = []
    for user_id, parsed, created in parsed_rows:
        owner = existing.get(parsed.normalized, _MISSING)
        if owner is not _MISSING:
            if owner == user_id:
                report.already_present += 1
            else:
                report.problems.append(
                    AdoptProblem(user_id, parsed.normalized, "already used by another account")
                )
            continue
        verified_at: datetime | None = proof.since
        if verified and proof.column_name is not None:
            dated = _created_proof(proof.column_name, created, now)
            if isinstance(dated, str):
                report.problems.append(AdoptProblem(user_id, parsed.normalized, dated))
                continue
            verified_at = dated
        existing[parsed.normalized] = user_id  # a duplicate later in this batch is a conflict
        new_rows.append(
            {
                "user_id": user_id,
                "address": parsed.normalized,
                "host": parsed.domain,
                "registrable": parsed.registrable,
                "primary": user_id not in with_primary,
                "verified_at": verified_at,
                "created_at": now,
            }
        )
        with_primary.add(user_id)
    if not new_rows:
        return
    ensure_domains(guard, {row["registrable"] for row in new_rows})
    db.session.execute(sa.insert(EmailAddress), new_rows)
    ids = dict(
        db.session.execute(
            sa.select(EmailAddress.address, EmailAddress.id).where(
                EmailAddress.address.in_([row["address"] for row in new_rows])
            )
        ).all()
    )
    db.session.execute(
        sa.insert(models.Event),
        [
            {
                "kind": EventKind.ADDRESS_ADOPTED.value,
                "user_id": row["user_id"],
                "address_id": ids[row["address"]],
                "address": row["address"],
                "details": {
                    "verified": verified,
                    "primary": row["primary"],
                    "verified_at": None
                    if row["verified_at"] is None
                    else row["verified_at"].isoformat(),
                    "proof": report.proof,
                },
                "actor": "admin:adopt",
                "created_at": now,
            }
            for row in new_rows
        ],
    )
    db.session.commit()
    report.adopted += len(new_rows)
    if signals.address_added.receivers:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        for row in new_rows:
            signals.address_added.send(
                app, user_id=row["user_id"], address=row["address"], adopted=True
            )


_MISSING = object()
