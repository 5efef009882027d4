"""Mailed links are built on DOMAINGUARD_EXTERNAL_URL (or SERVER_NAME), never on the request's
Host header, and an app with neither does not start outside debug and testing."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_domainguard import ConfigError
from tests import hostapp

ANA = "ana@gmail.com"  # a trusted provider: resets need no lookup


def _bare_app(tmp_path: Any, **config: Any) -> Flask:
    app = Flask("links_host")
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'l.sqlite'}", **config)
    hostapp.uuid_db.init_app(app)
    return app


def test_init_app_refuses_an_app_without_a_link_base(tmp_path: Any) -> None:
    app = _bare_app(tmp_path)
    with pytest.raises(ConfigError) as caught:
        hostapp.uuid_guard.init_app(app)
    assert "DOMAINGUARD_EXTERNAL_URL" in str(caught.value)
    assert "SERVER_NAME" in str(caught.value)


@pytest.mark.parametrize(
    "config",
    [
        {"DOMAINGUARD_EXTERNAL_URL": "https://example.com"},
        {"SERVER_NAME": "example.com"},
        {"DEBUG": True},
        {"TESTING": True},
    ],
    ids=["external-url", "server-name", "debug", "testing"],
)
def test_init_app_accepts_a_link_base_or_debug_or_testing(tmp_path: Any, config: Any) -> None:
    hostapp.uuid_guard.init_app(_bare_app(tmp_path, **config))


@pytest.mark.parametrize(
    "value",
    ["example.com", "ftp://example.com", "https://", "https://example.com/?next=1", 42],
)
def test_a_bad_external_url_is_refused(tmp_path: Any, value: Any) -> None:
    app = _bare_app(tmp_path, DOMAINGUARD_EXTERNAL_URL=value)
    with pytest.raises(ConfigError, match="DOMAINGUARD_EXTERNAL_URL"):
        hostapp.uuid_guard.init_app(app)


def _verified(guard: Any, make_user: Any, address: str = ANA) -> Any:
    user = make_user(address)
    guard.add_address(user, address, primary=True, verified=True)
    return user


@pytest.mark.settings(DOMAINGUARD_EXTERNAL_URL="https://accounts.example.com/shop/")
def test_a_forged_host_header_never_reaches_the_reset_link(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any]
) -> None:
    _verified(guard, make_user)
    with app.test_request_context("/", base_url="http://evil.example"):
        assert guard.send_reset_mail(ANA)
    [mail] = outbox
    assert "https://accounts.example.com/shop/domainguard/reset/" in mail.body
    assert "evil.example" not in mail.body


@pytest.mark.settings(DOMAINGUARD_EXTERNAL_URL="https://accounts.example.com")
def test_a_forged_host_header_never_reaches_the_verification_link(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any]
) -> None:
    user = make_user(ANA)
    row = guard.add_address(user, ANA)
    with app.test_request_context("/", headers={"Host": "evil.example"}):
        guard.send_verification(row)
    [mail] = outbox
    assert "https://accounts.example.com/domainguard/verify/" in mail.body
    assert "evil.example" not in mail.body


@pytest.mark.settings(SERVER_NAME="shop.example:8443", PREFERRED_URL_SCHEME="https")
def test_without_an_external_url_links_use_server_name_and_the_preferred_scheme(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any]
) -> None:
    user = make_user(ANA)
    row = guard.add_address(user, ANA)
    guard.send_verification(row)  # outside any request: the sweep, the CLI, a worker
    assert "https://shop.example:8443/domainguard/verify/" in outbox[0].body


def test_without_a_link_base_there_is_no_link_outside_a_request(
    app: Flask, guard: Any, make_user: Any
) -> None:
    # Only an app in testing (or debug) mode gets this far without a link base.
    row = guard.add_address(make_user(ANA), ANA)
    with pytest.raises(RuntimeError, match=r"DOMAINGUARD_EXTERNAL_URL.*SERVER_NAME"):
        guard.send_verification(row)


@pytest.mark.settings(DOMAINGUARD_EXTERNAL_URL="https://accounts.example.com")
def test_hosts_build_their_own_links_on_the_same_base(app: Flask, guard: Any) -> None:
    app.add_url_rule("/my-reset/<token>", "my_reset", lambda token: token)
    with app.test_request_context("/", base_url="http://evil.example"):
        link = guard.external_link("my_reset", token="abc", next="/x")
    assert link == "https://accounts.example.com/my-reset/abc?next=/x"


@pytest.mark.settings(DOMAINGUARD_EXTERNAL_URL="https://accounts.example.com")
def test_a_forged_host_header_never_reaches_the_undo_link(
    app: Flask, guard: Any, make_user: Any, outbox: list[Any]
) -> None:
    # The "this wasn't me" link of a password-changed notice, mailed from a request whose
    # Host header names the attacker's site.
    user = _verified(guard, make_user)
    guard.add_address(user, "ana@example.org", verified=True)
    with app.test_request_context("/", headers={"Host": "evil.example"}):
        guard.password_changed(user, actor="user")
    mails = [m for m in outbox if "/domainguard/undo/" in m.body]
    assert len(mails) == 2  # a change made while logged in: every safe address gets one
    for mail in mails:
        assert "https://accounts.example.com/domainguard/undo/" in mail.body
        assert "evil.example" not in mail.body
