"""The 2FA gate around a host's own Flask-Login login: every route of a host app, remember
cookies, trusted devices, password resets, open redirects, rate limits across processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from freezegun import freeze_time

from flask_domainguard.journal import EventKind
from flask_domainguard.redirects import safe_next
from flask_domainguard.twofactor import crypto
from flask_domainguard.twofactor.trust import TRUST_COOKIE
from tests.twofactor_helpers import (
    PROTECTED,
    SiteUser,
    add_site_user,
    code_at,
    csrf_token,
    pass_second_factor,
    running_site,
    site_config,
    site_db,
    site_guard,
    site_login_as,
)

VERIFY = "/domainguard/2fa/verify"
ENROLL = "/domainguard/2fa/enroll"

#: What a session that passed only the password may reach.
ALLOWED = {
    "logout",
    "static",
    "domainguard.static",
    "domainguard.twofactor_verify",
    "domainguard.twofactor_recovery",
    "domainguard.twofactor_enroll",
    "domainguard.verify_address",
    "domainguard.undo_change",  # a token page that only takes access away
}


@pytest.fixture
def site(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Flask]:
    extra: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("settings"))):
        extra.update(marker.kwargs)
    with running_site(site_config(database_url, tmp_path, **extra)) as app:
        yield app


def _sample(rule: Any, arg: str) -> Any:
    converter = type(rule._converters[arg]).__name__
    if converter == "IntegerConverter":
        return 1
    if converter == "UUIDConverter":
        return uuid.UUID(int=1)
    return "x"


def crawl(
    app: Flask, client: Any, headers: dict[str, str] | None = None
) -> list[tuple[str, str, Any]]:
    """Request every route with every method; the host's logout goes last (it ends the session)."""
    adapter = app.url_map.bind("localhost")
    rules = sorted(app.url_map.iter_rules(), key=lambda r: (r.endpoint == "logout", r.rule))
    seen = []
    for rule in rules:
        values = {arg: _sample(rule, arg) for arg in rule.arguments}
        url = adapter.build(rule.endpoint, values, force_external=False)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            response = client.open(url, method=method, headers=headers or {})
            seen.append((rule.endpoint, method, response))
    return seen


def assert_gated(app: Flask, client: Any) -> None:
    reached = set()
    results = crawl(app, client)
    assert len({endpoint for endpoint, _, _ in results}) >= 15, "the crawl covers the whole app"
    for endpoint, method, response in results:
        body = response.get_data(as_text=True)
        assert PROTECTED not in body, f"{method} {endpoint} leaked a protected page"
        assert response.status_code < 500, f"{method} {endpoint}: {response.status_code}"
        gate = response.status_code == 302 and response.location.startswith(VERIFY)
        if not gate:
            reached.add(endpoint)
    assert reached <= ALLOWED, f"reachable without the second factor: {reached - ALLOWED}"
    assert {"logout", "domainguard.twofactor_verify", "domainguard.twofactor_recovery"} <= reached


def test_password_only_session_reaches_nothing_but_the_allowed_pages(site: Flask) -> None:
    add_site_user(site)
    client = site.test_client()
    assert site_login_as(client).status_code == 302
    assert_gated(site, client)


def test_json_clients_get_401_with_where_to_go(site: Flask) -> None:
    add_site_user(site)
    client = site.test_client()
    site_login_as(client)
    for endpoint, method, response in crawl(site, client, {"Accept": "application/json"}):
        if endpoint in ALLOWED:
            continue
        assert response.status_code == 401, f"{method} {endpoint}"
        assert response.json["error"] == "second_factor_required"
        assert response.json["location"].startswith(VERIFY)
        assert PROTECTED not in response.get_data(as_text=True)


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Accept": BROWSER_ACCEPT}, None, 302),
        ({"Accept": "*/*"}, None, 302),
        ({}, None, 302),
        ({"Accept": "*/*"}, {"id": 1}, 401),  # fetch() posting JSON with its default Accept
        ({}, {"id": 1}, 401),
        ({"Accept": "application/json, text/plain, */*"}, None, 401),  # axios
        ({"Accept": BROWSER_ACCEPT}, {"id": 1}, 302),
    ],
)
def test_json_preference_is_read_from_accept_and_the_body(
    site: Flask, headers: dict[str, str], body: Any, status: int
) -> None:
    add_site_user(site)
    client = site.test_client()
    site_login_as(client)
    response = client.post("/items/1/delete", headers=headers, json=body)
    assert response.status_code == status
    assert PROTECTED not in response.get_data(as_text=True)


