"""Reset tokens and the blueprint's reset pages: bound to user, address and password hash;
single use; no login; 2FA never skipped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from freezegun import freeze_time
from werkzeug.security import check_password_hash

from flask_domainguard import tokens
from flask_domainguard.journal import EventKind
from flask_domainguard.models import UnverifyReason
from flask_domainguard.reset.tokens import _binding_text
from tests.guard_helpers import OK, RELEASED, add, csrf_of, events, link_in, unverify, write_status

pytestmark = [
    pytest.mark.settings(SERVER_NAME="accounts.host.test", DOMAINGUARD_RESET_PROCESSING="inline"),
    pytest.mark.usefixtures("fresh_request_globals"),
]

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture(autouse=True)
def password_setter(guard: Any) -> Iterator[list[Any]]:
    """The host's setter, recording whom it was called for."""
    calls: list[Any] = []

    def store(user: Any, new_password: str) -> None:
        if new_password == "rejected-by-host":
            raise ValueError("That password appears in a breach list; choose another.")
        calls.append(user.id)
        user.set_password(new_password)

    guard.set_password_setter(store)
    yield calls
    guard.password_setter = None


@pytest.fixture
def account(app: Flask, guard: Any, make_user: Any) -> tuple[Any, Any]:
    write_status(app, {"example-shop.com": OK, "other-shop.com": OK})
    user = make_user()
    return user, add(guard, user, "me@example-shop.com")


