"""Long ``IN (...)`` lists go in chunks: one statement may bind at most 32,766 parameters on
SQLite (999 before 3.32), 65,535 through psycopg, and the users of one expiring domain, or
the addresses a tripped circuit breaker holds, are not bounded by any batch size.

The large-list tests run 70,000 keys against the real limits: PostgreSQL's (``--db
postgresql``) as it is, SQLite's lowered at run time to the 32,766 of a stock build (this
machine's SQLite may be built with a higher one). Each first proves that one statement with
the whole list fails there, so the chunked call that succeeds is not passing by luck.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_domainguard import jobs, sqlcompat
from flask_domainguard.journal import EventKind
from flask_domainguard.mail.recipients import safe_addresses_of
from flask_domainguard.sweep import Sweep
from flask_domainguard.timeutil import utcnow
from tests import hostapp
from tests.guard_helpers import OK, RELEASED, events, write_status
from tests.sweep_support import bulk_seed
from tests.test_sweep import rewind

#: More keys than either database takes in one statement.
MANY = 70_000
#: SQLite's default SQLITE_MAX_VARIABLE_NUMBER since 3.32.
SQLITE_DEFAULT_LIMIT = 32_766


@pytest.fixture
def stock_limits(app: Flask, db_kind: str) -> Iterator[None]:
    """The app's database with its stock parameter limit (SQLite's lowered to the default)."""
    if db_kind != "sqlite":
        yield
        return
    if not hasattr(sqlite3.Connection, "setlimit"):
        pytest.skip("sqlite3 can set the parameter limit from Python 3.11 on")
    engine = hostapp.db.engine

    def lower(dbapi_connection: Any, record: Any) -> None:
        variables = sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER  # type: ignore[attr-defined,unused-ignore]
        dbapi_connection.setlimit(variables, SQLITE_DEFAULT_LIMIT)

    hostapp.db.session.remove()
    sa.event.listen(engine, "connect", lower)
    engine.dispose()  # connections made from now on have the stock limit
    try:
        yield
    finally:
        hostapp.db.session.remove()
        sa.event.remove(engine, "connect", lower)
        engine.dispose()


def assert_one_statement_fails(statement: Any) -> None:
    """The database refuses ``statement`` (a whole long list in one ``IN``); on MySQL and
    MariaDB there is nothing to show: pymysql writes the values into the SQL text itself, so
    no parameter limit applies (the chunked path below is still run and checked)."""
    if hostapp.db.engine.dialect.name in ("mysql", "mariadb"):
        return
    with pytest.raises(sa.exc.DBAPIError, match=r"(?i)too many SQL variables|parameters"):
        hostapp.db.session.execute(statement)
    hostapp.db.session.rollback()


def test_chunks_cover_the_values_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlcompat, "IN_LIST_LIMIT", 3)
    assert [list(c) for c in sqlcompat.in_chunks(list(range(8)))] == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7],
    ]
    assert list(sqlcompat.in_chunks([])) == []


def fake_user_ids(real: list[int]) -> list[int]:
    """``MANY`` user ids nobody has, around the real ones."""
    start = max(real) + 1
    return [*range(start, start + MANY // 2), *real, *range(start + MANY // 2, start + MANY)]


def test_the_recipients_of_a_huge_domain_in_one_call(
    guard: Any, make_user: Any, stock_limits: None
) -> None:
    users = [make_user() for _ in range(3)]
    for n, user in enumerate(users):
        guard.add_address(user, f"u{n}@mine.com", verified=True)
        guard.add_address(user, f"other{n}@mine.com", verified=False)
    ids = fake_user_ids([u.id for u in users])
    EmailAddress = guard.models.EmailAddress
    assert_one_statement_fails(sa.select(EmailAddress.id).where(EmailAddress.user_id.in_(ids)))
    safe = safe_addresses_of(guard, ids)
    assert {k: [a for _, a in v] for k, v in safe.items()} == {
        u.id: [f"u{n}@mine.com"] for n, u in enumerate(users)
    }


@pytest.mark.settings(MAIL_SUPPRESS_SEND=True)
def test_deliver_now_with_a_huge_list_of_job_ids(
    guard: Any, make_user: Any, outbox: list[Any], stock_limits: None
) -> None:
    users = [make_user() for _ in range(3)]
    for n, user in enumerate(users):
        guard.add_address(user, f"u{n}@mine.com", verified=True)
    until = (utcnow() + timedelta(days=9)).isoformat()
    payloads = [
        {
            "user_id": u.id,
            "domain": "mine.com",
            "stage": "expiring_soon",
            "until": until,
            "reason": "expires soon",
            "addresses": [f"u{n}@mine.com"],
        }
        for n, u in enumerate(users)
    ]
    real = jobs.enqueue_many(guard, jobs.EXPIRY_WARNING, payloads)
    hostapp.db.session.commit()
    ids = fake_user_ids(real)
    J = guard.models.Job
    assert_one_statement_fails(sa.select(J.id).where(J.id.in_(ids)))
    report = jobs.deliver_now(guard, ids)
    assert report.done == 3 and report.failed == 0
    assert sorted(m.recipients[0] for m in outbox) == ["u0@mine.com", "u1@mine.com", "u2@mine.com"]


@pytest.mark.settings(DOMAINGUARD_STATUS_BACKEND="static", DOMAINGUARD_MAX_UNVERIFY=5)
def test_a_sweep_over_big_domains_in_small_chunks(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every chunked statement of a sweep at a chunk size of 3: the warnings of 8 users of an
    expiring domain, and the 8 addresses of a released one, held by the circuit breaker."""
    monkeypatch.setattr(sqlcompat, "IN_LIST_LIMIT", 3)
    soon = (utcnow() + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_status(app, {"expiring.com": {**OK, "expires_at": soon}, "gone.com": RELEASED})
    users = [make_user() for _ in range(8)]
    for n, user in enumerate(users):
        guard.add_address(user, f"u{n}@expiring.com", verified=True)
        guard.add_address(user, f"u{n}@gone.com", verified=True)
    first = Sweep(guard, retry_base=0.01).run()
    assert first.warnings_sent == 8
    assert sorted(m.recipients for m in outbox) == sorted([f"u{n}@expiring.com"] for n in range(8))
    rewind(guard, 7)
    second = Sweep(guard, retry_base=0.01).run()
    assert second.breaker_tripped and second.held == 8 and second.unverified == 0
    held = events(guard, EventKind.UNVERIFY_HELD)
    assert sorted(e.address for e in held) == sorted(f"u{n}@gone.com" for n in range(8))
    assert all(e.address_id is not None for e in held), "each held address was found"


@pytest.mark.slow
@pytest.mark.use_status_server
@pytest.mark.settings(DOMAINGUARD_MAX_UNVERIFY=5)
def test_the_breaker_holds_a_huge_released_domain(
    guard: Any, status_server: Any, stock_limits: None
) -> None:
    """40,000 addresses on one released domain, confirmed by this run: the sweep plans them
    (one ``IN`` over the batch's addresses) and the breaker holds them all (one over the
    run's actions), each over SQLite's stock limit in one statement."""
    count = 40_000
    status_server.answers["huge.com"] = "undelegated inactive"
    bulk_seed(guard, {"huge.com": count}, first_seen={"huge.com": "released"})
    report = Sweep(guard, retry_base=0.01).run()
    assert report.breaker_tripped and report.held == count and report.unverified == 0
    Event = guard.models.Event
    found = hostapp.db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Event)
        .where(Event.kind == EventKind.UNVERIFY_HELD.value, Event.address_id.is_not(None))
    )
    assert found == count
