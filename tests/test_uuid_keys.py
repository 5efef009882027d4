"""A host whose users have native UUID keys (``sa.Uuid``), end to end, beside an integer-keyed
one: verification, a reset, a sweep's expiry warnings and unverify notices, 2FA enrolment.

User keys travel through job payloads as JSON (text for a UUID) and come back to queries
such as ``user_id IN (...)``; a text key does not bind to a ``Uuid`` column on SQLite. Every
mail goes through a real SMTP server and every lookup to a real RDAP server on 127.0.0.1;
each test asserts the exact recipients of every message, so nothing reaches anyone else.
Runs on SQLite and, with ``--db postgresql``, on PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, g, request_started
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_domainguard import DomainGuard
from flask_domainguard.background import stop_workers
from flask_domainguard.journal import EventKind
from flask_domainguard.models import UnverifyReason
from flask_domainguard.sweep import Sweep
from flask_domainguard.timeutil import utcnow
from flask_domainguard.twofactor import devices, verify
from flask_domainguard.twofactor.attempts import Outcome
from flask_domainguard.users import user_key
from tests.conftest import SMTPSink, use_smtp
from tests.guard_helpers import csrf_of, link_in
from tests.rdap_support import RdapServer, domain_doc
from tests.twofactor_helpers import code_at

SAFE, EXPIRING, GONE = "safe-shop.com", "expiring-shop.com", "gone-shop.com"


class UuidBase(DeclarativeBase):
    pass


class IntBase(DeclarativeBase):
    pass


uuid_db = SQLAlchemy(model_class=UuidBase)
int_db = SQLAlchemy(model_class=IntBase)


class NativeUuidUser(UserMixin, uuid_db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "native_uuid_users"
    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(50))


class IntUser(UserMixin, int_db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "int_key_users"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))


@dataclass
class Host:
    """One host app: its ``db``, user model, guard, and the servers it talks to."""

    app: Flask
    db: SQLAlchemy
    user_model: type[Any]
    guard: DomainGuard[Any]
    smtp: SMTPSink
    rdap: RdapServer

    def user(self, name: str) -> Any:
        user = self.user_model(name=name)
        self.db.session.add(user)
        self.db.session.commit()
        return user

    def token_in(self, index: int, path: str) -> str:
        """The token at the end of the ``path`` link in message ``index``."""
        payload = self.smtp.messages[index].get_payload(decode=True)
        assert isinstance(payload, bytes)
        return link_in(payload.decode(), path).rsplit("/", 1)[-1]

    def mails(self) -> list[tuple[str, list[str]]]:
        """Every message the SMTP server received: (subject, sorted recipients)."""
        return [
            (" ".join(str(message["Subject"]).split()), sorted(rcpts))
            for message, (_, rcpts) in zip(self.smtp.messages, self.smtp.envelopes, strict=True)
        ]


HOSTS = {"native-uuid": (uuid_db, NativeUuidUser), "integer": (int_db, IntUser)}
GUARDS = {key: DomainGuard(db=db, user_model=model) for key, (db, model) in HOSTS.items()}


@pytest.fixture(params=sorted(HOSTS))
def host(
    request: pytest.FixtureRequest,
    database_url: str,
    tmp_path: Path,
    smtp_sink: SMTPSink,
    rdap_registry: RdapServer,
) -> Iterator[Host]:
    db, model = HOSTS[request.param]
    guard = GUARDS[request.param]
    app = Flask("keyhost")
    app.instance_path = str(tmp_path / "instance")
    app.config.update(
        SECRET_KEY="test-secret-key-not-for-production",
        SQLALCHEMY_DATABASE_URI=database_url,
        MAIL_DEFAULT_SENDER="security@host.test",
        SERVER_NAME="accounts.host.test",
        TESTING=True,
        DOMAINGUARD_RESET_PROCESSING="inline",
        **rdap_registry.config("com"),
    )
    use_smtp(app.config, smtp_sink)
    login = LoginManager(app)
    login.user_loader(lambda text: db.session.get(model, user_key(guard, text)))
    db.init_app(app)
    guard.init_app(app)
    rdap_registry.docs[SAFE] = domain_doc(
        SAFE, ("registration", "2001-01-01T00:00:00Z"), ("expiration", "2031-01-01T00:00:00Z")
    )
    # Each test-client request gets an empty ``g``, as in production (the test holds one app
    # context open, which Flask would otherwise reuse for every request).
    request_started.connect(lambda sender, **extra: g.__dict__.clear(), app, weak=False)
    with app.app_context():
        db.create_all()
        try:
            yield Host(app, db, model, guard, smtp_sink, rdap_registry)
        finally:
            stop_workers(app)
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


def rewind(host: Host, hours: float) -> None:
    """Pretend ``hours`` passed for the sweep: stored moments move back, every domain is due."""
    Domain = host.guard.models.Domain
    for row in host.db.session.scalars(sa.select(Domain)):
        for attr in ("unsafe_since", "checked_at", "lapse_seen_at", "changed_hands_at"):
            if getattr(row, attr) is not None:
                setattr(row, attr, getattr(row, attr) - timedelta(hours=hours))
        row.next_check_at = utcnow()
    host.db.session.commit()


def test_add_verify_and_a_reset_to_the_verified_address(host: Host) -> None:
    guard = host.guard
    alice = host.user("alice")
    guard.add_address(alice, f"alice@{SAFE}")
    guard.send_verification(f"alice@{SAFE}")
    [(subject, rcpts)] = host.mails()
    assert subject.startswith("Verify your email address") and rcpts == [f"alice@{SAFE}"]
    guard.confirm_verification(host.token_in(0, "/verify/"), user=alice)
    [row] = guard.addresses_of(alice)
    assert row.verified and row.user_id == alice.id and type(row.user_id) is type(alice.id)

    client = host.app.test_client()
    form = client.get("/domainguard/reset")
    sent = client.post(
        "/domainguard/reset", data={"csrf_token": csrf_of(form.data), "email": f"ALICE@{SAFE}"}
    )
    assert sent.status_code == 200
    assert host.mails()[1:] == [("Reset your keyhost password", [f"alice@{SAFE}"])]
    assert host.rdap.hits[f"/rdap/domain/{SAFE}"] >= 1, "the reset looked the domain up"
    assert guard.read_reset_token(host.token_in(1, "/reset/")).user.id == alice.id


def test_a_sweep_warns_and_unverifies_with_batched_mail(
    host: Host, caplog: pytest.LogCaptureFixture
) -> None:
    """Two users on an expiring domain and on a released one: the warnings and the notices go
    out as claim batches (one recipient query for several users' keys)."""
    guard = host.guard
    soon = (utcnow() + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    host.rdap.docs[EXPIRING] = domain_doc(
        EXPIRING, ("registration", "2001-01-01T00:00:00Z"), ("expiration", soon)
    )  # GONE has no document: the registry answers 404, released
    users = {name: host.user(name) for name in ("alice", "bob")}
    for name, user in users.items():
        guard.add_address(user, f"{name}@{SAFE}", verified=True, primary=True)
        guard.add_address(user, f"{name}@{EXPIRING}", verified=True)
        guard.add_address(user, f"{name}@{GONE}", verified=True)
        guard.add_address(user, f"{name}@other-{SAFE}", verified=False)
    carol = host.user("carol")  # an unrelated user: nothing for her
    guard.add_address(carol, f"carol@{SAFE}", verified=True)

    caplog.set_level(logging.WARNING, logger="flask_domainguard")
    first = Sweep(guard, retry_base=0.01).run()
    assert first.warnings_sent == 2
    # Not to the address on the released domain: the first sighting already makes it unsafe.
    warned = {name: sorted([f"{name}@{SAFE}", f"{name}@{EXPIRING}"]) for name in users}
    assert sorted(host.mails()) == sorted(
        (f"The domain {EXPIRING} of your keyhost login address expires soon", warned[name])
        for name in users
    )
    rewind(host, 7)
    second = Sweep(guard, retry_base=0.01).run()
    assert second.unverified == 2 and second.notices_sent == 2
    notices = host.mails()[2:]
    assert sorted(notices) == sorted(
        (
            "An address on your keyhost account can no longer receive password resets",
            sorted([f"{name}@{SAFE}", f"{name}@{EXPIRING}"]),
        )
        for name in users
    )
    assert not [r for r in caplog.records if "failed" in r.getMessage()], caplog.text
    EmailAddress, Event = guard.models.EmailAddress, guard.models.Event
    host.db.session.expire_all()
    for name, user in users.items():
        row = guard.find_address(f"{name}@{GONE}")
        assert row is not None and row.unverify_reason is UnverifyReason.DOMAIN_RELEASED
        assert row.user_id == user.id
    attempts = host.db.session.scalars(
        sa.select(Event.user_id).where(Event.kind == EventKind.MAIL_ATTEMPT.value)
    ).all()
    assert sorted(map(str, attempts)) == sorted([str(u.id) for u in users.values()] * 2)
    assert (
        host.db.session.scalar(
            sa.select(sa.func.count())
            .select_from(guard.models.Job)
            .where(guard.models.Job.state != "done")
        )
        == 0
    )
    assert (
        host.db.session.scalar(sa.select(sa.func.count()).where(EmailAddress.verified_at.is_(None)))
        == 4
    )


def test_twofactor_enrolment_tells_the_safe_addresses(host: Host) -> None:
    guard = host.guard
    alice = host.user("alice")
    guard.add_address(alice, f"alice@{SAFE}", verified=True, primary=True)
    guard.add_address(alice, f"alice@other-{SAFE}", verified=False)
    enrolment = devices.start_enrolment(guard, alice)
    result = verify.confirm_enrolment(guard, alice, code_at(enrolment.secret), client=None)
    assert result.outcome is Outcome.OK and len(result.recovery_codes) >= 8
    assert guard.twofactor_enabled(alice)
    assert host.mails() == [
        ("Two-factor authentication is on for your keyhost account", [f"alice@{SAFE}"])
    ]
    used = verify.use_recovery_code(guard, alice, result.recovery_codes[0], client=None)
    assert used.outcome is Outcome.OK


def test_keys_read_back_from_json_take_the_key_columns_type(host: Host) -> None:
    user = host.user("alice")
    text = str(user.id)  # what a job's payload holds after the JSON round trip
    assert user_key(host.guard, text) == user.id
    assert type(user_key(host.guard, text)) is type(user.id)
    assert user_key(host.guard, user.id) is user.id
    assert user_key(host.guard, None) is None
    assert host.guard.get_user(user_key(host.guard, text)) is user
    with pytest.raises(ValueError, match=r"user key|badly formed|invalid literal"):
        user_key(host.guard, "not-a-key")


def test_the_command_line_finds_a_user_by_key(host: Host) -> None:
    guard = host.guard
    alice = host.user("alice")
    guard.add_address(alice, f"alice@{SAFE}", verified=True, primary=True)
    enrolment = devices.start_enrolment(guard, alice)
    verify.confirm_enrolment(guard, alice, code_at(enrolment.secret), client=None)
    runner = host.app.test_cli_runner()
    reset = ["domainguard", "2fa-reset", "--reason", "ticket 1", "--json"]
    result = runner.invoke(args=[*reset, str(alice.id)])
    assert result.exit_code == 0, result.output
    assert str(json.loads(result.output)["user_id"]) == str(alice.id)
    assert not guard.twofactor_enabled(alice)
    assert host.mails()[-1] == (
        "Two-factor authentication was reset on your keyhost account",
        [f"alice@{SAFE}"],
    )
    assert runner.invoke(args=[*reset, "not-a-key"]).exit_code == 1