def test_reset_flow_sets_the_password_and_never_logs_in(
    app: Flask,
    guard: Any,
    client: FlaskClient,
    outbox: list[Any],
    account: tuple[Any, Any],
    password_setter: list[Any],
) -> None:
    user, row = account
    form = client.get("/domainguard/reset")
    client.post(
        "/domainguard/reset",
        data={"csrf_token": csrf_of(form.data), "email": "ME@example-shop.com"},
    )
    [mail] = outbox
    assert mail.recipients == ["me@example-shop.com"]
    link = link_in(mail.body, "/reset/")
    [sent] = events(guard, EventKind.RESET_SENT)
    assert sent.address_id == row.id

    page = client.get(link)
    assert page.status_code == 200 and b"Choose a new password" in page.data
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert password_setter == [], "GET changes nothing"

    mismatch = client.post(
        link,
        data={"csrf_token": csrf_of(page.data), "password": NEW_PASSWORD, "confirm": "other"},
    )
    assert mismatch.status_code == 400 and b"The passwords differ" in mismatch.data
    refused = client.post(
        link,
        data={
            "csrf_token": csrf_of(page.data),
            "password": "rejected-by-host",
            "confirm": "rejected-by-host",
        },
    )
    assert refused.status_code == 400 and b"breach list" in refused.data

    done = client.post(
        link,
        data={"csrf_token": csrf_of(page.data), "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert done.status_code == 200 and b"Log in with your new password" in done.data
    guard.db.session.refresh(user)
    assert check_password_hash(user.password_hash, NEW_PASSWORD)
    assert password_setter == [user.id]
    with client.session_transaction() as sess:
        assert "_user_id" not in sess, "a reset never logs anyone in"
    [reset] = events(guard, EventKind.PASSWORD_RESET)
    assert reset.address_id == row.id
    # The owner hears about it at their safe addresses.
    assert outbox[-1].subject.endswith("password was changed")

    again = client.post(
        link,
        data={"csrf_token": csrf_of(page.data), "password": "x" * 12, "confirm": "x" * 12},
    )
    assert again.status_code == 400
    assert password_setter == [user.id]


def test_expired_token_is_refused(guard: Any, account: tuple[Any, Any]) -> None:
    user, row = account
    with freeze_time("2024-05-01T10:00:00Z") as clock:
        token = guard.reset_token(user, row)
        clock.tick(timedelta(minutes=59))
        guard.read_reset_token(token)
        clock.tick(timedelta(minutes=1))
        with pytest.raises(tokens.TokenExpired):
            guard.complete_reset(token, NEW_PASSWORD)


def test_tampered_token_is_refused(
    guard: Any, client: FlaskClient, account: tuple[Any, Any]
) -> None:
    user, row = account
    token = guard.reset_token(user, row)
    bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(tokens.TokenError):
        guard.read_reset_token(bad)
    response = client.get(f"/domainguard/reset/{bad}")
    assert response.status_code == 400 and b"cannot be used" in response.data
    # A verification token is no reset token, even for the same address.
    from flask_domainguard.addresses.verification import verification_token

    with pytest.raises(tokens.TokenError):
        guard.read_reset_token(verification_token(row))


def test_reused_token_is_refused(guard: Any, account: tuple[Any, Any]) -> None:
    user, row = account
    token = guard.reset_token(user, row)
    guard.complete_reset(token, NEW_PASSWORD)
    with pytest.raises(tokens.TokenError):
        guard.complete_reset(token, "yet another passphrase")


def test_token_issued_before_a_password_change_is_refused(
    guard: Any, account: tuple[Any, Any]
) -> None:
    user, row = account
    first = guard.reset_token(user, row)
    second = guard.reset_token(user, row)
    guard.complete_reset(first, NEW_PASSWORD)
    with pytest.raises(tokens.TokenError):
        guard.read_reset_token(second)
    # Any password change counts, not only a reset.
    third = guard.reset_token(user, row)
    user.set_password("changed in the profile page")
    guard.db.session.commit()
    with pytest.raises(tokens.TokenError):
        guard.read_reset_token(third)


def test_token_for_another_user_or_address_is_refused(
    guard: Any, make_user: Any, account: tuple[Any, Any]
) -> None:
    user, row = account
    other_user = make_user()
    other_row = add(guard, other_user, "them@other-shop.com")
    second_row = add(guard, user, "second@other-shop.com")

    def forged(user_id: Any, address_id: int, binding: str) -> str:
        # Genuine signatures over inconsistent claims: what a bug in a host would mint.
        return tokens.issue(
            tokens.RESET,
            {"u": str(user_id), "a": address_id, "b": tokens.bind(tokens.RESET, binding)},
        )

    cases = [
        forged(other_user.id, row.id, _binding_text(guard, user, row)),  # claims another user
        forged(user.id, other_row.id, _binding_text(guard, user, row)),  # another's address
        forged(user.id, second_row.id, _binding_text(guard, user, row)),  # own other address
        forged(user.id, row.id, _binding_text(guard, other_user, other_row)),  # foreign binding
    ]
    for token in cases:
        with pytest.raises(tokens.TokenError):
            guard.read_reset_token(token)
    # The consistent one is accepted, so the refusals above are about the bindings.
    assert guard.read_reset_token(forged(user.id, row.id, _binding_text(guard, user, row)))


def test_token_dies_when_the_address_loses_its_standing(
    app: Flask, guard: Any, account: tuple[Any, Any]
) -> None:
    user, row = account
    token = guard.reset_token(user, row)
    unverify(guard, row, UnverifyReason.DOMAIN_EXPIRED)
    with pytest.raises(tokens.TokenError):
        guard.read_reset_token(token)

    other = add(guard, user, "x@other-shop.com")
    token = guard.reset_token(user, other)
    write_status(app, {"other-shop.com": RELEASED})
    guard.reset_decision("x@other-shop.com")  # the live check records 'released'
    with pytest.raises(tokens.TokenError):
        guard.read_reset_token(token)


def test_no_password_setter_is_a_clear_error(guard: Any, account: tuple[Any, Any]) -> None:
    user, row = account
    guard.password_setter = None
    with pytest.raises(RuntimeError, match="set_password_setter"):
        guard.complete_reset(guard.reset_token(user, row), NEW_PASSWORD)


def test_reset_does_not_skip_2fa(
    app: Flask, guard: Any, client: FlaskClient, account: tuple[Any, Any]
) -> None:
    """After a reset the session is not logged in, so the next login meets the 2FA gate."""
    from tests.guard_helpers import enrol_2fa

    user, row = account
    enrol_2fa(guard, user)
    token = guard.reset_token(user, row)
    page = client.get(f"/domainguard/reset/{token}")
    client.post(
        f"/domainguard/reset/{token}",
        data={"csrf_token": csrf_of(page.data), "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    with client.session_transaction() as sess:
        assert "_user_id" not in sess
        assert not any(key.startswith("_domainguard_2fa") for key in sess)
