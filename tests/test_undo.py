""" "This wasn't me": a reset that got through (here: forced by a stale check) is undone from a
link mailed to the account's other safe addresses. Sessions, 2FA enrolled since, the new
password and the reset address all go; the owner resets through the safe address."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from freezegun import freeze_time

from flask_domainguard import signals
from flask_domainguard.journal import EventKind
from flask_domainguard.reset.flow import process_reset_request
from flask_domainguard.twofactor import devices, verify
from tests.guard_helpers import link_in
from tests.twofactor_helpers import (
    PROTECTED,
    SiteUser,
    add_site_user,
    code_at,
    csrf_token,
    running_site,
    site_config,
    site_db,
    site_guard,
    site_login_as,
)

ATTACKED = "ada@ada-old.example"  # her old domain: lapsed, and the attacker registered it
SAFE = "ada@gmail.com"  # her other address, on a trusted provider
OWNER_PASSWORD = "correct horse"


@pytest.fixture
def site(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Flask]:
    extra: dict[str, Any] = {
        # The forced-through reset: no lookup, the stored state (none) decides.
        "DOMAINGUARD_RESET_LIVE_CHECK": "off",
        "DOMAINGUARD_RESET_PROCESSING": "inline",
        "DOMAINGUARD_2FA_REQUIRED_SINCE": None,
        "DOMAINGUARD_EXTERNAL_URL": "https://shop.example",
    }
    for marker in reversed(list(request.node.iter_markers("settings"))):
        extra.update(marker.kwargs)
    with running_site(site_config(database_url, tmp_path, **extra)) as app:
        site_guard.set_password_setter(lambda user, password: user.set_password(password))
        try:
            yield app
        finally:
            site_guard.password_setter = None


@pytest.fixture
def outbox(site: Flask) -> Iterator[list[Any]]:
    with site.extensions["mail"].record_messages() as messages:
        yield messages


def make_owner(site: Flask, *, with_2fa: bool = False) -> str:
    """Ada: the attacked address (primary) and a safe one; returns her TOTP secret or ""."""
    _, secret, _ = add_site_user(site, ATTACKED, OWNER_PASSWORD, with_2fa=with_2fa)
    with site.app_context():
        site_guard.add_address(site_db.session.get(SiteUser, 1), SAFE, verified=True)
    return secret


def mails_to(outbox: list[Any], address: str, subject: str = "") -> list[Any]:
    return [m for m in outbox if address in m.recipients and subject in m.subject]


def reset_through(client: Any, outbox: list[Any], address: str, password: str) -> None:
    """Ask for a reset link at ``address`` and use it (DomainGuard's own pages)."""
    page = client.get("/domainguard/reset")
    client.post("/domainguard/reset", data={"csrf_token": csrf_token(page.data), "email": address})
    [mail] = mails_to(outbox, address, "Reset your")[-1:]
    link = link_in(mail.body, "/reset/")
    form = client.get(link)
    done = client.post(
        link,
        data={"csrf_token": csrf_token(form.data), "password": password, "confirm": password},
    )
    assert done.status_code == 200, done.get_data(as_text=True)


def undo_link(outbox: list[Any], address: str = SAFE) -> str:
    [mail] = [m for m in mails_to(outbox, address) if "/domainguard/undo/" in m.body][-1:]
    return link_in(mail.body, "/undo/")


def journal(site: Flask, kind: EventKind) -> list[Any]:
    with site.app_context():
        Event = site_guard.models.Event
        return list(site_db.session.scalars(sa.select(Event).where(Event.kind == kind.value)))


def is_logged_in(client: Any) -> bool:
    return PROTECTED in client.get("/account").get_data(as_text=True)


def attacker_takes_over(site: Flask, outbox: list[Any]) -> tuple[Any, str]:
    """The attack up to the point of "this wasn't me": returns the attacker's client and the
    TOTP secret they enrolled."""
    attacker = site.test_client()
    reset_through(attacker, outbox, ATTACKED, "attacker-password")
    site_login_as(attacker, ATTACKED, "attacker-password", remember=True)
    assert is_logged_in(attacker)
    with site.app_context():
        user = site_db.session.get(SiteUser, 1)
        enrolment = devices.start_enrolment(site_guard, user)
        assert verify.confirm_enrolment(
            site_guard, user, code_at(enrolment.secret), client="203.0.113.9"
        ).ok
    return attacker, enrolment.secret


def test_the_notice_reaches_the_other_safe_address_with_a_link_and_the_reset_address_without(
    site: Flask, outbox: list[Any]
) -> None:
    make_owner(site)
    reset_through(site.test_client(), outbox, ATTACKED, "attacker-password")
    [to_safe] = mails_to(outbox, SAFE, "password was changed")
    [to_attacked] = mails_to(outbox, ATTACKED, "password was changed")
    assert "https://shop.example/domainguard/undo/" in to_safe.body
    assert "/undo/" not in to_attacked.body
    assert f"through a reset link sent to {ATTACKED}" in to_safe.body
    [event] = journal(site, EventKind.PASSWORD_RESET)
    assert event.address == ATTACKED and event.actor == "user"


def test_the_whole_lock_back(site: Flask, outbox: list[Any]) -> None:
    make_owner(site)
    locked: list[dict[str, Any]] = []
    attacker, _ = attacker_takes_over(site, outbox)
    # The enrolment soon after the reset is reported too, with its own link.
    [enrolled] = mails_to(outbox, SAFE, "Two-factor authentication is on")
    assert "/domainguard/undo/" in enrolled.body
    assert not mails_to(outbox, ATTACKED, "Two-factor authentication is on")

    owner = site.test_client()
    link = undo_link(outbox)
    page = owner.get(link)
    assert page.status_code == 200 and "Was this you?" in page.get_data(as_text=True)
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert is_logged_in(attacker), "GET changes nothing (mail scanners fetch links)"
    assert owner.post(link).status_code == 400, "no CSRF token, no action"
    assert is_logged_in(attacker)

    with signals.account_locked.connected_to(lambda app, **kw: locked.append(kw)):
        done = owner.post(link, data={"csrf_token": csrf_token(page.data)})
    assert done.status_code == 200
    assert "locked back to you" in done.get_data(as_text=True)

    # The attacker's session and remember cookie are gone...
    assert not is_logged_in(attacker)
    attacker.delete_cookie("session")
    assert not is_logged_in(attacker)
    # ...and so are their authenticator and recovery codes...
    with site.app_context():
        assert not devices.twofactor_enabled(site_guard, 1)
        assert devices.remaining_recovery_codes(site_guard, 1) == 0
        # ...and the reset address no longer receives resets, until its owner verifies it.
        row = site_guard.find_address(ATTACKED)
        assert row.verified_at is None and row.unverify_reason.value == "manual"
    # The attacker's password logs nobody in.
    retry = site.test_client()
    site_login_as(retry, ATTACKED, "attacker-password")
    assert not is_logged_in(retry)
    # The journal and the signal say what happened.
    [event] = journal(site, EventKind.ACCOUNT_LOCKED)
    assert event.address == SAFE
    assert event.details["twofactor_removed"] is True
    assert event.details["recovery_codes_removed"] == 10
    assert event.details["unverified"] == ATTACKED
    assert locked and locked[0]["unverified"] == ATTACKED
    assert [e.details["reason"] for e in journal(site, EventKind.ADDRESS_UNVERIFIED)] == ["manual"]
    [notice] = mails_to(outbox, SAFE, "locked back to you")
    assert "https://shop.example/domainguard/reset" in notice.body
    # The link works once.
    again = owner.post(link, data={"csrf_token": csrf_token(page.data)})
    assert again.status_code == 400

    # The attacker asks for another reset at their address: nothing is sent.
    before = len(outbox)
    page = retry.get("/domainguard/reset")
    retry.post("/domainguard/reset", data={"csrf_token": csrf_token(page.data), "email": ATTACKED})
    assert not [m for m in outbox[before:] if m.recipients == [ATTACKED]]

    # The owner resets through the safe address and logs in with the new password.
    reset_through(owner, outbox, SAFE, "owner-new-password")
    site_login_as(owner, ATTACKED, "owner-new-password")
    assert is_logged_in(owner)
    [unlock] = [e for e in journal(site, EventKind.PASSWORD_RESET) if e.address == SAFE]
    assert unlock.details == {"unlocked": True}


def test_a_device_from_before_the_change_stays(site: Flask, outbox: list[Any]) -> None:
    secret = make_owner(site, with_2fa=True)
    with freeze_time(datetime.now(timezone.utc) + timedelta(minutes=5)):
        # A host's own change (admin tool) after the owner enrolled: no reset address.
        with site.app_context():
            site_guard.password_changed(site_db.session.get(SiteUser, 1), actor="admin:carol")
        link = undo_link(outbox)
        client = site.test_client()
        page = client.get(link)
        client.post(link, data={"csrf_token": csrf_token(page.data)})
        with site.app_context():
            assert devices.twofactor_enabled(site_guard, 1)
            assert devices.remaining_recovery_codes(site_guard, 1) == 10
            assert site_guard.find_address(ATTACKED).verified_at is not None
        # Her authenticator still signs her in after a reset.
        reset_through(client, outbox, SAFE, "owner-new-password")
        site_login_as(client, ATTACKED, "owner-new-password")
        page = client.get("/domainguard/2fa/verify")
        client.post(
            "/domainguard/2fa/verify",
            data={"csrf_token": csrf_token(page.data), "code": code_at(secret)},
        )
        assert is_logged_in(client)


def test_the_link_expires_and_dies_with_its_address(site: Flask, outbox: list[Any]) -> None:
    make_owner(site)
    start = datetime.now(timezone.utc)
    with freeze_time(start):
        reset_through(site.test_client(), outbox, ATTACKED, "attacker-password")
    link = undo_link(outbox)
    client = site.test_client()
    with freeze_time(start + timedelta(days=7) - timedelta(seconds=1)):
        assert client.get(link).status_code == 200
    with freeze_time(start + timedelta(days=7)):
        assert client.get(link).status_code == 400
    # Within its lifetime, but the address it was mailed to lost its verified state.
    with site.app_context():
        site_guard.unverify(SAFE, reason="bounce", actor="bounce:test")
    assert client.get(link).status_code == 400


def test_the_host_flow_calls_password_changed_with_the_address(
    site: Flask, outbox: list[Any]
) -> None:
    make_owner(site)
    other = site.test_client()
    site_login_as(other, ATTACKED, OWNER_PASSWORD)
    with site.test_request_context("/reset/host-token", method="POST"):
        user = site_db.session.get(SiteUser, 1)
        user.set_password("attacker-password")
        site_db.session.commit()
        site_guard.password_changed(user, actor="user", via=ATTACKED)
    assert not is_logged_in(other)
    assert "/undo/" in mails_to(outbox, SAFE, "password was changed")[0].body
    [event] = journal(site, EventKind.PASSWORD_RESET)
    assert event.address == ATTACKED


def test_a_reset_the_host_forgot_to_announce_is_noticed_at_the_next_login(
    site: Flask, outbox: list[Any]
) -> None:
    # The decorator flow: the host's forgot view mails its own link; its reset page stores the
    # password and does not call guard.password_changed.
    make_owner(site)
    with site.test_request_context("/forgot", method="POST"):
        decision, _ = process_reset_request(site_guard, ATTACKED, on_allowed=lambda d: None)
        assert decision.allowed
    with site.app_context():
        user = site_db.session.get(SiteUser, 1)
        user.set_password("attacker-password")
        site_db.session.commit()
    assert not mails_to(outbox, SAFE, "password was changed")
    attacker = site.test_client()
    site_login_as(attacker, ATTACKED, "attacker-password")
    assert is_logged_in(attacker)
    assert "/undo/" in mails_to(outbox, SAFE, "password was changed")[0].body
    [event] = journal(site, EventKind.PASSWORD_RESET)
    assert event.actor == "system" and event.address == ATTACKED
    # Logging in again changes nothing more.
    site_login_as(site.test_client(), ATTACKED, "attacker-password")
    assert len(journal(site, EventKind.PASSWORD_RESET)) == 1


def test_a_new_hash_without_a_reset_behind_it_is_not_a_reset(
    site: Flask, outbox: list[Any]
) -> None:
    # A host that upgrades password hashes at login: no notice, no journal row.
    make_owner(site)
    site_login_as(site.test_client(), ATTACKED, OWNER_PASSWORD)
    with site.app_context():
        user = site_db.session.get(SiteUser, 1)
        user.set_password(OWNER_PASSWORD)  # the same password, hashed anew
        site_db.session.commit()
    client = site.test_client()
    site_login_as(client, ATTACKED, OWNER_PASSWORD)
    assert is_logged_in(client)
    assert not mails_to(outbox, SAFE, "password was changed")
    assert not journal(site, EventKind.PASSWORD_RESET)


def test_enrolling_long_after_a_reset_is_the_usual_notice(site: Flask, outbox: list[Any]) -> None:
    make_owner(site)
    start = datetime.now(timezone.utc)
    with freeze_time(start):
        reset_through(site.test_client(), outbox, ATTACKED, "new-password-1")
    with freeze_time(start + timedelta(days=8)), site.app_context():
        user = site_db.session.get(SiteUser, 1)
        enrolment = devices.start_enrolment(site_guard, user)
        assert verify.confirm_enrolment(site_guard, user, code_at(enrolment.secret), client=None).ok
    [notice] = mails_to(outbox, SAFE, "Two-factor authentication is on")
    assert "/undo/" not in notice.body and ATTACKED in notice.recipients


def test_an_account_with_2fa_before_the_reset_keeps_it(site: Flask, outbox: list[Any]) -> None:
    # Sanity of the premise: with 2FA from before, the attacker's new password alone is not
    # enough, and the owner's device survives a lock-back.
    secret = make_owner(site, with_2fa=True)
    attacker = site.test_client()
    reset_through(attacker, outbox, ATTACKED, "attacker-password")
    site_login_as(attacker, ATTACKED, "attacker-password")
    assert attacker.get("/account").location.startswith("/domainguard/2fa/verify")
    owner = site.test_client()
    link = undo_link(outbox)
    owner.post(link, data={"csrf_token": csrf_token(owner.get(link).data)})
    with site.app_context():
        assert devices.twofactor_enabled(site_guard, 1)
    # ...and her own code still signs her in once she has reset the password.
    reset_through(owner, outbox, SAFE, "owner-new-password")
    site_login_as(owner, ATTACKED, "owner-new-password")
    page = owner.get("/domainguard/2fa/verify")
    owner.post(
        "/domainguard/2fa/verify",
        data={"csrf_token": csrf_token(page.data), "code": code_at(secret)},
    )
    assert is_logged_in(owner)
