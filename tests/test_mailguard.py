"""The Flask-Mail safety net, against a real SMTP server: what each DOMAINGUARD_MAIL_GUARD mode
lets through, inside and outside the reset scope."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import flask_mail
import pytest
from flask import Flask
from flask_mail import Mail, Message

from flask_domainguard.mail.safetynet import (
    in_reset_scope,
    install_mail_guard,
    recipients_loaded,
)
from flask_domainguard.reset.decision import ResetDecision
from flask_domainguard.timeutil import utcnow
from tests.conftest import SMTPSink, use_smtp
from tests.guard_helpers import OK, add, set_domain, write_status

SAFE = "main@safe-shop.com"
GONE = "old@gone-shop.com"
UNVERIFIED = "new@safe-shop.com"
OUTSIDER = "someone@elsewhere.org"


@pytest.fixture
def smtp_app(
    app_config: dict[str, Any], smtp_sink: SMTPSink, request: pytest.FixtureRequest
) -> Iterator[Flask]:
    use_smtp(app_config, smtp_sink)
    app: Flask = request.getfixturevalue("app")
    guard = request.getfixturevalue("guard")
    user = request.getfixturevalue("make_user")()
    add(guard, user, SAFE, primary=True)
    add(guard, user, GONE)
    add(guard, user, UNVERIFIED, verified=False)
    set_domain(guard, "gone-shop.com", checked_at=utcnow() - timedelta(hours=1), verdict="expired")
    set_domain(guard, "safe-shop.com", checked_at=utcnow() - timedelta(hours=1))
    yield app


@pytest.fixture
def unhooked_mail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flask-Mail as in a process where no app has installed the hook yet (restored after)."""
    send = flask_mail.Connection.send
    monkeypatch.setattr(flask_mail.Connection, "send", getattr(send, "__wrapped__", send))


def send(app: Flask, **fields: Any) -> None:
    app.extensions["mail"].send(Message("Hello", sender="news@host.test", body="hi", **fields))


def test_all_mode_drops_unsafe_recipients_of_any_mail(smtp_app: Flask, smtp_sink: SMTPSink) -> None:
    send(smtp_app, recipients=[SAFE, f"Old Address <{GONE}>", OUTSIDER, UNVERIFIED])
    send(smtp_app, recipients=[("Old", GONE.upper())])  # nothing left: nothing sent
    send(smtp_app, recipients=[SAFE], cc=[GONE], bcc=[GONE])
    assert [sorted(rcpts) for _, rcpts in smtp_sink.envelopes] == [
        sorted([SAFE, OUTSIDER, UNVERIFIED]),
        [SAFE],
    ]


def test_recipients_loaded_in_one_query_are_judged_by_the_same_rule(
    smtp_app: Flask, guard: Any, smtp_sink: SMTPSink
) -> None:
    """A batch of notices loads its recipients' rows at once; the net still refuses the
    address on the unsafe domain (and the loaded rows serve only the mail in the block)."""
    everyone = [SAFE, GONE, OUTSIDER, UNVERIFIED]
    with recipients_loaded(guard, everyone):
        send(smtp_app, recipients=everyone)
    send(smtp_app, recipients=[GONE])
    assert [sorted(rcpts) for _, rcpts in smtp_sink.envelopes] == [
        sorted([SAFE, OUTSIDER, UNVERIFIED])
    ]


def test_reset_scope_lets_only_safe_verified_addresses_through(
    smtp_app: Flask, guard: Any, smtp_sink: SMTPSink
) -> None:
    assert not in_reset_scope()
    with guard.reset_mail_scope():
        assert in_reset_scope()
        send(smtp_app, recipients=[SAFE, GONE, OUTSIDER, UNVERIFIED, "not an address"])
    assert not in_reset_scope()
    assert smtp_sink.envelopes == [("news@host.test", [SAFE])]


def test_reset_scope_needs_evidence_or_the_decision(
    smtp_app: Flask, guard: Any, make_user: Any, smtp_sink: SMTPSink
) -> None:
    """A host flow that skips the decision cannot mail a reset to a domain nobody checked
    lately; the decision it was opened with vouches for its own address only."""
    user = make_user()
    stale = add(guard, user, "me@stale-shop.com")
    set_domain(guard, "stale-shop.com", checked_at=utcnow() - timedelta(days=3))
    with guard.reset_mail_scope():
        send(smtp_app, recipients=[stale.address])
    assert smtp_sink.envelopes == []

    decision = ResetDecision(True, "allowed", user, stale)
    with guard.reset_mail_scope(decision):
        send(smtp_app, recipients=[stale.address, SAFE])
        send(smtp_app, recipients=[GONE])
    assert [sorted(rcpts) for _, rcpts in smtp_sink.envelopes] == [sorted([stale.address, SAFE])]


