"""What an operator checks first: ``flask domainguard status`` and the Prometheus metrics.

One function, :func:`overview`, reads the figures from the database (and nothing else): the
job queue, the domain leases and who holds them, unverifications planned by sweep runs, the
last sweep runs, and the domains whose lookups fail, per status server.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .jobs import job_stats
from .owners import owner_alive
from .sweep import PLANNED
from .timeutil import utcnow

if TYPE_CHECKING:
    from .context import Guard


def _alive_text(alive: bool | None) -> str:
    return {True: "alive", False: "dead", None: "unknown"}[alive]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _per_owner(
    session: Any,
    owner: sa.ColumnElement[Any],
    when: sa.ColumnElement[Any],
    where: sa.ColumnElement[bool],
    keys: tuple[str, str, str],
) -> dict[str, Any]:
    """The rows matching ``where`` grouped by ``owner`` (a run id or lease owner): per owner,
    how many and the latest ``when`` (under ``keys``: owner, count, time) and whether its
    process still runs; with the total and how many a dead process holds."""
    owner_key, count_key, when_key = keys
    rows = [
        {
            owner_key: name,
            count_key: int(count),
            when_key: str(latest) if latest is not None else None,
            "process": _alive_text(owner_alive(name)),
        }
        for name, count, latest in session.execute(
            sa.select(owner, sa.func.count(), sa.func.max(when))
            .where(where)
            .group_by(owner)
            .order_by(owner)
        )
    ]
    return {
        "total": sum(row[count_key] for row in rows),
        "dead": sum(row[count_key] for row in rows if row["process"] == "dead"),
        "rows": rows,
    }


def _run(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    outcome = row.outcome
    if row.finished_at is None and owner_alive(row.run_id) is False:
        outcome = "died"  # killed: its process is gone and it never wrote an outcome
    report = row.report or {}
    return {
        "run_id": row.run_id,
        "started_at": _iso(row.started_at),
        "heartbeat_at": _iso(row.heartbeat_at),
        "finished_at": _iso(row.finished_at),
        "outcome": outcome,
        "exit_code": row.exit_code,
        "checked": report.get("checked"),
        "errors": report.get("errors"),
        "unverified": report.get("unverified"),
        "held": report.get("held"),
    }


def overview(guard: Guard) -> dict[str, Any]:
    """The operator's figures as JSON-ready data (the keys of ``status --json``)."""
    m = guard.models
    session = guard.db.session
    now = utcnow()
    D, H, R = (
        m.Domain.__table__,  # type: ignore[attr-defined]
        m.HeldAction.__table__,  # type: ignore[attr-defined]
        m.SweepRun,
    )

    leases = _per_owner(
        session,
        D.c.lease_owner,
        D.c.lease_until,
        D.c.lease_until >= now,
        ("owner", "domains", "until"),
    )
    planned = _per_owner(
        session,
        H.c.run_id,
        H.c.held_at,
        H.c.resolution == PLANNED,
        ("run_id", "actions", "heartbeat"),
    )
    held = int(
        session.scalar(
            sa.select(sa.func.count())
            .select_from(H)
            .where(H.c.resolution.is_(None), H.c.resolved_at.is_(None))
        )
        or 0
    )

    last = session.scalar(sa.select(R).order_by(R.started_at.desc()).limit(1))
    last_finished = session.scalar(
        sa.select(R).where(R.finished_at.is_not(None)).order_by(R.finished_at.desc()).limit(1)
    )

    failing: dict[str, int] = {}
    names = list(session.scalars(sa.select(D.c.name).where(D.c.failures > 0)))
    if names:
        try:
            backend: Any = guard.status_backend()
        except Exception:
            backend = None
        for name in names:
            try:
                server = str(backend.server_key(name))
            except Exception:
                server = "unknown"
            failing[server] = failing.get(server, 0) + 1
    session.rollback()

    return {
        "jobs": job_stats(guard),
        "leases": {
            "domains": leases["total"],
            "dead": leases["dead"],
            "owners": leases["rows"],
        },
        "planned_unverifications": {
            "actions": planned["total"],
            "dead": planned["dead"],
            "runs": planned["rows"],
        },
        "held_unverifications": held,
        "last_sweep": _run(last),
        "last_finished_sweep": _run(last_finished),
        "failing_lookups": {
            "domains": len(names),
            "by_server": dict(sorted(failing.items())),
        },
        "now": now.isoformat(),
    }


def job_rows(jobs: dict[str, Any]) -> list[tuple[str, Any]]:
    """Table rows for :func:`~flask_domainguard.jobs.job_stats` (``jobs`` and ``status``)."""
    rows: list[tuple[str, Any]] = [("jobs pending", jobs["pending"])]
    rows += [(f"  {kind}", n) for kind, n in jobs["pending_by_kind"].items() if n]
    oldest = jobs["oldest_pending_seconds"]
    rows += [
        ("  oldest pending (s)", "-" if oldest is None else oldest),
        ("  waiting for a retry", jobs["retrying"]),
        ("jobs running", jobs["running"]),
    ]
    rows += [(f"  {owner}", n) for owner, n in jobs["running_by_owner"].items()]
    rows += [
        ("jobs failed (gave up)", jobs["failed"]),
        ("jobs shed (requests)", f"{jobs['shed']} ({jobs['shed_requests']})"),
    ]
    return rows


def summary_rows(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """Rows for the ``status`` command's table."""
    rows = job_rows(data["jobs"])
    rows.append(("domains leased", data["leases"]["domains"]))
    rows += [
        (f"  {lease['owner']} ({lease['process']})", f"{lease['domains']} until {lease['until']}")
        for lease in data["leases"]["owners"]
    ]
    planned = data["planned_unverifications"]
    rows.append(("unverifications planned", planned["actions"]))
    rows += [(f"  {p['run_id']} ({p['process']})", p["actions"]) for p in planned["runs"]]
    rows.append(("unverifications held for review", data["held_unverifications"]))
    for label, key in (
        ("last sweep", "last_sweep"),
        ("last finished sweep", "last_finished_sweep"),
    ):
        run = data[key]
        if run is None:
            rows.append((label, "none recorded"))
            continue
        rows.append((label, f"{run['run_id']}: {run['outcome']} (exit {run['exit_code']})"))
        rows.append(("  started / finished", f"{run['started_at']} / {run['finished_at'] or '-'}"))
        if run["checked"] is not None:
            rows.append(("  checked / errors", f"{run['checked']} / {run['errors']}"))
    failing = data["failing_lookups"]
    rows.append(("domains with failing lookups", failing["domains"]))
    rows += [(f"  {server}", n) for server, n in failing["by_server"].items()]
    return rows
