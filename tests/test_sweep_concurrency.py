"""Two sweeps at once, on SQLite and on real PostgreSQL and MariaDB servers: each domain is
looked up once (the status server counts), neither deadlocks, nothing is done twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests import hostapp
from tests.sweep_support import StatusServer, bulk_seed, sweep_process

DOMAINS = 300


@pytest.fixture
def status_server(status_server: StatusServer) -> StatusServer:
    status_server.delay = 0.01
    return status_server


def run_two_at_once(
    guard: Any, database_url: str, status_server: StatusServer
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    domains = {f"p{i:03d}.com": 2 for i in range(DOMAINS)}
    first_seen = {name: "released" for i, name in enumerate(domains) if i % 10 == 0}
    for name in first_seen:
        status_server.answers[name] = "undelegated inactive"
    bulk_seed(guard, domains, first_seen=first_seen)
    config = {
        "SQLALCHEMY_DATABASE_URI": database_url,
        **status_server.config(),
        "DOMAINGUARD_SWEEP_BATCH_SIZE": 10,
        "DOMAINGUARD_SWEEP_CONCURRENCY": 8,
        "DOMAINGUARD_MAX_UNVERIFY": 10_000,
    }
    procs = [sweep_process(config), sweep_process(config)]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        reports.append(json.loads(out))
    hostapp.db.session.expire_all()
    m = guard.models
    session = hostapp.db.session
    unverified_events = list(
        session.scalars(sa.select(m.Event.address_id).where(m.Event.kind == "address_unverified"))
    )
    facts = {
        "domains": domains,
        "first_seen": first_seen,
        "unverified_events": unverified_events,
        "unverified": set(
            session.scalars(
                sa.select(m.EmailAddress.id).where(m.EmailAddress.verified_at.is_(None))
            )
        ),
        "leased": session.scalar(
            sa.select(sa.func.count())
            .select_from(m.Domain)
            .where(m.Domain.lease_owner.is_not(None))
        ),
        "held": list(session.scalars(sa.select(m.HeldAction.resolution))),
    }
    return reports, facts


def check(
    reports: list[dict[str, Any]], facts: dict[str, Any], status_server: StatusServer
) -> None:
    assert sum(r["checked"] for r in reports) == DOMAINS
    assert set(status_server.hits) == set(facts["domains"])
    assert set(status_server.hits.values()) == {1}, "a domain was looked up twice"
    assert all(r["lost_leases"] == 0 for r in reports)
    expected = 2 * len(facts["first_seen"])
    assert sum(r["unverified"] for r in reports) == expected
    assert len(facts["unverified_events"]) == expected
    assert len(set(facts["unverified_events"])) == expected, "an address was unverified twice"
    assert facts["unverified"] == set(facts["unverified_events"])
    assert facts["leased"] == 0
    assert facts["held"] == ["applied"] * expected


@pytest.mark.slow
def test_two_sweeps_at_once_on_sqlite(
    guard: Any, app_config: dict[str, Any], status_server: StatusServer, db_kind: str
) -> None:
    if db_kind != "sqlite":
        pytest.skip("the SQLite variant runs in the SQLite pass")
    reports, facts = run_two_at_once(guard, app_config["SQLALCHEMY_DATABASE_URI"], status_server)
    check(reports, facts, status_server)
    assert all(r["checked"] > 0 for r in reports), "both sweepers took part"


def _server_app(url: str, tmp_path: Path) -> Iterator[Any]:
    status_file = tmp_path / "status.json"
    status_file.write_text("{}")
    app = hostapp.create_app(
        {
            "SQLALCHEMY_DATABASE_URI": url,
            "DOMAINGUARD_STATUS_BACKEND": "static",
            "DOMAINGUARD_STATIC_STATUS_FILE": str(status_file),
        }
    )
    with app.app_context():
        hostapp.db.drop_all()
        hostapp.db.create_all()
        yield app
        hostapp.db.session.remove()
        hostapp.db.drop_all()
        hostapp.db.engine.dispose()


@pytest.fixture
def pg_app(pg_server_url: str, tmp_path: Path) -> Iterator[Any]:
    yield from _server_app(pg_server_url, tmp_path)


@pytest.fixture
def mariadb_app(mariadb_server_url: str, tmp_path: Path) -> Iterator[Any]:
    yield from _server_app(mariadb_server_url, tmp_path)


@pytest.mark.slow
def test_two_sweeps_at_once_on_postgresql(
    pg_app: Any, pg_server_url: str, status_server: StatusServer
) -> None:
    reports, facts = run_two_at_once(hostapp.guard, pg_server_url, status_server)
    check(reports, facts, status_server)
    assert all(r["checked"] > 0 for r in reports), "both sweepers took part"


@pytest.mark.slow
def test_two_sweeps_at_once_on_mariadb(
    mariadb_app: Any, mariadb_server_url: str, status_server: StatusServer
) -> None:
    """Claims there are SELECT ... FOR UPDATE SKIP LOCKED, then UPDATE (no RETURNING)."""
    reports, facts = run_two_at_once(hostapp.guard, mariadb_server_url, status_server)
    check(reports, facts, status_server)
    assert all(r["checked"] > 0 for r in reports), "both sweepers took part"
