"""The owner's allowance: requests from other clients must not use up the reset mails the
account's owner can ask for, and every answer stays the same for everyone."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask

from flask_domainguard.journal import EventKind
from tests.guard_helpers import OK, add, events, write_status

SAFE = "ana@safe-shop.com"  # the owner's own address
LAPSED = "ana@lapsed-shop.com"  # her old address, now unverified: the attacker reads it
OWNER = "192.0.2.10"
ATTACKER = "203.0.113.66"

pytestmark = pytest.mark.settings(DOMAINGUARD_EXTERNAL_URL="https://shop.example")


@pytest.fixture
def owner(app: Flask, guard: Any, make_user: Any) -> Any:
    write_status(app, {"safe-shop.com": OK, "lapsed-shop.com": OK})
    user = make_user()
    add(guard, user, SAFE, primary=True)
    add(guard, user, LAPSED, verified=False)
    return user


def resets_to(outbox: list[Any], address: str) -> list[Any]:
    return [m for m in outbox if m.recipients == [address] and "Reset your" in m.subject]


def test_refused_requests_use_up_nothing_of_the_owners(
    guard: Any, owner: Any, outbox: list[Any]
) -> None:
    # Before: three requests for any address of the account silenced the owner for an hour.
    for _ in range(10):
        guard.request_reset(LAPSED, client=ATTACKER)
    assert guard.request_reset(SAFE, client=OWNER).allowed
    assert len(resets_to(outbox, SAFE)) == 1


def test_another_clients_requests_leave_the_owners_budget_alone(
    guard: Any, owner: Any, outbox: list[Any]
) -> None:
    for _ in range(3):
        assert guard.request_reset(SAFE, client=ATTACKER).allowed
    assert guard.request_reset(SAFE, client=ATTACKER).reason == "rate_limited"
    for _ in range(3):
        assert guard.request_reset(SAFE, client=OWNER).allowed
    assert guard.request_reset(SAFE, client=OWNER).reason == "rate_limited"
    assert len(resets_to(outbox, SAFE)) == 6
    refused = events(guard, EventKind.RESET_REFUSED)
    assert [e.details["reason"] for e in refused] == ["rate_limited", "rate_limited"]


def test_whoever_spends_the_address_budget_filled_the_owners_mailbox_with_working_links(
    guard: Any, owner: Any, outbox: list[Any]
) -> None:
    for n in range(10):  # ten clients, ten mails: DOMAINGUARD_RESET_LIMIT_PER_ADDRESS
        assert guard.request_reset(SAFE, client=f"198.51.100.{n}").allowed
    assert guard.request_reset(SAFE, client=OWNER).reason == "rate_limited"
    links = [re.search(r"/reset/(\S+)", m.body) for m in resets_to(outbox, SAFE)]
    assert len(links) == 10
    for match in links:
        assert match is not None
        assert guard.read_reset_token(match.group(1)).address.address == SAFE


@pytest.mark.settings(DOMAINGUARD_RESET_LIMIT_PER_ADDRESS="2 per hour")
def test_the_address_budget_is_config(guard: Any, owner: Any) -> None:
    assert guard.request_reset(SAFE, client="198.51.100.1").allowed
    assert guard.request_reset(SAFE, client="198.51.100.2").allowed
    assert guard.request_reset(SAFE, client="198.51.100.3").reason == "rate_limited"