def test_after_the_code_every_page_opens_and_next_is_followed(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    site_login_as(client)
    gated = client.get("/items/7?tab=2")
    assert gated.location == f"{VERIFY}?next=/items/7?tab%3D2"
    response = pass_second_factor(client, secret, next="/items/7?tab=2")
    assert response.status_code == 302 and response.location == "/items/7?tab=2"
    for path in ("/", "/account", "/items/1", "/api/me"):
        assert PROTECTED in client.get(path).get_data(as_text=True)
    # The verify page has nothing left to ask and sends the user on.
    assert client.get(VERIFY).status_code == 302


def test_remember_cookie_session_passes_the_second_factor_again(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    site_login_as(client, remember=True)
    pass_second_factor(client, secret)
    assert PROTECTED in client.get("/account").get_data(as_text=True)
    assert client.get_cookie("remember_token") is not None
    # The browser closes: the session cookie is gone, Flask-Login's remember cookie is not.
    client.delete_cookie("session")
    assert client.get("/account").location.startswith(VERIFY)
    with site.app_context():
        state = site_db.session.get(site_guard.models.UserState, 1)
        assert state is not None and state.last_login_at is not None
    assert_gated(site, client)


def test_remember_cookie_restore_resets_a_passed_state_and_records_the_login(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    first = datetime(2025, 4, 1, 8, 0, tzinfo=timezone.utc)
    with freeze_time(first):
        site_login_as(client, remember=True)
        pass_second_factor(client, secret)
    later = first + timedelta(days=3)
    with freeze_time(later):
        # Flask-Login's own keys go (as when its session protection or the host clears
        # them) while our "passed" state stays: the restored user must still start over.
        with client.session_transaction() as session:
            assert session["_domainguard_2fa"]["mode"] == "done"
            session.pop("_user_id")
        assert client.get("/account").location.startswith(VERIFY)
    with site.app_context():
        state = site_db.session.get(site_guard.models.UserState, 1)
        assert state.last_login_at == later


def test_remember_cookie_json_client_gets_401(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    site_login_as(client, remember=True)
    pass_second_factor(client, secret)
    client.delete_cookie("session")
    response = client.get("/api/me", headers={"Accept": "application/json"})
    assert response.status_code == 401 and response.json["error"] == "second_factor_required"


def test_trusted_device_skips_the_step_on_remember_cookie_and_login(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    site_login_as(client, remember=True)
    response = pass_second_factor(client, secret, trust=True)
    assert TRUST_COOKIE in response.headers.get("Set-Cookie", "")
    assert "HttpOnly" in response.headers["Set-Cookie"]
    client.delete_cookie("session")
    assert PROTECTED in client.get("/account").get_data(as_text=True)
    client.get("/logout")
    site_login_as(client)
    assert PROTECTED in client.get("/account").get_data(as_text=True)


def test_password_reset_then_login_still_demands_the_code(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    victim = site.test_client()
    site_login_as(victim, remember=True)
    pass_second_factor(victim, secret, trust=True)
    trusted_cookie = victim.get_cookie(TRUST_COOKIE)
    assert trusted_cookie is not None
    # An attacker who owns the resurrected domain resets the password (the host's own reset).
    with site.app_context():
        user = site_db.session.get(SiteUser, 1)
        user.set_password("attacker's choice")
        site_db.session.commit()
    attacker = site.test_client()
    assert site_login_as(attacker, password="attacker's choice").status_code == 302
    assert attacker.get("/account").location.startswith(VERIFY)
    assert_gated(site, attacker)
    # Even a stolen trusted-device cookie is dead now: it was bound to the old password hash.
    attacker = site.test_client()
    attacker.set_cookie(TRUST_COOKIE, trusted_cookie.value)
    site_login_as(attacker, password="attacker's choice")
    assert attacker.get("/account").location.startswith(VERIFY)
    # The victim's own remember cookie died with the old password (see test_sessions.py).
    victim.delete_cookie("session")
    assert victim.get("/account").location.startswith("/login")


def test_trusted_device_dies_when_the_totp_secret_changes(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    site_login_as(client, remember=True)
    pass_second_factor(client, secret, trust=True)
    with site.app_context():
        device = site_db.session.scalar(sa.select(site_guard.models.TOTPDevice))
        box = crypto.SecretBox.for_settings(site_guard.settings)
        device.secret_encrypted = box.seal(crypto.new_secret())
        site_db.session.commit()
    client.delete_cookie("session")
    assert client.get("/account").location.startswith(VERIFY)


def test_trusted_device_expires(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    start = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    with freeze_time(start):
        site_login_as(client, remember=True)
        pass_second_factor(client, secret, trust=True)
    with freeze_time(start + timedelta(days=30) - timedelta(seconds=5)):
        client.delete_cookie("session")
        assert PROTECTED in client.get("/account").get_data(as_text=True)
    with freeze_time(start + timedelta(days=30, seconds=5)):
        client.delete_cookie("session")
        assert client.get("/account").location.startswith(VERIFY)


def test_trusted_device_of_another_user_is_ignored(site: Flask) -> None:
    _, secret_a, _ = add_site_user(site, "a@example.com")
    add_site_user(site, "b@example.com")
    client = site.test_client()
    site_login_as(client, "a@example.com")
    pass_second_factor(client, secret_a, trust=True)
    client.get("/logout")
    site_login_as(client, "b@example.com")
    assert client.get("/account").location.startswith(VERIFY)


@pytest.mark.settings(DOMAINGUARD_TRUST_DEVICE_DAYS=0)
def test_trusted_devices_can_be_turned_off(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    site_login_as(client)
    assert "Trust this device" not in client.get(VERIFY).get_data(as_text=True)
    response = pass_second_factor(client, secret, trust=True)
    assert TRUST_COOKIE not in response.headers.get("Set-Cookie", "")


def test_recovery_code_passes_the_step(site: Flask) -> None:
    _, _, codes = add_site_user(site)
    client = site.test_client()
    site_login_as(client)
    page = client.get("/domainguard/2fa/recovery")
    response = client.post(
        "/domainguard/2fa/recovery",
        data={"csrf_token": csrf_token(page.data), "code": codes[0].upper()},
    )
    assert response.status_code == 302
    assert PROTECTED in client.get("/account").get_data(as_text=True)


EVIL = [
    "//evil.example/",
    "https://evil.example/",
    "http://evil.example",
    "\\\\evil.example",
    "/\\evil.example",
    "\\/evil.example",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    " //evil.example",
    "/\t/evil.example",
    "https:evil.example",
    "///evil.example",
    "data:text/html,hi",
    "https://localhost.evil.example/",
    "evil.example",
]


@pytest.mark.parametrize("target", EVIL)
def test_open_redirects_via_next_are_refused(site: Flask, target: str) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    site_login_as(client)
    response = pass_second_factor(client, secret, next=target)
    assert response.status_code == 302
    assert response.location == "/", f"{target!r} led to {response.location!r}"


def test_same_site_next_values_are_kept() -> None:
    app = Flask("next_check")
    with app.test_request_context(base_url="https://shop.example"):
        assert safe_next("/a/b?c=1#d") == "/a/b?c=1#d"
        assert safe_next("https://shop.example/cart?x=1") == "/cart?x=1"
        assert safe_next("https://shop.example.evil/cart") is None
        assert safe_next("") is None and safe_next(None) is None
        for target in EVIL:
            assert safe_next(target) is None, target


def test_logout_is_reachable_and_ends_the_pending_session(site: Flask) -> None:
    add_site_user(site)
    client = site.test_client()
    site_login_as(client)
    assert client.get("/logout").location == "/login"
    assert client.get("/").get_data(as_text=True) == "welcome"
    with client.session_transaction() as session:
        assert "_domainguard_2fa" not in session


@pytest.mark.settings(DOMAINGUARD_2FA_ALLOWED_ENDPOINTS=["logout", "index"])
def test_allowed_endpoints_are_configurable(site: Flask) -> None:
    add_site_user(site)
    client = site.test_client()
    site_login_as(client)
    assert client.get("/").status_code == 200
    assert client.get("/account").location.startswith(VERIFY)


@pytest.mark.settings(DOMAINGUARD_2FA_REQUIRED_SINCE=None)
def test_users_without_2fa_pass_when_nothing_requires_it(site: Flask) -> None:
    add_site_user(site, with_2fa=False)
    client = site.test_client()
    site_login_as(client)
    assert PROTECTED in client.get("/account").get_data(as_text=True)


@pytest.mark.settings(DOMAINGUARD_2FA_REQUIRED_SINCE=date(2024, 1, 1))
def test_required_users_go_to_enrolment_before_anything_else(site: Flask) -> None:
    add_site_user(site, with_2fa=False)
    client = site.test_client()
    site_login_as(client)
    assert client.get("/account").location.startswith(ENROLL)
    response = client.get("/api/me", headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert response.json["error"] == "twofactor_enrolment_required"
    for endpoint, method, response in crawl(site, client):
        assert PROTECTED not in response.get_data(as_text=True), f"{method} {endpoint}"


@pytest.mark.settings(DOMAINGUARD_2FA_REQUIRED_SINCE=date(2024, 1, 1), DOMAINGUARD_2FA_GRACE_DAYS=7)
def test_grace_window_lets_users_on_with_a_banner_until_the_deadline(site: Flask) -> None:
    add_site_user(site, with_2fa=False)
    client = site.test_client()
    told = datetime(2025, 5, 1, 9, 0, tzinfo=timezone.utc)
    with freeze_time(told):
        site_login_as(client)
        assert PROTECTED in client.get("/account").get_data(as_text=True)
        with client.session_transaction() as session:
            flashes = session.get("_flashes", [])
        assert any("2025-05-08 09:00 UTC" in message for _, message in flashes)
    with freeze_time(told + timedelta(days=7) - timedelta(seconds=1)):
        assert PROTECTED in client.get("/account").get_data(as_text=True)
    with freeze_time(told + timedelta(days=7)):
        assert client.get("/account").location.startswith(ENROLL)


def test_require_fresh_2fa_asks_password_and_a_fresh_code(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    start = datetime(2025, 6, 1, 8, 0, tzinfo=timezone.utc)
    with freeze_time(start):
        site_login_as(client)
        pass_second_factor(client, secret)
        gated = client.get("/security/email")
        assert gated.location == "/domainguard/2fa/confirm?next=/security/email"
        page = client.get(gated.location)
        assert 'name="code"' not in page.get_data(as_text=True), "the 2FA step is still fresh"
        wrong = client.post(
            gated.location,
            data={
                "csrf_token": csrf_token(page.data),
                "password": "nope",
                "next": "/security/email",
            },
        )
        assert wrong.status_code == 400
        ok = client.post(
            gated.location,
            data={
                "csrf_token": csrf_token(page.data),
                "password": "correct horse",
                "next": "/security/email",
            },
        )
        assert ok.location == "/security/email"
        assert PROTECTED in client.get("/security/email").get_data(as_text=True)
        json = client.get("/security/email", headers={"Accept": "application/json"})
        assert json.status_code == 200
    with freeze_time(start + timedelta(minutes=11)):
        json = client.get("/security/email", headers={"Accept": "application/json"})
        assert json.status_code == 401 and json.json["error"] == "reauthentication_required"
        page = client.get("/domainguard/2fa/confirm?next=/security/email")
        assert 'name="code"' in page.get_data(as_text=True), "the 2FA step is stale now"
        no_code = client.post(
            "/domainguard/2fa/confirm",
            data={"csrf_token": csrf_token(page.data), "password": "correct horse"},
        )
        assert no_code.status_code == 400
        ok = client.post(
            "/domainguard/2fa/confirm",
            data={
                "csrf_token": csrf_token(page.data),
                "password": "correct horse",
                "code": code_at(secret),
                "next": "/security/email",
            },
        )
        assert ok.location == "/security/email"
        assert PROTECTED in client.get("/security/email").get_data(as_text=True)


# -- rate limits across processes ------------------------------------------------------------


def client_at(app: Flask, address: str) -> Any:
    """A test client whose requests come from ``address``."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _two_sites(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, bool]:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.sqlite'}", True
    if kind == "mariadb":
        return str(request.getfixturevalue("mariadb_server_url")), True
    return str(request.getfixturevalue("pg_server_url")), True


def _wrong(client: Any, secret: str) -> Any:
    page = client.get(VERIFY)
    wrong = f"{(int(code_at(secret)) + 1) % 1_000_000:06d}"
    return client.post(VERIFY, data={"csrf_token": csrf_token(page.data), "code": wrong})


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_lockout_is_shared_by_two_app_instances(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url, _ = _two_sites(kind, tmp_path, request)
    config = site_config(url, tmp_path)
    start = datetime(2025, 7, 1, 10, 0, 1, tzinfo=timezone.utc)
    with running_site(config) as first, running_site(config, create=False) as second:
        _, secret, _ = add_site_user(first)
        a = client_at(first, "192.0.2.1")
        b = client_at(second, "192.0.2.2")
        with freeze_time(start):
            site_login_as(a)
            site_login_as(b)
            for client in (a, b, a, b):
                assert _wrong(client, secret).status_code == 400
            last = _wrong(a, secret)
            assert last.status_code == 400
            assert "last attempt" in last.get_data(as_text=True)
            # The right code is refused too, on either instance, with a clear message.
            for client in (b, a):
                page = client.get(VERIFY)
                locked = client.post(
                    VERIFY, data={"csrf_token": csrf_token(page.data), "code": code_at(secret)}
                )
                assert locked.status_code == 429
                assert "Too many wrong attempts" in locked.get_data(as_text=True)
        with first.app_context():
            Event = site_guard.models.Event
            kinds = [e.kind for e in site_db.session.scalars(sa.select(Event).order_by(Event.id))]
            assert kinds.count(EventKind.TWOFACTOR_FAILED.value) == 5
            assert kinds.count(EventKind.TWOFACTOR_LOCKED_OUT.value) == 1
        with freeze_time(start + timedelta(minutes=5)):
            assert pass_second_factor(b, secret).location == "/"
            assert PROTECTED in b.get("/account").get_data(as_text=True)


def test_one_client_address_is_limited_across_accounts(site: Flask) -> None:
    secrets = [add_site_user(site, f"u{i}@example.com")[1] for i in range(3)]
    start = datetime(2025, 7, 2, 10, 0, 1, tzinfo=timezone.utc)
    with freeze_time(start):
        clients = [client_at(site, "198.51.100.7") for _ in range(3)]
        for i, client in enumerate(clients):
            site_login_as(client, f"u{i}@example.com")
        for client, secret in [(clients[0], secrets[0])] * 3 + [(clients[1], secrets[1])] * 2:
            assert _wrong(client, secret).status_code == 400
        page = clients[2].get(VERIFY)
        locked = clients[2].post(
            VERIFY, data={"csrf_token": csrf_token(page.data), "code": code_at(secrets[2])}
        )
        assert locked.status_code == 429
        # Another address is not affected.
        other = client_at(site, "198.51.100.8")
        site_login_as(other, "u2@example.com")
        assert pass_second_factor(other, secrets[2]).location == "/"


def test_an_app_mounted_under_a_prefix_comes_back_under_it(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    base = "http://localhost/shop"
    client.post(
        "/login", data={"email": "ada@example.com", "password": "correct horse"}, base_url=base
    )
    gated = client.get("/items/4", base_url=base)
    assert gated.location == "/shop/domainguard/2fa/verify?next=/shop/items/4"
    page = client.get("/domainguard/2fa/verify", base_url=base)
    done = client.post(
        "/domainguard/2fa/verify",
        data={
            "csrf_token": csrf_token(page.data),
            "code": code_at(secret),
            "next": "/shop/items/4",
        },
        base_url=base,
    )
    assert done.location == "/shop/items/4"


def test_pending_session_opens_a_verification_link_but_cannot_reverify(site: Flask) -> None:
    from flask_domainguard.addresses.verification import verification_token
    from flask_domainguard.models import UnverifyReason

    user_id, _secret, _ = add_site_user(site)
    with site.app_context():
        fresh = site_guard.add_address(user_id, "new@example.org")
        lapsed = site_guard.add_address(user_id, "old@example.net", verified=True)
        lapsed.verified_at = None
        lapsed.unverify_reason = UnverifyReason.DOMAIN_RELEASED
        site_db.session.commit()
        fresh_link = f"/domainguard/verify/{verification_token(fresh)}"
        lapsed_link = f"/domainguard/verify/{verification_token(lapsed)}"
    client = site.test_client()
    site_login_as(client)
    assert client.get("/account").status_code == 302, "the session waits for its code"

    page = client.get(fresh_link)
    assert page.status_code == 200, "the link opens without the code"
    assert client.post(fresh_link, data={"csrf_token": csrf_token(page.data)}).status_code == 200

    page = client.get(lapsed_link)
    refused = client.post(lapsed_link, data={"csrf_token": csrf_token(page.data)})
    assert refused.status_code == 409, "re-verifying a domain-unverified address needs the code"
    with site.app_context():
        assert site_guard.find_address("new@example.org").verified
        assert not site_guard.find_address("old@example.net").verified
