"""``flask domainguard adopt``: importing a host's existing addresses."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskCliRunner

from flask_domainguard.adopt import AdoptError, adopt_addresses
from flask_domainguard.journal import EventKind
from flask_domainguard.timeutil import as_utc
from tests import hostapp
from tests.guard_helpers import OK, write_status

#: Adopt as verified, proven since 2020 (a proof date is required, never "now").
ADOPT_VERIFIED = ["domainguard", "adopt", "--verified", "--verified-since", "2020-01-01"]


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
    result = runner.invoke(args=ADOPT_VERIFIED)
    assert result.exit_code == 0, result.output
    rows = stored()
    assert set(rows) == {"ann@example.com", "bob@example.org"}
    assert all(r.primary and r.verified for r in rows.values())
    assert rows["ann@example.com"].user_id == ids[0]
    assert "adopted" in result.output and "2" in result.output

    again = runner.invoke(args=[*ADOPT_VERIFIED, "--json"])
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
    result = runner.invoke(args=[*ADOPT_VERIFIED, "--json"])
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
    assert runner.invoke(args=ADOPT_VERIFIED).exit_code == 0
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
        report = adopt_addresses(
            guard,
            verified=True,
            verified_since=date(2020, 1, 1),
            batch_size=700,
            on_batch=batches.append,
        )
    finally:
        sa.event.remove(engine, "before_cursor_execute", count_selects)
    assert report.adopted == n and report.users == n
    assert batches == [700] * 7 + [100]
    assert all("LIMIT" in s.upper() for s in statements), "users are read page by page"
    Domain = guard.models.Domain
    assert hostapp.db.session.scalar(sa.select(sa.func.count()).select_from(Domain)) == 50


# -- the proof date of addresses adopted as verified (issue 11, case 3) -----------------------

UTC = timezone.utc


def verified_at(address: str) -> datetime:
    value = stored()[address].verified_at
    assert value is not None, f"{address} is not verified"
    return as_utc(value)


def test_adopt_verified_without_a_proof_date_exits_2_and_names_both_ways(
    runner: FlaskCliRunner,
) -> None:
    seed(["ann@example.com"])
    result = runner.invoke(args=["domainguard", "adopt", "--verified"])
    assert result.exit_code == 2
    assert "--verified-since" in result.output
    assert "DOMAINGUARD_USER_CREATED_ATTR" in result.output
    assert stored() == {}, "nothing is adopted without a proof date"


def test_adopt_never_dates_the_proof_now_so_a_domain_reregistered_before_adoption_is_caught(
    app: Flask, runner: FlaskCliRunner, guard: Any
) -> None:
    """Issue 11, case 3: the host proved erin@resurrected.example in 2021; the domain lapsed
    and was registered anew in 2024, before DomainGuard was installed. Dating the proof
    "now" at adoption made that registration look older than the proof: OK for ever."""
    write_status(
        app,
        {
            "resurrected.example": {
                **OK,
                "registered_at": "2024-06-01T00:00:00Z",
                "expires_at": "2034-06-01T00:00:00Z",
            },
            "steady.example": OK,  # registered 2001: before the proof, legitimately safe
        },
    )
    seed(["erin@resurrected.example", "sam@steady.example"])
    result = runner.invoke(
        args=["domainguard", "adopt", "--verified", "--verified-since", "2021-03-01"]
    )
    assert result.exit_code == 0, result.output
    assert verified_at("erin@resurrected.example") == datetime(2021, 3, 1, tzinfo=UTC)

    decision = guard.reset_decision("erin@resurrected.example")
    assert not decision.allowed
    assert decision.reason == "domain_reregistered"
    assert guard.reset_decision("sam@steady.example").allowed, "the legitimate path stays open"


@pytest.mark.settings(DOMAINGUARD_USER_CREATED_ATTR="created_at")
def test_the_users_creation_date_dates_each_proof(
    app: Flask, runner: FlaskCliRunner, guard: Any
) -> None:
    write_status(
        app,
        {
            "resurrected.example": {**OK, "registered_at": "2024-06-01T00:00:00Z"},
            "steady.example": OK,
        },
    )
    users = [
        hostapp.User(email="erin@resurrected.example", created_at=datetime(2021, 3, 1, 9, 30)),
        hostapp.User(email="sam@steady.example", created_at=datetime(2019, 5, 4, 10, 0)),
    ]
    hostapp.db.session.add_all(users)
    hostapp.db.session.commit()
    result = runner.invoke(args=["domainguard", "adopt", "--verified", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["adopted"] == 2 and report["proof"] == "User.created_at"
    # A naive creation value is UTC.
    assert verified_at("erin@resurrected.example") == datetime(2021, 3, 1, 9, 30, tzinfo=UTC)
    assert verified_at("sam@steady.example") == datetime(2019, 5, 4, 10, 0, tzinfo=UTC)
    assert guard.reset_decision("erin@resurrected.example").reason == "domain_reregistered"
    assert guard.reset_decision("sam@steady.example").allowed


@pytest.mark.settings(DOMAINGUARD_USER_CREATED_ATTR="created_at")
def test_users_without_a_plausible_creation_date_are_listed_not_adopted(
    runner: FlaskCliRunner,
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    users = [
        hostapp.User(email="fine@example.com", created_at=datetime(2020, 2, 2)),
        hostapp.User(email="empty@example.com", created_at=None),
        hostapp.User(email="epoch@example.com", created_at=datetime(1970, 1, 1)),
        hostapp.User(email="ahead@example.com", created_at=now + timedelta(days=3)),
    ]
    hostapp.db.session.add_all(users)
    hostapp.db.session.commit()
    result = runner.invoke(args=["domainguard", "adopt", "--verified"])
    assert result.exit_code == 1, result.output
    assert set(stored()) == {"fine@example.com"}, "undated users are not adopted at all"
    assert "created_at is empty" in result.output
    assert "before 1985" in result.output and "in the future" in result.output
    assert "'email' or 'created_at' of the listed users needs fixing" in result.output

    # Fixing the column and running again adopts them, dated by the fixed value.
    hostapp.db.session.execute(
        sa.update(hostapp.User)
        .where(hostapp.User.email != "fine@example.com")
        .values(created_at=datetime(2022, 7, 1))
    )
    hostapp.db.session.commit()
    again = runner.invoke(args=["domainguard", "adopt", "--verified", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["adopted"] == 3
    assert verified_at("epoch@example.com") == datetime(2022, 7, 1, tzinfo=UTC)


@pytest.mark.settings(DOMAINGUARD_USER_CREATED_ATTR="created_at")
def test_verified_since_wins_over_the_creation_attribute_and_says_so(
    runner: FlaskCliRunner,
) -> None:
    seed(["ann@example.com"])  # no created_at at all: not needed when the date is given
    result = runner.invoke(
        args=["domainguard", "adopt", "--verified", "--verified-since", "2018-04-05", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert "DOMAINGUARD_USER_CREATED_ATTR ('created_at') is not used" in result.stderr
    assert json.loads(result.stdout)["proof"] == "2018-04-05T00:00:00+00:00"
    assert verified_at("ann@example.com") == datetime(2018, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2021-13-01", "ISO 8601 date"),
        ("yesterday", "ISO 8601 date"),
        ("2021-03-01T10:00:00", "ISO 8601 date"),
        ("1970-01-01", "before 1985"),
        ((date.today() + timedelta(days=2)).isoformat(), "in the future"),
    ],
)
def test_an_unusable_verified_since_is_a_usage_error(
    runner: FlaskCliRunner, value: str, message: str
) -> None:
    seed(["ann@example.com"])
    result = runner.invoke(args=["domainguard", "adopt", "--verified", "--verified-since", value])
    assert result.exit_code == 2
    assert message in result.output
    assert stored() == {}


def test_verified_since_needs_verified(runner: FlaskCliRunner) -> None:
    seed(["ann@example.com"])
    result = runner.invoke(
        args=["domainguard", "adopt", "--unverified", "--verified-since", "2021-03-01"]
    )
    assert result.exit_code == 2
    assert stored() == {}


@pytest.mark.settings(DOMAINGUARD_USER_CREATED_ATTR="signed_up")
def test_a_creation_attribute_that_is_no_column_is_a_usage_error(runner: FlaskCliRunner) -> None:
    seed(["ann@example.com"])
    result = runner.invoke(args=["domainguard", "adopt", "--verified"])
    assert result.exit_code == 2
    assert "User.signed_up is not a mapped column" in result.output
    assert stored() == {}


def test_the_library_api_follows_the_same_rule(guard: Any) -> None:
    seed(["ann@example.com", "bob@example.org"])
    with pytest.raises(AdoptError, match="DOMAINGUARD_USER_CREATED_ATTR"):
        adopt_addresses(guard, verified=True)
    with pytest.raises(AdoptError, match="in the future"):
        adopt_addresses(guard, verified=True, verified_since=datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(AdoptError, match="only applies"):
        adopt_addresses(guard, verified=False, verified_since=date(2021, 3, 1))
    assert stored() == {}
    # A naive datetime is UTC; an aware one is converted.
    report = adopt_addresses(
        guard,
        verified=True,
        verified_since=datetime(2021, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    assert report.adopted == 2
    assert verified_at("ann@example.com") == datetime(2021, 3, 1, 10, 0, tzinfo=UTC)
