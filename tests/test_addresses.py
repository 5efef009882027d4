"""The address API and its models: primaries, journal rows, signals, concurrent writers."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.exc import IntegrityError

from flask_domainguard import (
    AddressError,
    AddressTaken,
    InvalidAddress,
    LastVerifiedAddress,
    signals,
)
from flask_domainguard.journal import EventKind
from tests import hostapp


def events(kind: EventKind) -> list[Any]:
    Event = hostapp.guard.models.Event
    return list(hostapp.db.session.scalars(sa.select(Event).where(Event.kind == kind.value)))


def test_add_address_normalises_and_ties_to_registrable_domain(guard: Any, make_user: Any) -> None:
    user = make_user()
    row = guard.add_address(user, "  Alice@Mail.Bücher.example. ")
    assert row.address == "alice@mail.xn--bcher-kva.example"
    assert row.host == "mail.xn--bcher-kva.example"
    assert row.registrable == "xn--bcher-kva.example"
    assert row.primary, "a user's first address becomes primary"
    assert not row.verified
    domain = hostapp.db.session.get(guard.models.Domain, "xn--bcher-kva.example")
    assert domain is not None and domain.next_check_at is not None


def test_invalid_and_taken_addresses_are_refused(guard: Any, make_user: Any) -> None:
    first, second = make_user(), make_user()
    guard.add_address(first, "taken@example.com")
    with pytest.raises(AddressTaken):
        guard.add_address(second, "TAKEN@example.com")
    with pytest.raises(InvalidAddress):
        guard.add_address(second, "no-at-sign")
    assert [a.address for a in guard.addresses_of(second)] == []


def test_journal_row_and_signal_after_commit(guard: Any, make_user: Any) -> None:
    user = make_user()
    seen: list[dict[str, Any]] = []

    def receiver(app: Flask, **info: Any) -> None:
        # The signal comes after the commit: a fresh connection already sees the row.
        with hostapp.db.engine.connect() as conn:
            table = guard.models.EmailAddress.__table__
            info["committed"] = (
                conn.execute(
                    sa.select(table.c.id).where(table.c.address == info["address"])
                ).first()
                is not None
            )
        seen.append(info)

    with signals.address_added.connected_to(receiver):
        row = guard.add_address(user, "bob@example.com", verified=True)
    assert seen == [
        {
            "user_id": user.id,
            "address": "bob@example.com",
            "primary": True,
            "verified": True,
            "committed": True,
        }
    ]
    (event,) = events(EventKind.ADDRESS_ADDED)
    assert event.address_id == row.id and event.user_id == user.id and event.actor == "user"


def test_failed_change_writes_no_journal_row_and_sends_no_signal(
    guard: Any, make_user: Any
) -> None:
    user = make_user()
    guard.add_address(user, "x@example.com")
    sent: list[Any] = []
    with (
        signals.address_added.connected_to(lambda app, **kw: sent.append(kw)),
        pytest.raises(AddressTaken),
    ):
        guard.add_address(user, "x@example.com")
    assert sent == []
    assert len(events(EventKind.ADDRESS_ADDED)) == 1


def test_primary_moves_and_stays_unique(guard: Any, make_user: Any) -> None:
    user = make_user()
    a = guard.add_address(user, "a@example.com", verified=True)
    b = guard.add_address(user, "b@example.org", verified=True, primary=True)
    assert (a.primary, b.primary) == (False, True)
    guard.set_primary("A@example.com")
    hostapp.db.session.refresh(b)
    assert [x.address for x in guard.addresses_of(user) if x.primary] == ["a@example.com"]
    assert len(events(EventKind.PRIMARY_CHANGED)) == 1


def test_unverified_address_cannot_become_primary(guard: Any, make_user: Any) -> None:
    user = make_user()
    guard.add_address(user, "a@example.com", verified=True)
    guard.add_address(user, "b@example.com")
    with pytest.raises(AddressError, match=r"Verify b@example\.com"):
        guard.set_primary("b@example.com")


def test_database_refuses_a_second_primary(guard: Any, make_user: Any) -> None:
    user = make_user()
    guard.add_address(user, "a@example.com", verified=True)
    guard.add_address(user, "b@example.com", verified=True)
    EmailAddress = guard.models.EmailAddress
    with pytest.raises(IntegrityError):
        hostapp.db.session.execute(
            sa.update(EmailAddress)
            .where(EmailAddress.address == "b@example.com")
            .values(primary=True)
        )
        hostapp.db.session.commit()
    hostapp.db.session.rollback()


def test_one_primary_per_user_under_concurrent_writes(
    app: Flask, guard: Any, make_user: Any
) -> None:
    user = make_user()
    user_id = user.id
    guard.add_address(user, "seed@example.com", verified=True)
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def writer(n: int) -> None:
        with app.app_context():
            try:
                barrier.wait()
                guard.add_address(user_id, f"racer{n}@example.com", verified=True, primary=True)
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)
            finally:
                hostapp.db.session.remove()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hostapp.db.session.expire_all()
    rows = guard.addresses_of(user_id)
    assert sum(1 for r in rows if r.primary) == 1
    # Each writer succeeded or failed with a database error it can retry: none lost silently.
    assert len(rows) + len(errors) == 7
    assert all(isinstance(e, (IntegrityError, sa.exc.OperationalError)) for e in errors), errors


def test_remove_never_the_last_verified_address(guard: Any, make_user: Any) -> None:
    user = make_user()
    guard.add_address(user, "only@example.com", verified=True)
    guard.add_address(user, "pending@example.com")
    with pytest.raises(LastVerifiedAddress):
        guard.remove_address("only@example.com")
    guard.remove_address("pending@example.com")
    assert [a.address for a in guard.addresses_of(user)] == ["only@example.com"]
    (event,) = events(EventKind.ADDRESS_REMOVED)
    assert event.address == "pending@example.com" and event.address_id is None


def test_removing_the_primary_hands_over_to_a_verified_address(guard: Any, make_user: Any) -> None:
    user = make_user()
    guard.add_address(user, "first@example.com", verified=True)
    guard.add_address(user, "unverified@example.com")
    guard.add_address(user, "second@example.com", verified=True)
    guard.remove_address("first@example.com")
    primary = [a.address for a in guard.addresses_of(user) if a.primary]
    assert primary == ["second@example.com"]


def test_find_address_accepts_any_spelling(guard: Any, make_user: Any) -> None:
    user = make_user()
    guard.add_address(user, "z@xn--bcher-kva.example")
    assert guard.find_address("Z@Bücher.Example") is not None
    assert guard.find_address("not an address") is None


def test_the_database_itself_refuses_a_second_primary(guard: Any, db: Any, make_user: Any) -> None:
    """The one-primary rule holds for writes that bypass DomainGuard (a partial unique index;
    on MySQL/MariaDB a unique index on a virtual column), and allows many non-primaries."""
    user, other = make_user(), make_user()
    guard.add_address(user, "first@example.com", primary=True)
    guard.add_address(user, "second@example.com")
    guard.add_address(user, "third@example.com")
    db.session.commit()
    table = guard.models.EmailAddress.__table__

    def insert(address: str, user_id: Any) -> None:
        db.session.execute(
            sa.insert(table).values(
                address=address,
                host="example.com",
                registrable="example.com",
                user_id=user_id,
                is_primary=True,
                created_at=datetime.now(timezone.utc),
            )
        )

    with pytest.raises(IntegrityError):
        insert("sneaky@example.com", user.id)
    db.session.rollback()
    insert("sneaky@example.com", other.id)
    db.session.commit()
    assert [a.address for a in guard.addresses_of(other)] == ["sneaky@example.com"]
