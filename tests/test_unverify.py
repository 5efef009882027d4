"""Bounces and manual unverification: ``guard.unverify``, ``flask domainguard unverify``, and
the documented bounce-webhook recipe fed a realistic Postmark bounce."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from flask import Flask

from flask_domainguard import EventKind, UnknownAddress, signals
from tests.docs_blocks import ROOT, block_under, run_python
from tests.guard_helpers import add, events

ANA = "ana@ana-consulting.com"
OTHER = "ana@gmail.com"


@pytest.fixture
def ana(guard: Any, make_user: Any) -> Any:
    user = make_user(ANA)
    add(guard, user, ANA, primary=True)
    add(guard, user, OTHER)
    return user


def test_unverify_journals_signals_and_stops_resets(guard: Any, ana: Any) -> None:
    seen: list[dict[str, Any]] = []

    def receiver(app: Flask, **info: Any) -> None:
        seen.append(info)

    signals.address_unverified.connect(receiver)
    try:
        assert guard.unverify(OTHER, reason="bounce", actor="bounce:test", bounce_id=7)
    finally:
        signals.address_unverified.disconnect(receiver)
    row = guard.find_address(OTHER)
    assert not row.verified and row.unverify_reason.value == "bounce"
    [event] = events(guard, EventKind.ADDRESS_UNVERIFIED)
    assert event.actor == "bounce:test" and event.user_id == ana.id
    assert event.details["reason"] == "bounce" and event.details["bounce_id"] == 7
    assert seen == [
        {
            "user_id": ana.id,
            "address": OTHER,
            "reason": "bounce",
            "verified_at": event.details["verified_at"],
            "bounce_id": 7,
        }
    ]
    assert not guard.safe_to_mail(OTHER) and not guard.reset_decision(OTHER).allowed
    state = guard.address_state(OTHER)
    assert "mail to it bounced" in state.label and not state.needs_login


def test_unverify_twice_changes_nothing_the_second_time(guard: Any, ana: Any) -> None:
    assert guard.unverify(ANA, reason="manual", actor="admin:carol")
    assert not guard.unverify(ANA, reason="bounce", actor="admin:carol")
    assert guard.find_address(ANA).unverify_reason.value == "manual"
    assert len(events(guard, EventKind.ADDRESS_UNVERIFIED)) == 1


def test_unverify_refuses_unknown_addresses_reasons_and_actors(guard: Any, ana: Any) -> None:
    with pytest.raises(UnknownAddress):
        guard.unverify("nobody@example.org", reason="bounce", actor="admin:carol")
    with pytest.raises(ValueError, match="unknown unverify reason 'spam'"):
        guard.unverify(ANA, reason="spam", actor="admin:carol")
    with pytest.raises(ValueError, match="actor"):
        guard.unverify(ANA, reason="bounce", actor=" ")
    assert guard.find_address(ANA).verified


def test_the_unverify_command(guard: Any, ana: Any, runner: Any) -> None:
    args = ["domainguard", "unverify"]
    result = runner.invoke(args=[*args, "ANA@Ana-Consulting.com", "--reason", "bounce", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["unverified"] is True
    [event] = events(guard, EventKind.ADDRESS_UNVERIFIED)
    assert event.actor.startswith("admin:") and event.details["reason"] == "bounce"
    again = runner.invoke(args=[*args, ANA, "--reason", "manual", "--actor", "carol"])
    assert again.exit_code == 3 and "not verified" in again.stdout
    assert runner.invoke(args=[*args, "x@example.org", "--reason", "manual"]).exit_code == 1
    assert runner.invoke(args=[*args, OTHER, "--reason", "spam"]).exit_code == 2
    assert runner.invoke(args=[*args, OTHER]).exit_code == 2
    manual = runner.invoke(args=[*args, OTHER, "--reason", "manual", "--actor", "carol"])
    assert manual.exit_code == 0
    assert events(guard, EventKind.ADDRESS_UNVERIFIED)[-1].actor == "admin:carol"


#: A Postmark bounce webhook body, as their API documents it.
POSTMARK_HARD_BOUNCE = {
    "RecordType": "Bounce",
    "MessageStream": "outbound",
    "ID": 4323372036854775807,
    "Type": "HardBounce",
    "TypeCode": 1,
    "Name": "Hard bounce",
    "Tag": "password-reset",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Metadata": {},
    "ServerID": 23,
    "Description": "The server was unable to deliver your message "
    "(ex: unknown user, mailbox not found).",
    "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
    "Email": OTHER,
    "From": "security@host.test",
    "BouncedAt": "2024-11-05T16:33:54.9070259Z",
    "DumpAvailable": True,
    "Inactive": True,
    "CanActivate": True,
    "Subject": "Reset your password",
    "Content": "Return-Path: <>\r\nReceived: ...",
}


@pytest.fixture
def bounce_view(app: Flask) -> None:
    """The view docs/integration.md shows, run as written against the host app."""
    block = block_under(ROOT / "docs" / "integration.md", "Bounces and manual unverification")
    app.config["POSTMARK_WEBHOOK_SECRET"] = "s3cret-from-the-webhook-url"
    run_python(block, {"app": app, "guard": app.extensions["domainguard"].guard})


def _post(client: Any, body: Any, secret: str = "s3cret-from-the-webhook-url") -> Any:
    token = base64.b64encode(f"hook:{secret}".encode()).decode()
    return client.post(
        "/webhooks/postmark/bounce",
        data=json.dumps(body),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )


@pytest.mark.usefixtures("bounce_view")
def test_a_postmark_hard_bounce_unverifies_the_address(guard: Any, ana: Any, client: Any) -> None:
    assert _post(client, POSTMARK_HARD_BOUNCE, secret="wrong").status_code == 401
    assert guard.find_address(OTHER).verified
    soft = {**POSTMARK_HARD_BOUNCE, "Type": "SoftBounce", "TypeCode": 4096}
    assert _post(client, soft).status_code == 204
    assert guard.find_address(OTHER).verified  # a full mailbox is no reason
    assert _post(client, POSTMARK_HARD_BOUNCE).status_code == 204
    row = guard.find_address(OTHER)
    assert not row.verified and row.unverify_reason.value == "bounce"
    [event] = events(guard, EventKind.ADDRESS_UNVERIFIED)
    assert event.actor == "bounce:postmark"
    assert event.details["bounce_id"] == POSTMARK_HARD_BOUNCE["ID"]
    # A bounce for an address that is not a user's: answered, nothing happens.
    stranger = {**POSTMARK_HARD_BOUNCE, "Email": "someone@elsewhere.example"}
    assert _post(client, stranger).status_code == 204
    assert guard.find_address(ANA).verified
