"""Sessions die with the password: every other session and remember cookie of a user ends when
the password changes, whichever flow changed it, with the host's login view unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_domainguard import sessions, users
from flask_domainguard.journal import transaction
from tests.twofactor_helpers import (
    PROTECTED,
    SiteUser,
    add_site_user,
    pass_second_factor,
    running_site,
    site_config,
    site_db,
    site_guard,
    site_login_as,
)

REMEMBER = "remember_token"  # Flask-Login's cookie


@pytest.fixture
def site(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Flask]:
    extra: dict[str, Any] = {"DOMAINGUARD_2FA_REQUIRED_SINCE": None}
    for marker in reversed(list(request.node.iter_markers("settings"))):
        extra.update(marker.kwargs)
    with running_site(site_config(database_url, tmp_path, **extra)) as app:
        yield app


def logged_in(client: Any) -> bool:
    return PROTECTED in client.get("/account").get_data(as_text=True)


def change_password_elsewhere(site: Flask, password: str = "attacker's choice") -> None:
    """The host's own reset page, in another process: it sets the column and commits."""
    with site.app_context():
        user = site_db.session.get(SiteUser, 1)
        user.set_password(password)
        site_db.session.commit()


def test_a_second_session_is_logged_out_on_its_next_request(site: Flask) -> None:
    add_site_user(site, with_2fa=False)
    first, second = site.test_client(), site.test_client()
    site_login_as(first)
    site_login_as(second)
    assert logged_in(first) and logged_in(second)
    change_password_elsewhere(site)
    for client in (first, second):
        response = client.get("/account")
        assert response.status_code == 302 and response.location.startswith("/login")
        with client.session_transaction() as session:
            assert "_user_id" not in session
        assert not logged_in(client), "and it stays logged out"
    # The new password logs in as usual.
    site_login_as(first, password="attacker's choice")
    assert logged_in(first)


def test_the_session_that_announces_its_change_goes_on_and_the_others_end(site: Flask) -> None:
    add_site_user(site, with_2fa=False)
    mine, other = site.test_client(), site.test_client()
    site_login_as(mine)
    site_login_as(other)
    response = mine.post("/account/password-announced", data={"password": "n" * 12})
    assert PROTECTED in response.get_data(as_text=True)
    assert logged_in(mine)
    assert not logged_in(other)


def test_an_unannounced_change_ends_the_changing_session_too(site: Flask) -> None:
    # Fail closed: a host form that does not call guard.password_changed logs everyone out,
    # its own session included, rather than guess which session made the change.
    add_site_user(site, with_2fa=False)
    client = site.test_client()
    site_login_as(client)
    client.post("/account/password", data={"password": "n" * 12})
    assert not logged_in(client)


def test_the_remember_cookie_dies_with_the_password(site: Flask) -> None:
    add_site_user(site, with_2fa=False)
    client = site.test_client()
    site_login_as(client, remember=True)
    assert client.get_cookie(REMEMBER) is not None
    assert client.get_cookie(sessions.REMEMBER_COOKIE) is not None
    # Before the change the remember cookie restores the login, as Flask-Login does.
    client.delete_cookie("session")
    assert logged_in(client)
    stolen = {name: client.get_cookie(name).value for name in (REMEMBER, sessions.REMEMBER_COOKIE)}
    change_password_elsewhere(site)
    # Without its session cookie: the remember cookie no longer logs in...
    client.delete_cookie("session")
    response = client.get("/account")
    assert response.location.startswith("/login")
    # ...and the answer clears both cookies.
    cleared = " ".join(response.headers.getlist("Set-Cookie"))
    assert f"{REMEMBER}=;" in cleared and f"{sessions.REMEMBER_COOKIE}=;" in cleared
    # A copy of the cookies taken before the change is dead as well.
    thief = site.test_client()
    for name, value in stolen.items():
        thief.set_cookie(name, value)
    assert not logged_in(thief)


def test_a_remember_cookie_without_its_companion_does_not_log_in(site: Flask) -> None:
    # A remember cookie made before DomainGuard bound them (or the companion stripped off).
    add_site_user(site, with_2fa=False)
    client = site.test_client()
    site_login_as(client, remember=True)
    remember = client.get_cookie(REMEMBER).value
    bare = site.test_client()
    bare.set_cookie(REMEMBER, remember)
    assert not logged_in(bare)
    # A companion of another user does not fit either.
    add_site_user(site, "bob@example.com", with_2fa=False)
    bob = site.test_client()
    site_login_as(bob, "bob@example.com", remember=True)
    bare.set_cookie(REMEMBER, remember)
    bare.set_cookie(sessions.REMEMBER_COOKIE, bob.get_cookie(sessions.REMEMBER_COOKIE).value)
    assert not logged_in(bare)


def test_a_remember_cookie_with_2fa_still_asks_for_the_code_until_the_change(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    site_login_as(client, remember=True)
    pass_second_factor(client, secret)
    assert logged_in(client)
    client.delete_cookie("session")
    assert client.get("/account").location.startswith("/domainguard/2fa/verify")
    change_password_elsewhere(site)
    client.delete_cookie("session")
    assert client.get("/account").location.startswith("/login")


def test_raising_the_epoch_ends_sessions_without_a_password_change(site: Flask) -> None:
    # Hosts whose password hash DomainGuard cannot read still end sessions through the epoch.
    add_site_user(site, with_2fa=False)
    client = site.test_client()
    site_login_as(client, remember=True)
    with site.app_context(), transaction(site_db, site_guard.models):
        users.raise_session_epoch(site_guard, 1)
    assert not logged_in(client)
    client.delete_cookie("session")
    assert not logged_in(client)


def test_dead_sessions_are_anonymous_on_the_librarys_own_pages(site: Flask) -> None:
    add_site_user(site, with_2fa=False)
    client = site.test_client()
    site_login_as(client)
    change_password_elsewhere(site)
    # The address list needs a logged-in user: the dead session is sent to log in.
    assert client.get("/domainguard/verify/").location.startswith("/login")


def test_rotating_the_secret_key_ends_no_session(site: Flask) -> None:
    add_site_user(site, with_2fa=False)
    client = site.test_client()
    site_login_as(client)
    old = site.config["SECRET_KEY"]
    # Flask reads sessions signed with a fallback key; their binding is checked the same way.
    site.config.update(SECRET_KEY="a-new-secret-key-for-tests", SECRET_KEY_FALLBACKS=[old])
    assert logged_in(client)