def test_unparseable_recipients_are_refused_and_logged(
    smtp_app: Flask, smtp_sink: SMTPSink, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack case 6: a quoted local part the parser refuses, on a released domain, must not
    slip through the net because it cannot be looked up."""
    send(smtp_app, recipients=['"erin"@released.example', SAFE])
    assert smtp_sink.envelopes == [("news@host.test", [SAFE])]
    assert "not a valid address" in caplog.text
    assert "erin" not in caplog.text, "no address text in the log"


@pytest.mark.settings(DOMAINGUARD_MAIL_GUARD="reset")
def test_reset_mode_leaves_other_mail_alone(
    smtp_app: Flask, guard: Any, smtp_sink: SMTPSink
) -> None:
    send(smtp_app, recipients=[GONE])
    with guard.reset_mail_scope():
        send(smtp_app, recipients=[GONE, SAFE])
    assert smtp_sink.envelopes == [("news@host.test", [GONE]), ("news@host.test", [SAFE])]


@pytest.mark.settings(DOMAINGUARD_MAIL_GUARD="off")
def test_off_mode_delivers_everything(smtp_app: Flask, guard: Any, smtp_sink: SMTPSink) -> None:
    with guard.reset_mail_scope():
        send(smtp_app, recipients=[GONE])
    assert smtp_sink.recipients() == [GONE]


def test_an_app_with_the_guard_on_installs_the_hook(
    unhooked_mail: None, smtp_app: Flask, smtp_sink: SMTPSink
) -> None:
    assert getattr(flask_mail.Connection.send, "_domainguard", False)
    send(smtp_app, recipients=[GONE, SAFE])
    assert smtp_sink.recipients() == [SAFE]


@pytest.mark.settings(
    DOMAINGUARD_MAIL_GUARD="off",
    DOMAINGUARD_EXTERNAL_URL="https://shop.example",
    DOMAINGUARD_RESET_PROCESSING="inline",
)
def test_off_mode_installs_no_hook_and_domainguards_own_mail_stays_guarded(
    unhooked_mail: None, smtp_app: Flask, guard: Any, smtp_sink: SMTPSink
) -> None:
    """With the net off, Flask-Mail is left as it is; DomainGuard's own mail still applies
    the recipient rule itself: no reset to an unsafe or unverified address, and the refusal
    notice goes to the safe address only."""
    assert not getattr(flask_mail.Connection.send, "_domainguard", False)
    send(smtp_app, recipients=[GONE])  # the host's own mail: nothing in the way, as asked
    write_status(smtp_app, {"safe-shop.com": OK, "gone-shop.com": {"registered": False}})
    with smtp_app.test_request_context():
        assert not guard.send_reset_mail(GONE)
        assert not guard.send_reset_mail(UNVERIFIED)
        assert guard.send_reset_mail(SAFE)
    decision = guard.request_reset(GONE)
    assert decision is not None and decision.reason == "domain_released"
    assert [rcpts for _, rcpts in smtp_sink.envelopes] == [[GONE], [SAFE], [SAFE]]
    assert "did not send a reset" in smtp_sink.messages[2].get_payload()


def test_apps_without_domainguard_are_untouched(smtp_sink: SMTPSink) -> None:
    install_mail_guard()
    install_mail_guard()  # idempotent: one wrapper, not two
    plain = Flask("plain")
    use_smtp(plain.config, smtp_sink)
    plain.config["MAIL_DEFAULT_SENDER"] = "x@plain.test"
    mail = Mail(plain)
    with plain.app_context():
        mail.send(Message("Hi", recipients=[GONE], body="hi"))
    assert smtp_sink.recipients() == [GONE]


def test_the_wrapper_is_installed_once() -> None:
    install_mail_guard()
    send_method = flask_mail.Connection.send
    install_mail_guard()
    assert flask_mail.Connection.send is send_method
    assert getattr(send_method, "_domainguard", False)
    assert not getattr(send_method.__wrapped__, "_domainguard", False)
