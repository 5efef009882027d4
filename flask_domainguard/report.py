"""What an operator should look at: ``flask domainguard report``.

Read-only queries over the stored sweep results, each a section with a full count and the
first ``limit`` rows, most urgent first:

- ``at_risk``: accounts whose every verified address is on a custom (untrusted) domain *and*
  that have no 2FA: one lapsed domain and a reset opens them, so they come first (soonest
  expiring domain first);
- ``custom_only``: accounts whose verified addresses are all on custom (untrusted) domains:
  if that domain lapses they can no longer receive a reset, so ask them to add another;
- ``expiring``: domains expiring within ``DOMAINGUARD_WARN_WITHIN``;
- ``in_grace``: lapsing domains, with the moment they count as expired;
- ``held``: unverifications the circuit breaker held for review;
- ``failing``: domains whose lookups keep failing;
- ``without_2fa``: users active since ``DOMAINGUARD_2FA_REQUIRED_SINCE`` who have not enrolled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .timeutil import utcnow
from .twofactor.requirement import active_users_without_2fa
from .verdict import UNSAFE_KINDS, VerdictKind

if TYPE_CHECKING:
    from .context import Guard

__all__ = ["FAILING_AFTER", "SECTIONS", "Report", "Section", "build_report", "render_text"]

#: A domain counts as "keeps failing" after this many failed checks in a row.
FAILING_AFTER = 3

SECTIONS = ("at_risk", "custom_only", "expiring", "in_grace", "held", "failing", "without_2fa")

_TITLES = {
    "at_risk": "Accounts most at risk: every verified address on a custom domain, and no 2FA",
    "custom_only": "Accounts whose verified addresses are all on custom domains",
    "expiring": "Domains expiring within the warning window",
    "in_grace": "Domains in grace (lapsing)",
    "held": "Held unverifications (then: flask domainguard sweep --apply-held or --dismiss-held)",
    "failing": f"Domains whose lookups failed {FAILING_AFTER} or more times in a row",
    "without_2fa": "Active users without 2FA (DOMAINGUARD_2FA_REQUIRED_SINCE; exempt left out)",
}


@dataclass
class Section:
    """One part of the report: how many there are, and the first rows."""

    name: str
    title: str
    count: int
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "count": self.count, "rows": self.rows}


@dataclass
class Report:
    """The report: sections by name, and when it was made."""

    generated_at: datetime
    sections: dict[str, Section]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data (``--json``); ``sections`` names them in the report's order."""
        return {
            "generated_at": self.generated_at.isoformat(),
            "sections": list(self.sections),
            **{name: section.as_dict() for name, section in self.sections.items()},
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _verified_counts(guard: Guard) -> Any:
    A = guard.models.EmailAddress
    return (
        sa.select(A.registrable.label("name"), sa.func.count().label("addresses"))
        .where(A.verified_at.is_not(None))
        .group_by(A.registrable)
        .subquery()
    )


def _only_custom_users(guard: Guard) -> Any:
    """Users whose verified addresses are all on custom domains, with their soonest expiry."""
    A, D = guard.models.EmailAddress, guard.models.Domain
    trusted = sorted(guard.settings.trusted_domains)
    is_trusted = sa.case((A.registrable.in_(trusted), 1), else_=0) if trusted else sa.literal(0)
    return (
        sa.select(A.user_id, sa.func.min(D.expires_at).label("soonest"))
        .join(D, D.name == A.registrable, isouter=True)
        .where(A.verified_at.is_not(None))
        .group_by(A.user_id)
        # Every verified address custom, however many: each domain can lapse, and none of
        # them is a fallback the user is sure to keep (the account page warns the same way).
        .having(sa.func.sum(is_trusted) == 0)
    )


def _address_rows(guard: Guard, user_ids: list[Any]) -> list[dict[str, Any]]:
    """One row per verified address of these users, in the users' order."""
    if not user_ids:
        return []
    A, D = guard.models.EmailAddress, guard.models.Domain
    query = (
        sa.select(A.user_id, A.address, A.registrable, D.expires_at)
        .join(D, D.name == A.registrable, isouter=True)
        .where(A.user_id.in_(user_ids), A.verified_at.is_not(None))
        .order_by(A.address)
    )
    by_user: dict[Any, list[dict[str, Any]]] = {}
    for user_id, address, domain, expires_at in guard.db.session.execute(query):
        by_user.setdefault(user_id, []).append(
            {
                "user_id": user_id,
                "address": address,
                "domain": domain,
                "expires_at": _iso(expires_at),
            }
        )
    return [row for user_id in user_ids for row in by_user.get(user_id, [])]


def _at_risk(guard: Guard, limit: int) -> Section:
    A, T = guard.models.EmailAddress, guard.models.TOTPDevice
    session = guard.db.session
    has_2fa = sa.select(T.id).where(T.user_id == A.user_id, T.confirmed_at.is_not(None)).exists()
    users = _only_custom_users(guard).where(~has_2fa).subquery()
    count = int(session.scalar(sa.select(sa.func.count()).select_from(users)) or 0)
    # Soonest expiring domain first (unknown expiry last): the first to lapse is the first
    # that lets a stranger reset the password.
    order = (users.c.soonest.is_(None), users.c.soonest, users.c.user_id)
    sample = list(session.scalars(sa.select(users.c.user_id).order_by(*order).limit(limit)))
    columns = ["user_id", "address", "domain", "expires_at"]
    return Section("at_risk", _TITLES["at_risk"], count, columns, _address_rows(guard, sample))


def _custom_only(guard: Guard, limit: int) -> Section:
    session = guard.db.session
    users = _only_custom_users(guard).subquery()
    count = int(session.scalar(sa.select(sa.func.count()).select_from(users)) or 0)
    sample = list(
        session.scalars(sa.select(users.c.user_id).order_by(users.c.user_id).limit(limit))
    )
    rows = [
        {k: row[k] for k in ("user_id", "address", "domain")}
        for row in _address_rows(guard, sample)
    ]
    return Section(
        "custom_only", _TITLES["custom_only"], count, ["user_id", "address", "domain"], rows
    )


def _domains(
    guard: Guard,
    name: str,
    where: list[Any],
    order: Any,
    columns: list[str],
    limit: int,
) -> Section:
    D = guard.models.Domain
    session = guard.db.session
    counts = _verified_counts(guard)
    base = sa.select(D, sa.func.coalesce(counts.c.addresses, 0)).outerjoin(
        counts, counts.c.name == D.name
    )
    count = int(session.scalar(sa.select(sa.func.count()).select_from(D).where(*where)) or 0)
    rows = []
    for domain, addresses in session.execute(base.where(*where).order_by(order).limit(limit)):
        row: dict[str, Any] = {"domain": domain.name, "verified_addresses": int(addresses)}
        for column in columns:
            if column in row:
                continue
            value = getattr(domain, column)
            row[column] = _iso(value) if isinstance(value, datetime) else value
        rows.append(row)
    return Section(name, _TITLES[name], count, ["domain", *columns], rows)


def _held(guard: Guard, limit: int) -> Section:
    H = guard.models.HeldAction
    A = guard.models.EmailAddress
    session = guard.db.session
    pending = [H.resolution.is_(None), H.resolved_at.is_(None)]
    count = int(session.scalar(sa.select(sa.func.count()).select_from(H).where(*pending)) or 0)
    query = (
        sa.select(H, A.address, A.user_id)
        .outerjoin(A, A.id == H.address_id)
        .where(*pending)
        .order_by(H.id)
        .limit(limit)
    )
    rows = [
        {
            "id": action.id,
            "address": address,
            "user_id": user_id,
            "domain": action.domain,
            "reason": action.reason.value if hasattr(action.reason, "value") else action.reason,
            "verdict_reason": action.verdict_reason,
            "held_at": _iso(action.held_at),
        }
        for action, address, user_id in session.execute(query)
    ]
    columns = ["id", "address", "domain", "reason", "held_at"]
    return Section("held", _TITLES["held"], count, columns, rows)


def _without_2fa(guard: Guard, limit: int) -> Section:
    users = active_users_without_2fa(guard)
    rows = [
        {
            "user_id": user.user_id,
            "last_login_at": _iso(user.last_login_at),
            "deadline": _iso(user.deadline),
        }
        for user in users[:limit]
    ]
    columns = ["user_id", "last_login_at", "deadline"]
    return Section("without_2fa", _TITLES["without_2fa"], len(users), columns, rows)


def build_report(guard: Guard, *, only: list[str] | None = None, limit: int = 50) -> Report:
    """Run the report's queries (all sections, or those named in ``only``)."""
    D = guard.models.Domain
    now = utcnow()
    wanted = only or list(SECTIONS)
    settings = guard.settings
    unsafe = sorted(k.value for k in UNSAFE_KINDS)
    sections: dict[str, Section] = {}
    for name in wanted:
        if name == "at_risk":
            sections[name] = _at_risk(guard, limit)
        elif name == "custom_only":
            sections[name] = _custom_only(guard, limit)
        elif name == "expiring":
            sections[name] = _domains(
                guard,
                name,
                [
                    D.expires_at > now,
                    D.expires_at <= now + settings.warn_within,
                    sa.or_(D.verdict.is_(None), D.verdict.not_in(unsafe)),
                ],
                D.expires_at,
                ["expires_at", "verdict", "verified_addresses"],
                limit,
            )
        elif name == "in_grace":
            sections[name] = _domains(
                guard,
                name,
                [D.verdict == VerdictKind.IN_GRACE.value],
                D.verdict_until,
                ["verdict_until", "verified_addresses", "verdict_reason"],
                limit,
            )
        elif name == "held":
            sections[name] = _held(guard, limit)
        elif name == "failing":
            sections[name] = _domains(
                guard,
                name,
                [D.failures >= FAILING_AFTER],
                D.failures.desc(),
                ["failures", "last_error", "next_check_at", "verified_addresses"],
                limit,
            )
        elif name == "without_2fa":
            sections[name] = _without_2fa(guard, limit)
        else:
            raise ValueError(f"unknown report section {name!r}; known: {', '.join(SECTIONS)}")
    return Report(generated_at=now, sections=sections)


def render_text(report: Report) -> list[str]:
    """The report as aligned text tables, one section after another."""
    lines: list[str] = []
    for section in report.sections.values():
        lines.append(f"{section.title}: {section.count}")
        if section.rows:
            cells = [
                ["" if row.get(c) is None else str(row.get(c)) for c in section.columns]
                for row in section.rows
            ]
            widths = [
                max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(section.columns)
            ]
            lines.append(
                "  "
                + "  ".join(
                    c.ljust(w) for c, w in zip(section.columns, widths, strict=True)
                ).rstrip()
            )
            lines += [
                "  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                for r in cells
            ]
            if section.count > len(section.rows):
                lines.append(
                    f"  ... and {section.count - len(section.rows)} more (--limit, --json)"
                )
        lines.append("")
    return lines
