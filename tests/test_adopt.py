"""``flask domainguard adopt``: importing a host's existing addresses."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from flask.testing import FlaskCliRunner

from flask_domainguard.adopt import adopt_addresses
from flask_domainguard.journal import EventKind
from tests import hostapp


def seed(emails: list[str | None]) -> list[int]:
    users = [hostapp.User(email=e) for e in emails]
    hostapp.db.session.add_all(users)
    hostapp.db.session.commit()
    return [u.id for u in users]


def stored() -> dict[str, Any]:
    EmailAddress = hostapp.guard.models.EmailAddress
    rows = hostapp.db.session.scalars(sa.select(EmailAddress))
    return {r.address: r for r in rows}


def test_adopt_requires_a_choice(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["domainguard", "adopt"])
    assert result.exit_code == 2
    assert "--verified" in result.stderr and "--unverified" in result.stderr


def test_adopt_imports_as_primary_and_is_idempotent(runner: FlaskCliRunner, guard: Any) -> None:
    ids = seed(["Ann@Example.com", "bob@example.org", None, "  "])
    result = runner.invoke(args=["domainguard", "adopt", "--verified"])
    assert result.exit_code == 0, result.output
    rows = stored()
    assert set(rows) == {"ann@example.com", "bob@example.org"}
    assert all(r.primary and r.verified for r in rows.values())
    assert rows["ann@example.com"].user_id == ids[0]
    assert "adopted" in result.output and "2" in result.output

    again = runner.invoke(args=["domainguard", "adopt", "--verified", "--json"])
    assert again.exit_code == 0
    report = json.loads(again.output)
    assert report["adopted"] == 0 and report["already_present"] == 2 and report["no_address"] == 2
    Event = guard.models.Event
    count = hostapp.db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Event)
        .where(Event.kind == EventKind.ADDRESS_ADOPTED.value)
    )
    assert count == 2, "one journal row per adopted address, none for the rerun"


def test_adopt_unverified_keeps_them_unverified(runner: FlaskCliRunner) -> None:
    seed(["c@example.net"])
    assert runner.invoke(args=["domainguard", "adopt", "--unverified"]).exit_code == 0
    assert not stored()["c@example.net"].verified


def test_invalid_and_duplicate_addresses_are_listed_not_lost(runner: FlaskCliRunner) -> None:
    ids = seed(
        [
            "good@example.com",
            "bad address@example.com",
            "x@y@z.com",
            "dup@example.com",
            "DUP@example.com",
            "evil@example.com\r\nBcc: a@b.c",
        ]
    )
    result = runner.invoke(args=["domainguard", "adopt", "--verified", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["adopted"] == 2
    problems = {p["user_id"]: p for p in report["problems"]}
    assert set(problems) == {ids[1], ids[2], ids[4], ids[5]}
    assert problems[ids[4]]["error"] == "already used by another account"
    assert problems[ids[1]]["address"] == "bad address@example.com"
    assert all(p["error"] for p in problems.values())
    # The host's own rows are untouched: nothing is lost.
    assert hostapp.db.session.get(hostapp.User, ids[1]).email == "bad address@example.com"


def test_adopt_keeps_an_existing_primary(guard: Any, runner: FlaskCliRunner) -> None:
    (uid,) = seed(["second@example.com"])
    guard.add_address(uid, "first@example.com", verified=True)
    assert runner.invoke(args=["domainguard", "adopt", "--verified"]).exit_code == 0
    rows = stored()
    assert rows["first@example.com"].primary and not rows["second@example.com"].primary


def test_large_input_is_read_in_batches(guard: Any) -> None:
    n = 5000
    hostapp.db.session.execute(
        sa.insert(hostapp.User), [{"email": f"user{i}@d{i % 50}.com"} for i in range(n)]
    )
    hostapp.db.session.commit()
    batches: list[int] = []
    statements: list[str] = []

    def count_selects(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM users" in statement:
            statements.append(statement)

    engine = hostapp.db.engine
    sa.event.listen(engine, "before_cursor_execute", count_selects)
    try:
        report = adopt_addresses(guard, verified=True, batch_size=700, on_batch=batches.append)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count_selects)
    assert report.adopted == n and report.users == n
    assert batches == [700] * 7 + [100]
    assert all("LIMIT" in s.upper() for s in statements), "users are read page by page"
    Domain = guard.models.Domain
    assert hostapp.db.session.scalar(sa.select(sa.func.count()).select_from(Domain)) == 50
