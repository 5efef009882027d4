"""Adopting a host's existing ``User.email`` values as DomainGuard addresses, in batches.

Built for a million users in modest memory: users are read by keyset pagination on the
primary key, each batch is parsed, checked against what is stored with two ``IN`` queries,
and written with bulk inserts and one commit. A crash loses at most the batch in flight, and
a rerun skips what is already there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app

from . import signals
from .addresses import ensure_domains
from .emails import InvalidAddress, parse_address
from .journal import EventKind
from .timeutil import utcnow

if TYPE_CHECKING:
    from .extension import DomainGuard


@dataclass
class AdoptProblem:
    """An address that could not be adopted."""

    user_id: Any
    address: str
    error: str


@dataclass
class AdoptReport:
    """What an ``adopt`` run did."""

    users: int = 0
    adopted: int = 0
    already_present: int = 0
    no_address: int = 0
    problems: list[AdoptProblem] = field(default_factory=list)

    def summary_rows(self) -> list[tuple[str, Any]]:
        """Rows for the command's summary table."""
        return [
            ("users read", self.users),
            ("adopted", self.adopted),
            ("already present", self.already_present),
            ("without address", self.no_address),
            ("invalid or taken", len(self.problems)),
        ]


def adopt_addresses(
    guard: DomainGuard,
    *,
    verified: bool,
    batch_size: int = 1000,
    on_batch: Callable[[int], None] | None = None,
) -> AdoptReport:
    """Import every user's ``DOMAINGUARD_USER_EMAIL_ATTR`` value; see the module docstring."""
    db = guard.db
    User = guard.user_model
    attr = guard.settings.user_email_attr
    if not hasattr(User, attr):
        raise RuntimeError(
            f"{User.__name__} has no attribute {attr!r}; set DOMAINGUARD_USER_EMAIL_ATTR to the "
            "attribute holding each user's address."
        )
    pk = getattr(User, guard._user_pk_attr)
    email_col = getattr(User, attr)
    report = AdoptReport()
    last: Any = None
    while True:
        query = sa.select(pk, email_col).order_by(pk).limit(batch_size)
        if last is not None:
            query = query.where(pk > last)
        batch = db.session.execute(query).all()
        if not batch:
            break
        last = batch[-1][0]
        _adopt_batch(guard, batch, verified, report)
        db.session.expunge_all()  # keep memory flat across a million rows
        if on_batch is not None:
            on_batch(len(batch))
    return report


def _adopt_batch(guard: DomainGuard, batch: list[Any], verified: bool, report: AdoptReport) -> None:
    db = guard.db
    models = guard.models
    EmailAddress = models.EmailAddress
    report.users += len(batch)
    parsed_rows = []
    for user_id, raw in batch:
        if raw is None or not str(raw).strip():
            report.no_address += 1
            continue
        try:
            parsed_rows.append((user_id, parse_address(str(raw))))
        except InvalidAddress as exc:
            report.problems.append(AdoptProblem(user_id, str(raw), str(exc)))
    if not parsed_rows:
        return
    wanted = [p.normalized for _, p in parsed_rows]
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
                EmailAddress.user_id.in_([u for u, _ in parsed_rows]), EmailAddress.primary
            )
        )
    )
    now = utcnow()
    new_rows: list[dict[str, Any]] = []
    for user_id, parsed in parsed_rows:
        owner = existing.get(parsed.normalized, _MISSING)
        if owner is not _MISSING:
            if owner == user_id:
                report.already_present += 1
            else:
                report.problems.append(
                    AdoptProblem(user_id, parsed.normalized, "already used by another account")
                )
            continue
        existing[parsed.normalized] = user_id  # a duplicate later in this batch is a conflict
        new_rows.append(
            {
                "user_id": user_id,
                "address": parsed.normalized,
                "host": parsed.domain,
                "registrable": parsed.registrable,
                "primary": user_id not in with_primary,
                "verified_at": now if verified else None,
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
                "details": {"verified": verified, "primary": row["primary"]},
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
