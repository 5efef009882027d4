"""The 2FA pages: enrolment with its QR code, recovery codes shown once, the settings page,
and security changes behind password + fresh 2FA."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from freezegun import freeze_time

from flask_domainguard.journal import EventKind
from flask_domainguard.twofactor import verify
from tests.conftest import SMTPSink, use_smtp
from tests.twofactor_helpers import (
    PROTECTED,
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

BASE = "/domainguard/2fa"


@pytest.fixture
def site(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Flask]:
    extra: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("settings"))):
        extra.update(marker.kwargs)
    with running_site(site_config(database_url, tmp_path, **extra)) as app:
        yield app


def kinds(app: Flask) -> list[str]:
    with app.app_context():
        Event = site_guard.models.Event
        return list(site_db.session.scalars(sa.select(Event.kind).order_by(Event.id)))


def shown_secret(html: str) -> str:
    match = re.search(r'id="dg-secret"[^>]*>([A-Z2-7 ]+)</code>', html)
    assert match, "the setup key is shown as text"
    return match.group(1).replace(" ", "")


def shown_codes(html: str) -> list[str]:
    return re.findall(r'<code class="dg-code">([0-9a-z-]{19})</code>', html)


def enrol_through_pages(client: Any, *, at: datetime) -> tuple[str, list[str], Any]:
    page = client.get(f"{BASE}/enroll")
    html = page.get_data(as_text=True)
    secret = shown_secret(html)
    with freeze_time(at):
        done = client.post(
            f"{BASE}/enroll", data={"csrf_token": csrf_token(html), "code": code_at(secret)}
        )
    return secret, shown_codes(done.get_data(as_text=True)), done


@pytest.mark.settings(DOMAINGUARD_2FA_REQUIRED_SINCE=date(2024, 1, 1))
def test_enrolment_end_to_end(site: Flask) -> None:
    add_site_user(site, with_2fa=False)
    client = site.test_client()
    site_login_as(client)
    assert client.get("/account").location == f"{BASE}/enroll?next=/account"
    page = client.get(f"{BASE}/enroll?next=/account")
    html = page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    assert "<svg" in html and "QR code for twofactor_site" in html, "inline SVG QR code"
    assert "needs two-factor authentication" in html
    assert "Not now" not in html, "no way around it once required"
    secret = shown_secret(html)
    assert len(secret) == 32
    # A wrong first code leaves 2FA off.
    wrong = client.post(
        f"{BASE}/enroll",
        data={"csrf_token": csrf_token(html), "code": "123456", "next": "/account"},
    )
    assert wrong.status_code == 400 and "not right" in wrong.get_data(as_text=True)
    assert client.get("/account").location.startswith(f"{BASE}/enroll")
    # Without a CSRF token nothing happens either.
    forged = client.post(f"{BASE}/enroll", data={"code": code_at(secret)})
    assert forged.status_code == 400
    done = client.post(
        f"{BASE}/enroll",
        data={"csrf_token": csrf_token(html), "code": code_at(secret), "next": "/account"},
    )
    body = done.get_data(as_text=True)
    assert done.status_code == 200 and done.headers["Cache-Control"] == "no-store"
    codes = shown_codes(body)
    assert len(codes) == 10 and "shown only this" in body
    assert 'href="/account"' in body
    assert PROTECTED in client.get("/account").get_data(as_text=True)
    # Shown once: the page never shows them again.
    again = client.get(f"{BASE}/enroll")
    assert again.location == f"{BASE}/"
    assert not shown_codes(client.get(f"{BASE}/").get_data(as_text=True))
    assert EventKind.TWOFACTOR_ENROLLED.value in kinds(site)
    # Next login needs the code from the new authenticator.
    client.get("/logout")
    site_login_as(client)
    assert client.get("/account").location.startswith(f"{BASE}/verify")
    with freeze_time(datetime.now(timezone.utc) + timedelta(seconds=30)):
        assert pass_second_factor(client, secret).status_code == 302
        assert PROTECTED in client.get("/account").get_data(as_text=True)


@pytest.mark.settings(DOMAINGUARD_2FA_REQUIRED_SINCE=date(2024, 1, 1), DOMAINGUARD_2FA_GRACE_DAYS=7)
def test_enrolment_page_offers_not_now_during_grace(site: Flask) -> None:
    add_site_user(site, with_2fa=False)
    client = site.test_client()
    site_login_as(client)
    assert PROTECTED in client.get("/account").get_data(as_text=True)
    html = client.get(f"{BASE}/enroll?next=/account").get_data(as_text=True)
    assert "will be required for your account from" in html
    assert '<a href="/account">Not now</a>' in html


def test_pending_session_cannot_replace_the_authenticator(site: Flask) -> None:
    add_site_user(site)
    client = site.test_client()
    site_login_as(client)
    response = client.get(f"{BASE}/enroll")
    assert response.location.startswith(f"{BASE}/verify")
    assert "otpauth" not in response.get_data(as_text=True)
    assert client.post(f"{BASE}/enroll", data={"code": "123456"}).location.startswith(
        f"{BASE}/verify"
    )


def test_verify_page_is_labelled_and_has_a_logout_button(site: Flask) -> None:
    add_site_user(site)
    client = site.test_client()
    site_login_as(client)
    html = client.get(f"{BASE}/verify").get_data(as_text=True)
    assert '<label for="code">Authentication code</label>' in html
    assert 'autocomplete="one-time-code"' in html
    assert '<a href="/logout">Log out</a>' in html
    wrong = client.post(f"{BASE}/verify", data={"csrf_token": csrf_token(html), "code": "1"})
    wrong_html = wrong.get_data(as_text=True)
    assert wrong.status_code == 400
    assert 'aria-invalid="true"' in wrong_html and 'aria-describedby="code-errors"' in wrong_html


def test_recovery_code_page_and_its_notice(
    database_url: str, tmp_path: Path, smtp_sink: SMTPSink
) -> None:
    config = site_config(database_url, tmp_path)
    use_smtp(config, smtp_sink)
    with running_site(config) as site:
        _, _, codes = add_site_user(site)
        client = site.test_client()
        site_login_as(client)
        page = client.get(f"{BASE}/recovery?next=/items/2")
        html = page.get_data(as_text=True)
        assert '<label for="code">Recovery code</label>' in html
        bad = client.post(
            f"{BASE}/recovery", data={"csrf_token": csrf_token(html), "code": "0000-0000-0000-0000"}
        )
        assert bad.status_code == 400 and "already used" in bad.get_data(as_text=True)
        ok = client.post(
            f"{BASE}/recovery",
            data={"csrf_token": csrf_token(html), "code": codes[0], "next": "/items/2"},
        )
        assert ok.location == "/items/2"
        assert PROTECTED in client.get("/items/2").get_data(as_text=True)
        assert smtp_sink.recipients() == ["ada@example.com"]
        assert "recovery code was used" in smtp_sink.messages[0]["Subject"]
        # The code is spent: the same code fails on the next login.
        client.get("/logout")
        site_login_as(client)
        page = client.get(f"{BASE}/recovery")
        reuse = client.post(
            f"{BASE}/recovery", data={"csrf_token": csrf_token(page.data), "code": codes[0]}
        )
        assert reuse.status_code == 400


def _confirm(client: Any, secret: str | None, *, password: str = "correct horse") -> Any:
    page = client.get(f"{BASE}/confirm")
    data = {"csrf_token": csrf_token(page.data), "password": password}
    if secret is not None:
        data["code"] = code_at(secret)
    return client.post(f"{BASE}/confirm", data=data)


def test_regenerating_codes_needs_a_fresh_confirmation_and_kills_the_old_set(site: Flask) -> None:
    _, secret, old_codes = add_site_user(site)
    client = site.test_client()
    start = datetime(2025, 8, 1, 9, 0, tzinfo=timezone.utc)
    with freeze_time(start):
        site_login_as(client)
        pass_second_factor(client, secret)
    with freeze_time(start + timedelta(minutes=20)):
        gated = client.get(f"{BASE}/recovery-codes")
        assert gated.location == f"{BASE}/confirm?next={BASE}/recovery-codes"
        post = client.post(f"{BASE}/recovery-codes", data={})
        assert post.location.startswith(f"{BASE}/confirm"), "a POST is refused the same way"
        assert _confirm(client, secret, password="wrong").status_code == 400
        assert _confirm(client, secret).status_code == 302
        page = client.get(f"{BASE}/recovery-codes")
        assert page.status_code == 200
        done = client.post(f"{BASE}/recovery-codes", data={"csrf_token": csrf_token(page.data)})
        new_codes = shown_codes(done.get_data(as_text=True))
    assert len(new_codes) == 10 and set(new_codes).isdisjoint(old_codes)
    assert "previous codes no longer work" in done.get_data(as_text=True)
    with site.app_context():
        assert not verify.use_recovery_code(site_guard, 1, old_codes[0], client=None).ok
        assert verify.use_recovery_code(site_guard, 1, new_codes[0], client=None).ok
    assert EventKind.RECOVERY_CODES_REGENERATED.value in kinds(site)


def test_disabling_needs_password_and_fresh_code(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    start = datetime(2025, 8, 2, 9, 0, tzinfo=timezone.utc)
    with freeze_time(start):
        site_login_as(client, remember=True)
        pass_second_factor(client, secret, trust=True)
    client.delete_cookie("session")  # a trusted device restores the session: no fresh 2FA
    with freeze_time(start + timedelta(hours=1)):
        assert PROTECTED in client.get("/account").get_data(as_text=True)
        assert client.get(f"{BASE}/disable").location.startswith(f"{BASE}/confirm")
        page = client.get(f"{BASE}/confirm")
        assert 'name="code"' in page.get_data(as_text=True)
        without_code = _confirm(client, None)
        assert without_code.status_code == 400
        assert _confirm(client, secret).status_code == 302
        page = client.get(f"{BASE}/disable")
        assert "Turn off two-factor authentication" in page.get_data(as_text=True)
        forged = client.post(f"{BASE}/disable", data={})
        assert forged.status_code == 400
        off = client.post(f"{BASE}/disable", data={"csrf_token": csrf_token(page.data)})
        assert off.location == f"{BASE}/"
    with site.app_context():
        assert not site_guard.twofactor_enabled(1)
    assert EventKind.TWOFACTOR_DISABLED.value in kinds(site)
    # The default rule requires 2FA of every active user: off means set it up again now.
    assert client.get(f"{BASE}/").location.startswith(f"{BASE}/enroll")


@pytest.mark.settings(DOMAINGUARD_2FA_REQUIRED_SINCE=None)
def test_disabled_2fa_stays_off_where_nothing_requires_it(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    site_login_as(client)
    pass_second_factor(client, secret)
    _confirm(client, None)
    page = client.get(f"{BASE}/disable")
    client.post(f"{BASE}/disable", data={"csrf_token": csrf_token(page.data)})
    assert "is <strong>off</strong>" in client.get(f"{BASE}/").get_data(as_text=True)
    assert PROTECTED in client.get("/account").get_data(as_text=True)
    client.get("/logout")
    site_login_as(client)
    assert PROTECTED in client.get("/account").get_data(as_text=True), "no code asked any more"


def test_wrong_passwords_at_the_confirmation_count_towards_the_lockout(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    with freeze_time(datetime(2025, 8, 3, 9, 0, 1, tzinfo=timezone.utc)):
        site_login_as(client)
        pass_second_factor(client, secret)
        for _ in range(5):
            assert _confirm(client, None, password="guess").status_code == 400
        locked = _confirm(client, None)
        assert locked.status_code == 429
        assert "Too many wrong attempts" in locked.get_data(as_text=True)


def test_settings_page_shows_the_state(site: Flask) -> None:
    _, secret, _ = add_site_user(site)
    client = site.test_client()
    site_login_as(client)
    assert client.get(f"{BASE}/").location.startswith(f"{BASE}/verify"), "gated while pending"
    pass_second_factor(client, secret)
    html = client.get(f"{BASE}/").get_data(as_text=True)
    assert "is <strong>on</strong>" in html and "10 unused recovery" in html


def test_anonymous_visitors_go_to_the_hosts_login(site: Flask) -> None:
    client = site.test_client()
    for path in ("verify", "recovery", "enroll", "", "confirm", "disable", "recovery-codes"):
        response = client.get(f"{BASE}/{path}")
        assert response.status_code == 302 and response.location.startswith("/login"), path
