"""Address verification: the mail, GET that changes nothing, POST once, re-verification rules,
the live domain check, resend limits, the status page and ``flask domainguard reverify``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from freezegun import freeze_time

from flask_domainguard import signals, tokens
from flask_domainguard.addresses.verification import (
    Outcome,
    VerificationError,
    VerificationRateLimited,
    VerificationRefused,
    _binding_text,
    read_verification_token,
    verification_token,
)
from flask_domainguard.journal import EventKind
from flask_domainguard.models import UnverifyReason
from flask_domainguard.sessions import SESSION_KEY
from flask_domainguard.timeutil import utcnow
from tests.guard_helpers import (
    COUNTING,
    OK,
    PENDING_DELETE,
    RELEASED,
    CountingBackend,
    add,
    csrf_of,
    enrol_2fa,
    events,
    link_in,
    unverify,
    write_status,
)

# SERVER_NAME: links are built outside requests too (mails sent from the test itself).
pytestmark = [
    pytest.mark.settings(DOMAINGUARD_STATUS_BACKEND=COUNTING, SERVER_NAME="accounts.host.test"),
    pytest.mark.usefixtures("fresh_request_globals"),
]


@pytest.fixture(autouse=True)
def _clear_calls() -> Iterator[None]:
    CountingBackend.calls.clear()
    yield


@pytest.fixture
def healthy(app: Flask) -> None:
    write_status(app, {"example-shop.com": OK, "other-shop.com": OK})


def mailed_link(outbox: list[Any]) -> str:
    assert outbox, "no mail was sent"
    return link_in(outbox[-1].body, "/verify/")


def confirm(client: FlaskClient, link: str) -> Any:
    page = client.get(link)
    assert page.status_code == 200
    return client.post(link, data={"csrf_token": csrf_of(page.data)})


def login(client: FlaskClient, user: Any, *, second_factor_at: float | None = None) -> None:
    """Log ``user`` in on ``client``; with 2FA, as a session that passed it at that moment."""
    with client.session_transaction() as sess:
        sess["_user_id"] = str(user.id)
        sess["_fresh"] = True
        if second_factor_at is not None:
            sess[SESSION_KEY] = {
                "uid": str(user.id),
                "mode": "done",
                "tf_at": second_factor_at,
                "pw_at": None,
            }


def login_with_2fa(client: FlaskClient, guard: Any, user: Any) -> None:
    """Log ``user`` in with 2FA enrolled and just passed: what re-verifying an address that
    lost its verification to its domain takes."""
    enrol_2fa(guard, user)
    login(client, user, second_factor_at=utcnow().timestamp())


# -- sending -------------------------------------------------------------------------------


def test_send_mails_a_link_and_journals_it(
    guard: Any, make_user: Any, outbox: list[Any], healthy: None
) -> None:
    row = add(guard, make_user(), "new@example-shop.com", verified=False)
    seen: list[dict[str, Any]] = []

    def receiver(app: Flask, **info: Any) -> None:
        seen.append(info)

    with signals.verification_sent.connected_to(receiver):
        guard.send_verification("NEW@example-shop.com")
    assert [m.recipients for m in outbox] == [["new@example-shop.com"]]
    assert "Verify your email address" in outbox[0].subject
    assert "/domainguard/verify/" in outbox[0].body
    [event] = events(guard, EventKind.VERIFICATION_SENT)
    assert event.address_id == row.id
    assert seen and seen[0]["address"] == "new@example-shop.com"
    # The token never reaches the journal or the signal.
    token = mailed_link(outbox).rsplit("/", 1)[1]
    assert token not in json.dumps(event.details) and token not in repr(seen)


def test_resends_are_rate_limited_per_address(
    guard: Any, make_user: Any, outbox: list[Any], healthy: None
) -> None:
    user = make_user()
    add(guard, user, "a@example-shop.com", verified=False)
    add(guard, user, "b@example-shop.com", verified=False)
    for _ in range(3):
        guard.send_verification("a@example-shop.com")
    with pytest.raises(VerificationRateLimited) as caught:
        guard.send_verification("a@example-shop.com")
    assert caught.value.code == "rate_limited"
    guard.send_verification("b@example-shop.com")  # another address has its own budget
    assert len(outbox) == 4


def test_already_verified_address_gets_no_link(
    guard: Any, make_user: Any, outbox: list[Any]
) -> None:
    add(guard, make_user(), "done@example-shop.com")
    with pytest.raises(VerificationError) as caught:
        guard.send_verification("done@example-shop.com")
    assert caught.value.code == "already_verified"
    assert outbox == []


# -- confirming ----------------------------------------------------------------------------


def test_get_does_not_verify_and_post_does_once(
    guard: Any, make_user: Any, client: FlaskClient, outbox: list[Any], healthy: None
) -> None:
    row = add(guard, make_user(), "new@example-shop.com", verified=False)
    guard.send_verification(row)
    link = mailed_link(outbox)

    for _ in range(3):  # a mail scanner fetching the link
        page = client.get(link)
        assert page.status_code == 200
        assert b"Verify this address" in page.data
    guard.db.session.refresh(row)
    assert row.verified_at is None
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"

    no_csrf = client.post(link, data={})
    assert no_csrf.status_code == 400
    guard.db.session.refresh(row)
    assert row.verified_at is None

    done = client.post(link, data={"csrf_token": csrf_of(page.data)})
    assert done.status_code == 200 and b"is verified" in done.data
    guard.db.session.refresh(row)
    assert row.verified_at is not None
    assert [e.address_id for e in events(guard, EventKind.ADDRESS_VERIFIED)] == [row.id]
    assert CountingBackend.calls == ["example-shop.com"], "looked up live before verifying"

    again = client.post(link, data={"csrf_token": csrf_of(page.data)})
    assert again.status_code == 400
    assert len(events(guard, EventKind.ADDRESS_VERIFIED)) == 1


def test_verification_refreshes_the_domain_row(
    app: Flask, guard: Any, make_user: Any, client: FlaskClient, outbox: list[Any], healthy: None
) -> None:
    row = add(guard, make_user(), "new@example-shop.com", verified=False)
    guard.send_verification(row)
    confirm(client, mailed_link(outbox))
    domain = guard.db.session.get(guard.models.Domain, "example-shop.com")
    assert domain.verdict == "ok" and domain.checked_at is not None
    assert domain.expires_at is not None and domain.expires_at.year == 2031


@pytest.mark.parametrize(
    ("status", "verdict"), [(RELEASED, "released"), (PENDING_DELETE, "expired")]
)
def test_unsafe_domain_is_refused_at_confirmation(
    app: Flask,
    guard: Any,
    make_user: Any,
    client: FlaskClient,
    outbox: list[Any],
    status: dict[str, Any],
    verdict: str,
) -> None:
    write_status(app, {"example-shop.com": OK})
    row = add(guard, make_user(), "new@example-shop.com", verified=False)
    guard.send_verification(row)
    link = mailed_link(outbox)
    write_status(app, {"example-shop.com": status})  # the domain lapses before the click
    response = confirm(client, link)
    assert response.status_code == 409
    assert b"cannot be used for verification" in response.data
    guard.db.session.refresh(row)
    assert row.verified_at is None
    [refused] = events(guard, EventKind.VERIFICATION_REFUSED)
    assert refused.details["reason"] == "domain_unsafe"
    assert guard.db.session.get(guard.models.Domain, "example-shop.com").verdict == verdict


def test_trusted_provider_is_never_looked_up(
    guard: Any, make_user: Any, client: FlaskClient, outbox: list[Any]
) -> None:
    row = add(guard, make_user(), "someone@gmail.com", verified=False)
    guard.send_verification(row)
    confirm(client, mailed_link(outbox))
    guard.db.session.refresh(row)
    assert row.verified_at is not None
    assert CountingBackend.calls == []


def test_failed_lookup_lets_a_new_address_through(
    app: Flask, guard: Any, make_user: Any, client: FlaskClient, outbox: list[Any]
) -> None:
    write_status(app, {})  # the domain is not in the file: registered=None
    row = add(guard, make_user(), "new@example-shop.com", verified=False)
    guard.send_verification(row)
    assert confirm(client, mailed_link(outbox)).status_code == 200
    guard.db.session.refresh(row)
    assert row.verified_at is not None


@pytest.mark.settings(DOMAINGUARD_VERIFY_WITHIN=timedelta(days=5))
def test_reverification_needs_evidence_as_a_reset_does(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any]
) -> None:
    """An address its domain cost comes back only on evidence: a stored OK check two days old
    and a failed lookup are not enough (the new owner could be the one clicking)."""
    user = make_user()
    row = add(guard, user, "me@example-shop.com")
    unverify(guard, row, UnverifyReason.DOMAIN_EXPIRED)
    write_status(app, {"example-shop.com": OK})
    with freeze_time(utcnow()) as clock:
        guard.send_verification(row)
        link = mailed_link(outbox)
        clock.tick(timedelta(days=2))
        write_status(app, {})  # the lookup at confirmation fails
        owner = app.test_client()
        login_with_2fa(owner, guard, user)
        response = confirm(owner, link)
    assert response.status_code == 409
    guard.db.session.refresh(row)
    assert row.verified_at is None
    refused = events(guard, EventKind.VERIFICATION_REFUSED)
    assert refused[-1].details["reason"] == "lookup_failed"


# -- tokens --------------------------------------------------------------------------------


def test_tampered_expired_reused_and_foreign_tokens_are_refused(
    app: Flask, guard: Any, make_user: Any, client: FlaskClient, healthy: None
) -> None:
    user = make_user()
    with freeze_time("2024-03-01T10:00:00Z") as clock:
        row = add(guard, user, "a@example-shop.com", verified=False)
        other = add(guard, make_user(), "b@other-shop.com", verified=False)
        token = verification_token(row)

        # Tampered.
        with pytest.raises(tokens.TokenError):
            read_verification_token(guard, token[:-2] + "xx")
        assert client.get(f"/domainguard/verify/{token[:-2]}xx").status_code == 400

        # For another address: a genuine signature over row a's id bound to b's text.
        forged = tokens.issue(
            tokens.VERIFY, {"a": row.id, "b": tokens.bind(tokens.VERIFY, _binding_text(other))}
        )
        with pytest.raises(tokens.TokenError):
            read_verification_token(guard, forged)
        # Another user's row id with this binding.
        forged = tokens.issue(
            tokens.VERIFY, {"a": other.id, "b": tokens.bind(tokens.VERIFY, _binding_text(row))}
        )
        with pytest.raises(tokens.TokenError):
            read_verification_token(guard, forged)

        # Expired: 24 hours by default.
        clock.tick(timedelta(hours=24))
        with pytest.raises(tokens.TokenExpired):
            read_verification_token(guard, token)
        assert client.get(f"/domainguard/verify/{token}").status_code == 400

        # Used.
        fresh = verification_token(row)
        assert guard.confirm_verification(fresh) is Outcome.VERIFIED
        with pytest.raises(tokens.TokenError):
            read_verification_token(guard, fresh)


def test_token_dies_when_the_address_is_removed_and_added_again(
    guard: Any, make_user: Any, healthy: None
) -> None:
    user = make_user()
    add(guard, user, "keep@example-shop.com")
    row = add(guard, user, "a@example-shop.com", verified=False)
    token = verification_token(row)
    guard.remove_address(row)
    add(guard, user, "a@example-shop.com", verified=False)
    with pytest.raises(tokens.TokenError):
        guard.confirm_verification(token)


def test_token_issued_before_an_unverification_is_dead(
    guard: Any, make_user: Any, healthy: None
) -> None:
    row = add(guard, make_user(), "a@example-shop.com", verified=False)
    old = verification_token(row)
    assert guard.confirm_verification(verification_token(row)) is Outcome.VERIFIED
    unverify(guard, row, UnverifyReason.BOUNCE)
    with pytest.raises(tokens.TokenError):
        guard.confirm_verification(old)
    assert guard.confirm_verification(verification_token(row)) is Outcome.REVERIFIED


# -- re-verification after a domain reason --------------------------------------------------


@pytest.fixture
def lapsed(app: Flask, guard: Any, make_user: Any, outbox: list[Any]) -> tuple[Any, Any, str]:
    """An address unverified by the sweep (domain expired), since renewed; a link is mailed."""
    user = make_user()
    row = add(guard, user, "me@example-shop.com")
    unverify(guard, row, UnverifyReason.DOMAIN_EXPIRED)
    write_status(app, {"example-shop.com": OK})
    guard.send_verification(row)
    return user, row, mailed_link(outbox)


def test_domain_reason_needs_the_owner_logged_in(
    app: Flask, guard: Any, make_user: Any, lapsed: tuple[Any, Any, str]
) -> None:
    user, row, link = lapsed
    anonymous = app.test_client()
    page = anonymous.get(link)
    assert b"Log in to your account first" in page.data
    response = anonymous.post(link, data={"csrf_token": csrf_of(page.data)})
    assert response.status_code == 409 and b"Log in to your account" in response.data

    stranger = app.test_client()
    login(stranger, make_user())
    page = stranger.get(link)
    assert stranger.post(link, data={"csrf_token": csrf_of(page.data)}).status_code == 409

    guard.db.session.refresh(row)
    assert row.verified_at is None
    reasons = [e.details["reason"] for e in events(guard, EventKind.VERIFICATION_REFUSED)]
    assert reasons == ["login_required", "login_required"]

    # The owner without 2FA must enrol first: whoever reads the mailbox may know the password.
    owner = app.test_client()
    login(owner, user)
    response = confirm(owner, link)
    assert response.status_code == 409 and b"two-factor authentication" in response.data
    assert b"/domainguard/2fa/enroll" in response.data
    guard.db.session.refresh(row)
    assert row.verified_at is None
    reasons = [e.details["reason"] for e in events(guard, EventKind.VERIFICATION_REFUSED)]
    assert reasons[-1] == "twofactor_required"

    login_with_2fa(owner, guard, user)
    seen: list[dict[str, Any]] = []

    def receiver(sender: Flask, **info: Any) -> None:
        seen.append(info)

    with signals.address_verified.connected_to(receiver):
        response = confirm(owner, link)
    assert response.status_code == 200 and b"verified again" in response.data
    assert [(i["address"], i["reverified"]) for i in seen] == [("me@example-shop.com", True)]
    guard.db.session.refresh(row)
    assert row.verified_at is not None and row.unverify_reason is None
    [event] = events(guard, EventKind.ADDRESS_REVERIFIED)
    assert event.details["previous_reason"] == "domain_expired"


def test_domain_reason_with_2fa_needs_a_fresh_second_factor(
    app: Flask, guard: Any, lapsed: tuple[Any, Any, str]
) -> None:
    user, row, link = lapsed
    enrol_2fa(guard, user)
    stale = app.test_client()
    login(stale, user, second_factor_at=time.time() - 3600)
    response = confirm(stale, link)
    assert response.status_code == 409 and b"second factor" in response.data
    guard.db.session.refresh(row)
    assert row.verified_at is None

    fresh = app.test_client()
    login(fresh, user, second_factor_at=utcnow().timestamp())
    assert confirm(fresh, link).status_code == 200
    guard.db.session.refresh(row)
    assert row.verified_at is not None


def test_domain_reason_on_a_still_unsafe_domain_is_refused(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any]
) -> None:
    user = make_user()
    row = add(guard, user, "me@example-shop.com")
    unverify(guard, row, UnverifyReason.DOMAIN_RELEASED)
    write_status(app, {"example-shop.com": RELEASED})
    with pytest.raises(VerificationRefused) as caught:
        guard.send_verification(row)
    assert caught.value.code == "domain_unsafe"
    assert outbox == [], "no link to a domain anyone can register"

    write_status(app, {"example-shop.com": OK})
    guard.send_verification(row)
    link = mailed_link(outbox)
    write_status(app, {})  # the lookup at confirmation fails; the stored verdict is OK now
    owner = app.test_client()
    login_with_2fa(owner, guard, user)
    assert confirm(owner, link).status_code == 200


def test_domain_reason_with_failed_lookup_and_unsafe_stored_verdict_is_refused(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any]
) -> None:
    user = make_user()
    row = add(guard, user, "me@example-shop.com")
    unverify(guard, row, UnverifyReason.DOMAIN_EXPIRED)
    write_status(app, {"example-shop.com": OK})
    guard.send_verification(row)
    link = mailed_link(outbox)
    domain = guard.db.session.get(guard.models.Domain, "example-shop.com")
    domain.verdict, domain.registered, domain.statuses = "released", False, ""
    guard.db.session.commit()
    write_status(app, {})
    owner = app.test_client()
    login_with_2fa(owner, guard, user)
    response = confirm(owner, link)
    assert response.status_code == 409
    guard.db.session.refresh(row)
    assert row.verified_at is None
    refused = events(guard, EventKind.VERIFICATION_REFUSED)
    assert refused[-1].details["reason"] == "domain_unsafe"


# -- the status page and the resend button --------------------------------------------------


def test_status_page_lists_states_and_resends(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any], healthy: None
) -> None:
    user = make_user()
    add(guard, user, "done@example-shop.com", primary=True)
    pending = add(guard, user, "pending@other-shop.com", verified=False)
    client = app.test_client()
    assert client.get("/domainguard/verify/").status_code == 401

    login(client, user)
    page = client.get("/domainguard/verify/")
    assert page.status_code == 200
    text = page.data.decode()
    assert "done@example-shop.com" in text and "password resets can be sent here" in text
    assert "Not verified yet" in text
    response = client.post(
        "/domainguard/verify/send",
        data={
            "csrf_token": csrf_of(page.data),
            "address_id": str(pending.id),
            "next": "//evil.example/",
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/domainguard/verify/", "no off-site redirect"
    assert [m.recipients for m in outbox] == [["pending@other-shop.com"]]

    # Another user's address id is refused like a missing one.
    stranger_row = add(guard, make_user(), "x@other-shop.com", verified=False)
    client.post(
        "/domainguard/verify/send",
        data={"csrf_token": csrf_of(page.data), "address_id": str(stranger_row.id)},
    )
    assert len(outbox) == 1


def test_address_state_explains_a_domain_reason(guard: Any, make_user: Any) -> None:
    row = add(guard, make_user(), "me@example-shop.com")
    unverify(guard, row, UnverifyReason.DOMAIN_REREGISTERED)
    state = guard.address_state("me@example-shop.com")
    assert not state.verified and not state.receives_resets and state.needs_login
    assert state.unverify_reason == "domain_reregistered"
    assert "registered again" in state.label
    trusted = guard.address_state(add(guard, make_user(), "x@gmail.com"))
    assert trusted.receives_resets and trusted.domain_verdict == "trusted"


# -- the operator's command -----------------------------------------------------------------


def test_reverify_command(
    app: Flask, guard: Any, make_user: Any, runner: Any, outbox: list[Any]
) -> None:
    row = add(guard, make_user(), "me@example-shop.com")
    unverify(guard, row, UnverifyReason.DOMAIN_EXPIRED)

    assert runner.invoke(args=["domainguard", "reverify", "nobody@example.org"]).exit_code == 1

    write_status(app, {})
    result = runner.invoke(args=["domainguard", "reverify", "me@example-shop.com", "--json"])
    assert result.exit_code == 4
    failed = json.loads(result.stdout)
    assert failed["refusal"] == "lookup_failed" and failed["lookup_error"]
    # The table says the lookup failed, and why, rather than "(never checked)" alone.
    result = runner.invoke(args=["domainguard", "reverify", "me@example-shop.com"])
    assert result.exit_code == 4
    assert f"and it failed: {failed['lookup_error']}" in result.stdout

    write_status(app, {"example-shop.com": PENDING_DELETE})
    result = runner.invoke(args=["domainguard", "reverify", "me@example-shop.com", "--send"])
    assert result.exit_code == 3, result.output
    assert "expired" in result.output and outbox == []

    write_status(app, {"example-shop.com": OK})
    result = runner.invoke(
        args=["domainguard", "reverify", "me@example-shop.com", "--send", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verdict"] == "ok" and report["sent"] is True
    assert [m.recipients for m in outbox] == [["me@example-shop.com"]]
    assert "http://accounts.host.test/domainguard/verify/" in outbox[0].body
    [sent] = events(guard, EventKind.VERIFICATION_SENT)
    assert sent.actor.startswith("admin:")


def test_reverify_send_needs_server_name(
    app: Flask, guard: Any, make_user: Any, runner: Any
) -> None:
    app.config["SERVER_NAME"] = None
    add(guard, make_user(), "me@example-shop.com", verified=False)
    result = runner.invoke(args=["domainguard", "reverify", "me@example-shop.com", "--send"])
    assert result.exit_code == 2 and "SERVER_NAME" in result.stderr


# -- re-verification is told, and manual unverification is held to the same rule ------------


def test_the_other_safe_addresses_hear_of_a_reverification(
    app: Flask, guard: Any, lapsed: tuple[Any, Any, str], outbox: list[Any]
) -> None:
    user, _, link = lapsed
    add(guard, user, "me@gmail.com")  # a trusted provider: safe
    owner = app.test_client()
    login_with_2fa(owner, guard, user)
    before = len(outbox)
    assert confirm(owner, link).status_code == 200
    [notice] = outbox[before:]
    assert notice.recipients == ["me@gmail.com"], "never the re-verified address itself"
    assert "me@example-shop.com receives password resets again" in notice.subject
    assert "its domain expired" in notice.body


def test_a_hand_unverified_address_needs_its_owner_with_2fa(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any], healthy: None
) -> None:
    # "This wasn't me" unverifies the reset's address by hand: the attacker reads its mailbox.
    user = make_user()
    row = add(guard, user, "me@example-shop.com")
    add(guard, user, "me@gmail.com")
    guard.unverify(row, reason="manual", actor="user")
    guard.send_verification(row)
    link = mailed_link(outbox)
    stranger = app.test_client()
    page = stranger.get(link)
    assert b"Log in to your account first" in page.data
    assert stranger.post(link, data={"csrf_token": csrf_of(page.data)}).status_code == 409
    owner = app.test_client()
    login_with_2fa(owner, guard, user)
    assert confirm(owner, link).status_code == 200
    guard.db.session.refresh(row)
    assert row.verified_at is not None
    assert guard.address_state(row).receives_resets


def test_a_bounced_address_comes_back_from_its_mailbox_alone(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any], healthy: None
) -> None:
    row = add(guard, make_user(), "me@example-shop.com")
    guard.unverify(row, reason="bounce", actor="bounce:test")
    guard.send_verification(row)
    assert confirm(app.test_client(), mailed_link(outbox)).status_code == 200
