"""Reset mail through a real SMTP server: the right messages to the right recipients, notices
to the owner's other safe addresses, and never a byte to an unsafe address."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, g, request
from flask_mail import Message

from flask_domainguard.journal import EventKind
from flask_domainguard.models import UnverifyReason
from flask_domainguard.timeutil import utcnow
from tests.conftest import SMTPSink, use_smtp
from tests.guard_helpers import (
    OK,
    RELEASED,
    add,
    csrf_of,
    events,
    link_in,
    set_domain,
    unverify,
    write_status,
)

SAFE = "main@safe-shop.com"
TRUSTED = "backup@gmail.com"
GONE = "old@gone-shop.com"  # verified, domain released
UNVERIFIED = "new@safe-shop.com"
DOMAIN_LOST = "lost@lapsed-shop.com"  # unverified by the sweep
NEVER = {GONE, UNVERIFIED, DOMAIN_LOST}


@pytest.fixture
def smtp_app(
    app_config: dict[str, Any], smtp_sink: SMTPSink, request: pytest.FixtureRequest
) -> Iterator[Flask]:
    use_smtp(app_config, smtp_sink)
    app_config.setdefault("SERVER_NAME", "accounts.host.test")
    app_config.setdefault("DOMAINGUARD_RESET_PROCESSING", "inline")
    app: Flask = request.getfixturevalue("app")
    request.getfixturevalue("fresh_request_globals")
    yield app
    # Whatever a test did, nothing went to an address that must not receive mail.
    assert not NEVER & set(smtp_sink.recipients()), smtp_sink.envelopes


@pytest.fixture
def user(smtp_app: Flask, guard: Any, make_user: Any) -> Any:
    write_status(
        smtp_app,
        {"safe-shop.com": OK, "gone-shop.com": RELEASED, "lapsed-shop.com": OK},
    )
    user = make_user(email=GONE)
    add(guard, user, SAFE, primary=True)
    add(guard, user, TRUSTED)
    add(guard, user, GONE)
    add(guard, user, UNVERIFIED, verified=False)
    lost = add(guard, user, DOMAIN_LOST)
    unverify(guard, lost, UnverifyReason.DOMAIN_EXPIRED)
    # The sweep found gone-shop.com released an hour ago (mail.notify_user trusts that state).
    set_domain(
        guard,
        "gone-shop.com",
        checked_at=utcnow() - timedelta(hours=1),
        verdict="released",
        registered=False,
        statuses=(),
    )
    return user


def body(message: Any) -> str:
    payload = message.get_payload(decode=True)
    return str(payload.decode() if isinstance(payload, bytes) else message.get_payload())


def ask(app: Flask, address: str, path: str = "/domainguard/reset") -> None:
    client = app.test_client()
    form = client.get(path)
    assert (
        client.post(path, data={"csrf_token": csrf_of(form.data), "email": address}).status_code
        == 200
    )


def test_allowed_reset_reaches_only_its_address_and_completes(
    smtp_app: Flask, guard: Any, user: Any, smtp_sink: SMTPSink
) -> None:
    guard.set_password_setter(lambda u, pw: u.set_password(pw))
    try:
        ask(smtp_app, SAFE.upper())
        assert smtp_sink.envelopes == [("security@host.test", [SAFE])]
        [message] = smtp_sink.messages
        assert message["Subject"].startswith("Reset your")
        link = link_in(body(message), "/reset/")
        client = smtp_app.test_client()
        page = client.get(link)
        done = client.post(
            link,
            data={"csrf_token": csrf_of(page.data), "password": "n" * 12, "confirm": "n" * 12},
        )
        assert done.status_code == 200
    finally:
        guard.password_setter = None
    # The password-changed notice goes to every safe address, not to the unsafe ones: one
    # mail each, the other addresses' with a "this wasn't me" link, the reset's own without.
    notices = smtp_sink.envelopes[1:]
    assert sorted(rcpt for _, (rcpt,) in notices) == sorted([SAFE, TRUSTED])
    for (_, (rcpt,)), message in zip(notices, smtp_sink.messages[1:], strict=True):
        assert "password was changed" in message["Subject"]
        assert ("/domainguard/undo/" in body(message)) == (rcpt == TRUSTED)


@pytest.mark.parametrize(
    ("address", "reason"),
    [(GONE, "domain_released"), (UNVERIFIED, "unverified"), (DOMAIN_LOST, "unverified")],
)
def test_refused_reset_tells_the_other_safe_addresses_once(
    smtp_app: Flask, guard: Any, user: Any, smtp_sink: SMTPSink, address: str, reason: str
) -> None:
    ask(smtp_app, address)
    ask(smtp_app, address)  # again: the notice is rate-limited
    assert len(smtp_sink.envelopes) == 1
    [(_, recipients)] = smtp_sink.envelopes
    assert sorted(recipients) == sorted([SAFE, TRUSTED])
    text = body(smtp_sink.messages[0])
    assert address in text and "did not send a reset" in text
    assert [e.details["reason"] for e in events(guard, EventKind.RESET_REFUSED)] == [reason] * 2
    assert [e.details["notice_recipients"] for e in events(guard, EventKind.RESET_REFUSED)] == [
        2,
        0,
    ]


def test_unknown_address_gets_nothing_and_nobody_is_told(
    smtp_app: Flask, guard: Any, user: Any, smtp_sink: SMTPSink
) -> None:
    ask(smtp_app, "stranger@safe-shop.com")
    assert smtp_sink.envelopes == []
    assert events(guard, EventKind.RESET_REFUSED) == []


@pytest.mark.settings(DOMAINGUARD_RESET_PROCESSING="background")
def test_background_processing_delivers_too(
    smtp_app: Flask, guard: Any, user: Any, smtp_sink: SMTPSink
) -> None:
    ask(smtp_app, SAFE)
    ask(smtp_app, GONE)
    assert guard.wait_for_background(timeout=10)
    recipients = [sorted(rcpts) for _, rcpts in smtp_sink.envelopes]
    assert [SAFE] in recipients
    assert sorted([SAFE, TRUSTED]) in recipients  # the refused-reset notice
    link = link_in(body(smtp_sink.messages[recipients.index([SAFE])]), "/reset/")
    assert link.startswith("/domainguard/reset/")


def test_host_view_mailing_a_stale_column_is_caught(
    smtp_app: Flask, guard: Any, user: Any, smtp_sink: SMTPSink
) -> None:
    """The host's view mails ``user.email`` (a stale, unsafe address) instead of the address
    asked for: inside the decorated view, Flask-Mail delivers to safe addresses only."""

    @smtp_app.route("/forgot", methods=["GET", "POST"])
    @guard.guarded_reset_request(field="email", template_or_response=lambda: "sent")
    def forgot() -> str:
        if request.method == "POST":
            account = g.domainguard_reset.user
            smtp_app.extensions["mail"].send(
                Message(
                    "Reset",
                    recipients=[account.email, g.domainguard_reset.address.address],
                    body="host link",
                    sender="security@host.test",
                )
            )
            return "sent"
        from flask_wtf.csrf import generate_csrf

        return f'<input name="csrf_token" type="hidden" value="{generate_csrf()}">'

    ask(smtp_app, SAFE, path="/forgot")
    assert smtp_sink.envelopes == [("security@host.test", [SAFE])]


def test_send_reset_mail_refuses_unsafe_addresses(
    smtp_app: Flask, guard: Any, user: Any, smtp_sink: SMTPSink
) -> None:
    assert guard.safe_to_mail(SAFE.upper()) and guard.safe_to_mail(TRUSTED)
    assert not any(guard.safe_to_mail(a) for a in (GONE, UNVERIFIED, DOMAIN_LOST, "x@y.org"))
    with smtp_app.test_request_context():
        assert not guard.send_reset_mail(GONE)
        assert not guard.send_reset_mail(UNVERIFIED)
        assert not guard.send_reset_mail("nobody@safe-shop.com")
        assert guard.send_reset_mail(TRUSTED)
    assert smtp_sink.recipients() == [TRUSTED]
    assert len(events(guard, EventKind.RESET_SENT)) == 1


@pytest.mark.settings(DOMAINGUARD_RESET_PROCESSING="background")
def test_request_reset_outside_a_request_is_processed_at_once(
    smtp_app: Flask, guard: Any, user: Any, smtp_sink: SMTPSink
) -> None:
    decision = guard.request_reset(SAFE, client="203.0.113.9")
    assert decision is not None and decision.allowed
    assert smtp_sink.recipients() == [SAFE]
    assert guard.request_reset(GONE).reason == "domain_released"


def test_host_context_reaches_the_template_but_cannot_replace_the_link(
    smtp_app: Flask, guard: Any, user: Any, smtp_sink: SMTPSink
) -> None:
    with smtp_app.test_request_context():
        assert guard.send_reset_mail(SAFE, app_name="Shop", link="https://evil.example/")
    text = body(smtp_sink.messages[0])
    assert "Shop account" in text
    assert "evil.example" not in text and "http://accounts.host.test/domainguard/reset/" in text


@pytest.mark.settings(SERVER_NAME=None)
def test_links_from_the_host_header_are_warned_about(
    smtp_app: Flask, guard: Any, user: Any, smtp_sink: SMTPSink, caplog: pytest.LogCaptureFixture
) -> None:
    with smtp_app.test_request_context(base_url="https://shop.test"):
        assert guard.send_reset_mail(SAFE)
        assert guard.send_reset_mail(SAFE)
    assert caplog.text.count("set DOMAINGUARD_EXTERNAL_URL or SERVER_NAME") == 1
    assert "https://shop.test/domainguard/reset/" in body(smtp_sink.messages[0])
