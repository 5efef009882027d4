"""The one recipient rule (:mod:`flask_domainguard.mail.recipients`), through both of its users.

Before the rule was written once, DomainGuard's own mail (``mail.py``: notices to a user's
safe addresses) and the Flask-Mail safety net (``mail/safetynet.py``: every message the host
sends, and reset mail inside ``reset_mail_scope``) each carried a copy. The table below is
what those copies refused and let through, case by case. Each path is checked against it on
its own: DomainGuard's own path by what it would mail (the net cannot hide a drift there, it
is not consulted), the net by what a real SMTP server receives. A change in either that
lets one more address through, or stops one, fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask_mail import Message

from flask_domainguard.mail.recipients import (
    Purpose,
    has_reset_evidence,
    is_safe_recipient,
    may_receive,
    safe_addresses,
)
from flask_domainguard.mail.safetynet import verification_mail_scope
from flask_domainguard.models import UnverifyReason
from flask_domainguard.reset.decision import ResetDecision
from flask_domainguard.timeutil import utcnow
from tests.conftest import SMTPSink, use_smtp
from tests.guard_helpers import add, set_domain, unverify


@dataclass(frozen=True)
class Case:
    """One recipient and what each purpose lets it receive.

    :param stored: the address is one of the user's rows (else only the net sees it).
    :param notice: DomainGuard's own notices reach it (and the net's ``NOTICE`` reading).
    :param any: a host's ordinary mail reaches it through the net (``"all"`` mode).
    :param reset: reset mail reaches it inside ``reset_mail_scope()`` without a decision.
    """

    address: str
    stored: bool
    notice: bool
    any: bool
    reset: bool


CASES = [
    # Verified, checked an hour ago and fine: everything.
    Case("fresh@fresh-shop.com", stored=True, notice=True, any=True, reset=True),
    # Verified, but the last check is days old: no evidence for a reset without a decision.
    Case("stale@stale-shop.com", stored=True, notice=True, any=True, reset=False),
    # Verified on a domain never checked: notices yes, resets need evidence.
    Case("never@never-shop.com", stored=True, notice=True, any=True, reset=False),
    # Verified on a released, an expired, a re-registered domain: nothing.
    Case("gone@released-shop.com", stored=True, notice=False, any=False, reset=False),
    Case("old@expired-shop.com", stored=True, notice=False, any=False, reset=False),
    Case("older@moved-shop.com", stored=True, notice=False, any=False, reset=False),
    # A newer address on the re-registered domain, proved after the change: its own verdict.
    Case("newer@moved-shop.com", stored=True, notice=True, any=True, reset=True),
    # Never verified, on a fine domain: ordinary mail only.
    Case("new@fresh-shop.com", stored=True, notice=False, any=True, reset=False),
    # Never verified, on a released domain: judged for a proof made now, refused.
    Case("new@released-shop.com", stored=True, notice=False, any=False, reset=False),
    # Lost its verification to its domain, which looks fine again: only its own link.
    Case("back@fresh-shop.com", stored=True, notice=False, any=False, reset=False),
    # Unverified by a bounce on a fine domain: not a domain reason, ordinary mail still goes.
    Case("bounced@fresh-shop.com", stored=True, notice=False, any=True, reset=False),
    # A trusted provider, verified: never looked up, counts as evidence.
    Case("ana@gmail.com", stored=True, notice=True, any=True, reset=True),
    # Not stored: not ours to judge for ordinary mail; never a reset.
    Case("someone@elsewhere.org", stored=False, notice=False, any=True, reset=False),
    # Unreadable, or delivered to another domain than the one read (IDNA 2003 vs 2008).
    Case('"erin"@released-shop.com', stored=False, notice=False, any=False, reset=False),
    Case("kontakt@straße.com", stored=False, notice=False, any=False, reset=False),
]


@pytest.fixture
def world(
    app_config: dict[str, Any], smtp_sink: SMTPSink, request: pytest.FixtureRequest
) -> Iterator[tuple[Flask, Any, Any]]:
    use_smtp(app_config, smtp_sink)
    app: Flask = request.getfixturevalue("app")
    guard = request.getfixturevalue("guard")
    user = request.getfixturevalue("make_user")()
    now = utcnow()
    add(guard, user, "fresh@fresh-shop.com", primary=True)
    add(guard, user, "stale@stale-shop.com")
    add(guard, user, "never@never-shop.com")
    add(guard, user, "gone@released-shop.com")
    add(guard, user, "old@expired-shop.com")
    add(guard, user, "older@moved-shop.com", verified_at=now - timedelta(days=400))
    add(guard, user, "newer@moved-shop.com", verified_at=now - timedelta(days=10))
    add(guard, user, "new@fresh-shop.com", verified=False)
    add(guard, user, "new@released-shop.com", verified=False)
    unverify(guard, add(guard, user, "back@fresh-shop.com"), UnverifyReason.DOMAIN_EXPIRED)
    unverify(guard, add(guard, user, "bounced@fresh-shop.com"), UnverifyReason.BOUNCE)
    add(guard, user, "ana@gmail.com")
    hour_ago = now - timedelta(hours=1)
    set_domain(guard, "fresh-shop.com", checked_at=hour_ago)
    set_domain(guard, "stale-shop.com", checked_at=now - timedelta(days=3))
    set_domain(guard, "released-shop.com", checked_at=hour_ago, verdict=None, registered=False)
    set_domain(guard, "expired-shop.com", checked_at=hour_ago, verdict="expired")
    set_domain(
        guard, "moved-shop.com", checked_at=hour_ago, registered_at=now - timedelta(days=100)
    )
    yield app, guard, user


def _row(guard: Any, case: Case) -> Any:
    return guard.find_address(case.address) if case.stored else None


def _deliver(app: Flask, smtp_sink: SMTPSink, recipient: str) -> bool:
    """Whether a real SMTP server receives a message sent to ``recipient`` alone."""
    before = len(smtp_sink.envelopes)
    message = Message("Hello", sender="news@host.test", body="hi", recipients=[recipient])
    app.extensions["mail"].send(message)
    return len(smtp_sink.envelopes) > before


def test_the_table_covers_every_reading() -> None:
    """Each purpose refuses something and lets something through, or the table proves little."""
    for purpose in ("notice", "any", "reset"):
        assert {getattr(case, purpose) for case in CASES} == {True, False}, purpose


def test_domainguards_own_mail_follows_the_table(world: tuple[Flask, Any, Any]) -> None:
    """Notices (``safe_addresses``, ``is_safe_recipient``) and the stored evidence a reset
    without a decision needs, read without the safety net."""
    _, guard, user = world
    expected_notice = [c.address for c in CASES if c.stored and c.notice]
    assert sorted(safe_addresses(guard, guard.user_id_of(user))) == sorted(expected_notice)
    assert safe_addresses(guard, guard.user_id_of(user))[0] == "fresh@fresh-shop.com"  # primary
    for case in CASES:
        row = _row(guard, case)
        if row is None:
            continue
        assert is_safe_recipient(guard, row) is case.notice, case.address
        assert (is_safe_recipient(guard, row) and has_reset_evidence(guard, row)) is case.reset, (
            case.address
        )


def test_the_rule_itself_follows_the_table(world: tuple[Flask, Any, Any]) -> None:
    _, guard, _ = world
    for case in CASES:
        if '"' in case.address or "ß" in case.address:
            continue  # refused before the rule: the net cannot read where they go
        row = _row(guard, case)
        assert may_receive(guard, row, Purpose.NOTICE) is case.notice, case.address
        assert may_receive(guard, row, Purpose.ANY) is case.any, case.address
        assert may_receive(guard, row, Purpose.RESET) is case.reset, case.address


def test_the_safety_net_follows_the_table(
    world: tuple[Flask, Any, Any], smtp_sink: SMTPSink
) -> None:
    """Ordinary mail (``"all"``) and reset mail (inside ``reset_mail_scope``) through Flask-Mail
    to a real SMTP server, one recipient a message."""
    app, guard, _ = world
    for case in CASES:
        assert _deliver(app, smtp_sink, case.address) is case.any, ("any", case.address)
    with guard.reset_mail_scope():
        for case in CASES:
            assert _deliver(app, smtp_sink, case.address) is case.reset, ("reset", case.address)


def test_a_decision_vouches_for_its_own_address_only(
    world: tuple[Flask, Any, Any], smtp_sink: SMTPSink
) -> None:
    """A reset decision (a live lookup) stands in for the stored evidence of its own address,
    never for another's, and never for an address the stored facts find unsafe."""
    app, guard, user = world
    stale = guard.find_address("stale@stale-shop.com")
    gone = guard.find_address("gone@released-shop.com")
    with guard.reset_mail_scope(ResetDecision(True, "allowed", user, stale)):
        assert _deliver(app, smtp_sink, stale.address)
        assert not _deliver(app, smtp_sink, "never@never-shop.com")
    with guard.reset_mail_scope(ResetDecision(True, "allowed", user, gone)):
        assert not _deliver(app, smtp_sink, gone.address)
    assert may_receive(guard, stale, Purpose.RESET, vouched=True)
    assert not may_receive(guard, gone, Purpose.RESET, vouched=True)


def test_a_verification_link_reaches_an_address_that_lost_it_to_its_domain(
    world: tuple[Flask, Any, Any], smtp_sink: SMTPSink
) -> None:
    app, guard, _ = world
    back = guard.find_address("back@fresh-shop.com")
    assert not _deliver(app, smtp_sink, back.address)
    with verification_mail_scope(back):
        assert _deliver(app, smtp_sink, back.address)
        assert not _deliver(app, smtp_sink, "gone@released-shop.com")
