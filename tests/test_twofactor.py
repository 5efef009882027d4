"""TOTP, secrets at rest, recovery codes, the enrolment rule, the admin reset (twofactor/)."""

from __future__ import annotations

import base64
import json
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from flask import Flask
from freezegun import freeze_time

from flask_domainguard import ConfigError, signals
from flask_domainguard.journal import EventKind
from flask_domainguard.twofactor import crypto, devices, requirement, verify
from flask_domainguard.twofactor.attempts import Outcome
from flask_domainguard.twofactor.requirement import RequirementState
from tests import hostapp
from tests.conftest import SMTPSink, use_smtp
from tests.twofactor_helpers import RFC_SECRET, code_at, enrol

CLIENT = "203.0.113.9"


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def events(kind: EventKind) -> list[Any]:
    Event = hostapp.guard.models.Event
    return list(
        hostapp.db.session.scalars(
            sa.select(Event).where(Event.kind == kind.value).order_by(Event.id)
        )
    )


def device_of(guard: Any, user: Any) -> Any:
    TOTPDevice = guard.models.TOTPDevice
    hostapp.db.session.expire_all()
    return hostapp.db.session.scalar(sa.select(TOTPDevice).where(TOTPDevice.user_id == user.id))


# -- RFC 6238 --------------------------------------------------------------------------------

#: RFC 6238 Appendix B, SHA-1 column: (Unix time, 8-digit TOTP).
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
]


@pytest.mark.parametrize(("unix", "code"), RFC_VECTORS)
def test_rfc6238_vectors_eight_digits(unix: int, code: str) -> None:
    assert pyotp.TOTP(RFC_SECRET, digits=8).at(unix) == code
    with freeze_time(at(unix)):
        now = datetime.now(timezone.utc)
        assert crypto.matching_step(RFC_SECRET, code, now=now, digits=8) == unix // 30
        wrong = f"{(int(code) + 1) % 10**8:08d}"
        assert crypto.matching_step(RFC_SECRET, wrong, now=now, digits=8) is None


@pytest.mark.parametrize(("unix", "code"), RFC_VECTORS)
def test_rfc6238_vectors_through_the_production_verify_path(
    guard: Any, make_user: Any, unix: int, code: str
) -> None:
    # Six digits are the low six of the RFC's eight (the same HOTP value mod 10**6).
    user = make_user()
    with freeze_time(at(unix)):
        enrol(guard, user, RFC_SECRET)
        result = verify.verify_totp(guard, user, code[-6:], client=CLIENT)
        assert result.outcome is Outcome.OK
        assert device_of(guard, user).last_used_step == unix // 30
        again = verify.verify_totp(guard, user, code[-6:], client=CLIENT)
        assert again.outcome is Outcome.REPLAY


def test_window_edges_one_step_either_side_and_not_two(guard: Any, make_user: Any) -> None:
    user = make_user()
    secret, _ = enrol(guard, user)
    now = datetime(2025, 1, 10, 12, 0, 15, tzinfo=timezone.utc)
    with freeze_time(now):
        for offset in (-2, 2):
            result = verify.verify_totp(guard, user, code_at(secret, offset=offset), client=None)
            assert result.outcome is Outcome.WRONG, offset
        for offset in (-1, 0, 1):  # ascending: each accepted step is later than the last
            result = verify.verify_totp(guard, user, code_at(secret, offset=offset), client=None)
            assert result.ok, offset


def test_edge_of_a_step_in_real_seconds() -> None:
    secret = crypto.new_secret()
    start = datetime(2025, 1, 10, 12, 0, 0, tzinfo=timezone.utc)  # a step boundary
    code = code_at(secret, start)
    assert crypto.matching_step(secret, code, now=start + timedelta(seconds=59)) is not None
    assert crypto.matching_step(secret, code, now=start + timedelta(seconds=60)) is None
    assert crypto.matching_step(secret, code, now=start - timedelta(seconds=30)) is not None
    assert crypto.matching_step(secret, code, now=start - timedelta(seconds=31)) is None


def test_replay_and_older_steps_are_refused(guard: Any, make_user: Any) -> None:
    user = make_user()
    secret, _ = enrol(guard, user)
    with freeze_time(datetime(2025, 1, 10, 12, 0, 15, tzinfo=timezone.utc)):
        assert verify.verify_totp(guard, user, code_at(secret), client=None).ok
        assert verify.verify_totp(guard, user, code_at(secret), client=None).outcome is (
            Outcome.REPLAY
        )
        # A code of the step before is within the window but older than the one just used.
        older = verify.verify_totp(guard, user, code_at(secret, offset=-1), client=None)
        assert older.outcome is Outcome.REPLAY
    with freeze_time(datetime(2025, 1, 10, 12, 0, 45, tzinfo=timezone.utc)):
        assert verify.verify_totp(guard, user, code_at(secret), client=None).ok
    (failure, *_) = events(EventKind.TWOFACTOR_FAILED)
    assert failure.details == {"method": "totp", "reason": "replay", "purpose": "login"}


def test_codes_with_spaces_are_read_and_garbage_is_not() -> None:
    secret = crypto.new_secret()
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    code = code_at(secret, now)
    assert crypto.matching_step(secret, f" {code[:3]} {code[3:]} ", now=now) is not None
    for bad in (
        "",
        "12345",
        "1234567",
        "abcdef",
        "\uff11\uff12\uff13\uff14\uff15\uff16",
        code + "0",
    ):
        assert crypto.matching_step(secret, bad, now=now) is None


def test_concurrent_use_of_one_code_lets_one_request_in(
    app: Flask, guard: Any, make_user: Any, database_url: str
) -> None:
    if database_url.startswith("sqlite") and ":memory:" in database_url:
        pytest.skip("needs a database shared by threads")
    user = make_user()
    secret, _ = enrol(guard, user)
    user_id = user.id
    results: list[Outcome] = []
    barrier = threading.Barrier(4)
    frozen = datetime(2025, 2, 2, 2, 2, 2, tzinfo=timezone.utc)

    def attempt() -> None:
        with app.app_context():
            barrier.wait()
            results.append(verify.verify_totp(guard, user_id, code_at(secret), client=None).outcome)

    # freezegun patches the clock for every thread, but is entered once: it is not thread-safe.
    with freeze_time(frozen):
        threads = [threading.Thread(target=attempt) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(results, key=lambda o: o.value) == [Outcome.OK] + [Outcome.REPLAY] * 3


# -- secrets at rest -------------------------------------------------------------------------


def test_secret_is_random_160_bits_and_stored_encrypted(guard: Any, make_user: Any) -> None:
    secrets = {crypto.new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(len(s) == 32 and len(base64.b32decode(s)) == 20 for s in secrets)
    user = make_user()
    secret, _ = enrol(guard, user)
    stored = device_of(guard, user).secret_encrypted
    assert secret not in stored
    derived = crypto.derived_fernet_key("test-secret-key-not-for-production")
    assert Fernet(derived).decrypt(stored.encode()).decode() == secret


def _app_with(app_config: dict[str, Any], **config: Any) -> Flask:
    return hostapp.create_app({**app_config, **config})


def test_key_rotation_keeps_old_secrets_readable_and_reseals_them(
    app_config: dict[str, Any], make_user: Any
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    first = _app_with(app_config, DOMAINGUARD_TOTP_KEYS=[old])
    with first.app_context():
        user = make_user()
        user_id = user.id
        secret, _ = enrol(hostapp.guard, user)
        sealed_old = device_of(hostapp.guard, user).secret_encrypted
    rotated = _app_with(app_config, DOMAINGUARD_TOTP_KEYS=[new, old])
    with rotated.app_context(), freeze_time(datetime(2025, 3, 3, tzinfo=timezone.utc)):
        guard = hostapp.guard
        assert verify.verify_totp(guard, user_id, code_at(secret), client=None).ok
        sealed_new = hostapp.db.session.scalar(sa.select(guard.models.TOTPDevice.secret_encrypted))
        assert sealed_new != sealed_old
        assert Fernet(new).decrypt(sealed_new.encode()).decode() == secret
    only_new = _app_with(app_config, DOMAINGUARD_TOTP_KEYS=[new])
    with only_new.app_context(), freeze_time(datetime(2025, 3, 3, 0, 1, tzinfo=timezone.utc)):
        assert verify.verify_totp(hostapp.guard, user_id, code_at(secret), client=None).ok


def test_rotate_keys_command_reseals_every_secret(
    app_config: dict[str, Any], make_user: Any
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    first = _app_with(app_config, DOMAINGUARD_TOTP_KEYS=[old])
    with first.app_context():
        for _ in range(3):
            enrol(hostapp.guard, make_user())
    rotated = _app_with(app_config, DOMAINGUARD_TOTP_KEYS=[new, old])
    with rotated.app_context():  # the command runs in the app context it finds
        result = rotated.test_cli_runner().invoke(args=["domainguard", "2fa-rotate-keys", "--json"])
        assert result.exit_code == 0, result.output
        assert '"resealed": 3' in result.output
        again = rotated.test_cli_runner().invoke(args=["domainguard", "2fa-rotate-keys"])
        assert again.exit_code == 0 and "re-encrypted  0" in again.output
        for token in hostapp.db.session.scalars(
            sa.select(hostapp.guard.models.TOTPDevice.secret_encrypted)
        ):
            Fernet(new).decrypt(token.encode())  # opens under the new key alone


def test_changed_secret_key_makes_secrets_unreadable_but_recovery_codes_work(
    app_config: dict[str, Any], make_user: Any
) -> None:
    first = _app_with(app_config)
    with first.app_context():
        user = make_user()
        user_id = user.id
        secret, codes = enrol(hostapp.guard, user)
    moved = _app_with(app_config, SECRET_KEY="a-new-secret-key")
    with moved.app_context():
        result = verify.verify_totp(hostapp.guard, user_id, code_at(secret), client=None)
        assert result.outcome is Outcome.UNREADABLE
        assert verify.use_recovery_code(hostapp.guard, user_id, codes[0], client=None).ok


def test_bad_totp_key_is_a_config_error_at_start_up(app_config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"DOMAINGUARD_TOTP_KEYS.*Fernet\.generate_key"):
        _app_with(app_config, DOMAINGUARD_TOTP_KEYS=["not-a-fernet-key"])


# -- enrolment ------------------------------------------------------------------------------


def test_enrolment_needs_a_valid_code_before_2fa_is_on(guard: Any, make_user: Any) -> None:
    user = make_user()
    guard.add_address(user, "ada@example.com", verified=True)
    enrolment = devices.start_enrolment(guard, user)
    assert enrolment.uri.startswith("otpauth://totp/hostapp:ada%40example.com?secret=")
    assert "issuer=hostapp" in enrolment.uri
    assert enrolment.qr_svg.startswith("<svg") and "<title>" in enrolment.qr_svg
    # Scalable, never cropped: a viewBox covering the whole code, no fixed pixel size.
    head = enrolment.qr_svg[: enrolment.qr_svg.index(">")]
    assert 'viewBox="0 0 ' in head and "width=" not in head
    assert devices.start_enrolment(guard, user).secret == enrolment.secret, "reload keeps it"
    assert not guard.twofactor_enabled(user)
    with freeze_time(datetime(2025, 4, 4, tzinfo=timezone.utc)):
        wrong = verify.confirm_enrolment(guard, user, "000000", client=None)
        assert not wrong.ok and not guard.twofactor_enabled(user)
        good = verify.confirm_enrolment(guard, user, code_at(enrolment.secret), client=None)
    assert good.ok and guard.twofactor_enabled(user)
    assert len(good.recovery_codes) == 10
    (event,) = events(EventKind.TWOFACTOR_ENROLLED)
    assert event.user_id == user.id and event.details["recovery_codes"] == 10
    with pytest.raises(ValueError, match="already on"):
        devices.start_enrolment(guard, user)


@pytest.mark.settings(DOMAINGUARD_TOTP_ISSUER="Example Shop")
def test_issuer_comes_from_config(guard: Any, make_user: Any) -> None:
    enrolment = devices.start_enrolment(guard, make_user(email="x@example.org"))
    assert "issuer=Example%20Shop" in enrolment.uri


# -- recovery codes -------------------------------------------------------------------------


def test_recovery_codes_are_hashed_single_use_and_forgiving_to_type(
    guard: Any, make_user: Any
) -> None:
    user = make_user()
    _, codes = enrol(guard, user)
    assert len(codes) == 10 and len(set(codes)) == 10
    stored = set(hostapp.db.session.scalars(sa.select(guard.models.RecoveryCode.code_hash)))
    assert not any(code.replace("-", "") in digest for code in codes for digest in stored)
    typed = codes[3].upper().replace("-", " ").replace("0", "O")
    first = verify.use_recovery_code(guard, user, typed, client=None)
    assert first.ok and first.remaining_recovery_codes == 9
    again = verify.use_recovery_code(guard, user, codes[3], client=None)
    assert again.outcome is Outcome.WRONG
    assert devices.remaining_recovery_codes(guard, user) == 9
    (used,) = events(EventKind.RECOVERY_CODE_USED)
    assert used.details == {"remaining": 9}


def test_a_code_of_another_user_does_not_work(guard: Any, make_user: Any) -> None:
    alice, bob = make_user(), make_user()
    _, alice_codes = enrol(guard, alice)
    enrol(guard, bob)
    assert verify.use_recovery_code(guard, bob, alice_codes[0], client=None).outcome is (
        Outcome.WRONG
    )


def test_one_recovery_code_used_concurrently_wins_once(
    app: Flask, guard: Any, make_user: Any
) -> None:
    user = make_user()
    _, codes = enrol(guard, user)
    user_id = user.id
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def attempt(client: str) -> None:
        with app.app_context():
            barrier.wait()
            results.append(verify.use_recovery_code(guard, user_id, codes[0], client=client).ok)

    threads = [threading.Thread(target=attempt, args=(f"192.0.2.{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]
    # End this thread's read transaction: under REPEATABLE READ (MySQL/MariaDB's default) it
    # still sees the snapshot taken before the other threads committed.
    hostapp.db.session.rollback()
    assert len(events(EventKind.RECOVERY_CODE_USED)) == 1


def test_regenerating_invalidates_the_old_set(guard: Any, make_user: Any) -> None:
    user = make_user()
    _, old = enrol(guard, user)
    new = devices.regenerate_recovery_codes(guard, user)
    assert set(new).isdisjoint(old)
    assert not verify.use_recovery_code(guard, user, old[0], client=None).ok
    assert verify.use_recovery_code(guard, user, new[0], client=None).ok
    assert len(events(EventKind.RECOVERY_CODES_REGENERATED)) == 1


@pytest.mark.settings(DOMAINGUARD_RECOVERY_CODES=4)
def test_number_of_recovery_codes_is_config(guard: Any, make_user: Any) -> None:
    _, codes = enrol(guard, make_user())
    assert len(codes) == 4


@pytest.fixture
def smtp_app(
    app_config: dict[str, Any], smtp_sink: SMTPSink, request: pytest.FixtureRequest
) -> Any:
    use_smtp(app_config, smtp_sink)
    return request.getfixturevalue("app")


def test_using_a_recovery_code_mails_the_safe_verified_addresses(
    smtp_app: Flask, smtp_sink: SMTPSink, guard: Any, make_user: Any, tmp_path: Path
) -> None:
    (tmp_path / "status.json").write_text('{"gone.example": {"registered": false}}')
    user = make_user()
    guard.add_address(user, "main@example.com", verified=True)
    guard.add_address(user, "second@example.org", verified=True)
    guard.add_address(user, "unverified@example.net")
    lapsed = guard.add_address(user, "old@gone.example", verified=True)
    domain = hostapp.db.session.get(guard.models.Domain, lapsed.registrable)
    domain.verdict = "released"
    hostapp.db.session.commit()
    _, codes = enrol(guard, user)
    assert verify.use_recovery_code(guard, user, codes[0], client=None).ok
    assert sorted(smtp_sink.recipients()) == ["main@example.com", "second@example.org"]
    (message,) = smtp_sink.messages
    assert "recovery code was used" in message["Subject"]
    body = message.get_payload(decode=True).decode()
    assert "9 unused recovery codes left" in body
    assert codes[0] not in body and codes[1] not in body


# -- rate limits ------------------------------------------------------------------------------


def test_failures_lock_out_with_a_journal_row_and_a_signal(guard: Any, make_user: Any) -> None:
    user = make_user()
    secret, _ = enrol(guard, user)
    locked_out: list[dict[str, Any]] = []
    start = datetime(2025, 5, 5, 5, 0, 1, tzinfo=timezone.utc)
    receiver = signals.twofactor_locked_out.connected_to(lambda app, **kw: locked_out.append(kw))
    with receiver, freeze_time(start):
        for i in range(5):
            result = verify.verify_totp(guard, user, "000000", client=CLIENT)
            assert result.outcome is Outcome.WRONG
            assert (result.retry_after is not None) == (i == 4)
        blocked = verify.verify_totp(guard, user, code_at(secret), client=CLIENT)
        assert blocked.outcome is Outcome.LOCKED
        assert blocked.retry_after == timedelta(minutes=5)
        assert verify.use_recovery_code(guard, user, "x", client="198.51.100.1").outcome is (
            Outcome.LOCKED
        ), "the user's own budget is spent whatever the address"
    # The client (five failures) and the user (five attempts) are each locked out once.
    lockout = {"level": 1, "lockout_seconds": 300, "window_seconds": 300}
    assert locked_out == [
        {"user_id": user.id, "address": None, "scope": "client", **lockout},
        {"user_id": user.id, "address": None, "scope": "user", **lockout},
    ]
    with freeze_time(start + timedelta(minutes=5)):
        assert verify.verify_totp(guard, user, code_at(secret), client=CLIENT).ok


def test_a_success_gives_the_user_budget_back(guard: Any, make_user: Any) -> None:
    user = make_user()
    secret, _ = enrol(guard, user)
    with freeze_time(datetime(2025, 5, 6, 5, 0, 1, tzinfo=timezone.utc)):
        for _ in range(4):
            verify.verify_totp(guard, user, "000000", client=None)
        assert verify.verify_totp(guard, user, code_at(secret), client=None).ok
        for _ in range(4):
            assert verify.verify_totp(guard, user, "000000", client=None).outcome is (Outcome.WRONG)


# -- passwords ------------------------------------------------------------------------------


def test_password_check_default_and_host_callback(guard: Any, make_user: Any) -> None:
    user = make_user(password="s3cret pass")
    assert guard.check_password(user, "s3cret pass")
    assert not guard.check_password(user, "wrong")
    seen: list[str] = []

    @guard.set_password_checker
    def checker(u: Any, password: str) -> bool:
        seen.append(password)
        return password == "via host"

    try:
        assert guard.check_password(user, "via host") and seen == ["via host"]
        assert not guard.check_password(user, "s3cret pass")
    finally:
        guard.password_checker = None


@pytest.mark.settings(DOMAINGUARD_PASSWORD_HASH_ATTR="no_such_attribute")
def test_password_check_without_a_hash_says_how_to_fix_it(guard: Any, make_user: Any) -> None:
    with pytest.raises(RuntimeError, match="set_password_checker"):
        guard.check_password(make_user(), "anything")


# -- the enrolment rule ---------------------------------------------------------------------


def _login_at(guard: Any, user: Any, when: datetime) -> None:
    with freeze_time(when):
        requirement.record_login(guard, user)


@pytest.mark.settings(DOMAINGUARD_2FA_REQUIRED_SINCE=date(2024, 1, 1))
def test_required_since_boundary(guard: Any, make_user: Any) -> None:
    before, on = make_user(), make_user()
    _login_at(guard, before, datetime(2023, 12, 31, 23, 59, 59, tzinfo=timezone.utc))
    _login_at(guard, on, datetime(2024, 1, 1, 0, 0, 0, tzinfo=timezone.utc))
    with freeze_time(datetime(2024, 1, 2, tzinfo=timezone.utc)):
        assert requirement.requirement(guard, before).state is RequirementState.NOT_REQUIRED
        assert requirement.requirement(guard, on).state is RequirementState.REQUIRED
        never = make_user()
        assert requirement.requirement(guard, never).state is RequirementState.NOT_REQUIRED
    # The user who logged in before the date must enrol once they log in again.
    _login_at(guard, before, datetime(2024, 1, 3, tzinfo=timezone.utc))
    with freeze_time(datetime(2024, 1, 3, tzinfo=timezone.utc)):
        assert requirement.requirement(guard, before).must_enrol_now


@pytest.mark.settings(DOMAINGUARD_2FA_REQUIRED_SINCE="2024-01-01", DOMAINGUARD_2FA_GRACE_DAYS=14)
def test_grace_window_counts_from_the_first_time_the_user_is_told(
    guard: Any, make_user: Any
) -> None:
    user = make_user()
    login = datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc)
    _login_at(guard, user, login)
    told = login + timedelta(minutes=1)
    with freeze_time(told):
        assert guard.twofactor_requirement(user).state is RequirementState.GRACE
        state = hostapp.db.session.get(guard.models.UserState, user.id)
        assert state.twofactor_required_from is None, "a report does not count as telling"
        first = requirement.requirement(guard, user)
    assert first.state is RequirementState.GRACE and first.deadline == told + timedelta(days=14)
    # Later logins and checks do not move the deadline.
    _login_at(guard, user, told + timedelta(days=5))
    with freeze_time(told + timedelta(days=14) - timedelta(seconds=1)):
        assert requirement.requirement(guard, user).state is RequirementState.GRACE
    with freeze_time(told + timedelta(days=14)):
        required = requirement.requirement(guard, user)
        assert required.must_enrol_now and required.deadline == told + timedelta(days=14)


def _is_service_account(user: Any) -> bool:
    return bool(user.email and user.email.startswith("bot@"))


@pytest.mark.settings(
    DOMAINGUARD_2FA_REQUIRED_SINCE=date(2024, 1, 1), DOMAINGUARD_2FA_EXEMPT=_is_service_account
)
def test_exempt_users_and_the_report_of_users_without_2fa(guard: Any, make_user: Any) -> None:
    stale = make_user(email="stale@example.com")
    active = make_user(email="active@example.com")
    enrolled = make_user(email="enrolled@example.com")
    bot = make_user(email="bot@example.com")
    _login_at(guard, stale, datetime(2023, 6, 1, tzinfo=timezone.utc))
    for user in (active, enrolled, bot):
        _login_at(guard, user, datetime(2024, 2, 1, tzinfo=timezone.utc))
    enrol(guard, enrolled)
    with freeze_time(datetime(2024, 2, 2, tzinfo=timezone.utc)):
        assert requirement.requirement(guard, bot).state is RequirementState.EXEMPT
        assert requirement.requirement(guard, enrolled).state is RequirementState.ENROLLED
        report = guard.active_users_without_2fa()
    assert [row.user_id for row in report] == [active.id]
    assert report[0].last_login_at == datetime(2024, 2, 1, tzinfo=timezone.utc)


@pytest.mark.settings(DOMAINGUARD_2FA_REQUIRED_SINCE=None)
def test_the_rule_can_be_off(guard: Any, make_user: Any) -> None:
    user = make_user()
    requirement.record_login(guard, user)
    assert requirement.requirement(guard, user).state is RequirementState.NOT_REQUIRED
    assert guard.active_users_without_2fa() == []


# -- disable and admin reset ---------------------------------------------------------------


def test_disable_removes_device_and_codes_and_journals(guard: Any, make_user: Any) -> None:
    user = make_user()
    enrol(guard, user)
    assert devices.disable(guard, user)
    assert not guard.twofactor_enabled(user)
    assert devices.remaining_recovery_codes(guard, user) == 0
    assert not devices.disable(guard, user)
    assert len(events(EventKind.TWOFACTOR_DISABLED)) == 1


def test_admin_reset_command_by_id_and_by_address(
    runner: Any, guard: Any, make_user: Any, outbox: list[Any]
) -> None:
    user = make_user()
    guard.add_address(user, "Ada@Example.com", verified=True)
    enrol(guard, user)
    seen: list[dict[str, Any]] = []
    with signals.twofactor_admin_reset.connected_to(lambda app, **kw: seen.append(kw)):
        result = runner.invoke(
            args=[
                "domainguard",
                "2fa-reset",
                "ada@example.com",
                "--reason",
                "ticket 42: ID seen",
                "--actor",
                "carol",
                "--json",
            ]
        )
    assert result.exit_code == 0, result.output
    assert '"reset": true' in result.output
    assert not guard.twofactor_enabled(user)
    (event,) = events(EventKind.TWOFACTOR_ADMIN_RESET)
    assert event.actor == "admin:carol" and event.details == {"reason": "ticket 42: ID seen"}
    assert seen == [{"user_id": user.id, "address": None, "reason": "ticket 42: ID seen"}]
    assert [m.recipients for m in outbox] == [["ada@example.com"]]
    assert "ticket 42" not in outbox[0].body, "the internal reason stays in the journal"
    # Nothing left to reset: exit code 3; by id this time, actor from the OS.
    again = runner.invoke(args=["domainguard", "2fa-reset", str(user.id), "--reason", "again"])
    assert again.exit_code == 3


def test_admin_reset_command_errors(runner: Any, make_user: Any) -> None:
    assert runner.invoke(args=["domainguard", "2fa-reset", "999", "--reason", "x"]).exit_code == 1
    assert (
        runner.invoke(
            args=["domainguard", "2fa-reset", "nobody@example.com", "--reason", "x"]
        ).exit_code
        == 1
    )
    assert runner.invoke(args=["domainguard", "2fa-reset", "1"]).exit_code == 2
    assert runner.invoke(args=["domainguard", "2fa-reset", "1", "--reason", " "]).exit_code == 2


@pytest.mark.settings(DOMAINGUARD_2FA_REQUIRED_SINCE=date(2024, 1, 1))
def test_report_lists_active_users_without_2fa(runner: Any, guard: Any, make_user: Any) -> None:
    active, enrolled = make_user(), make_user()
    for user in (active, enrolled):
        _login_at(guard, user, datetime(2024, 3, 1, tzinfo=timezone.utc))
    enrol(guard, enrolled)
    result = runner.invoke(args=["domainguard", "report", "--json"])
    assert result.exit_code == 0, result.output
    section = json.loads(result.output)["without_2fa"]
    assert section["count"] == 1
    assert section["rows"] == [
        {"user_id": active.id, "last_login_at": "2024-03-01T00:00:00+00:00", "deadline": None}
    ]
    text = runner.invoke(args=["domainguard", "report"]).output
    assert "Active users without 2FA" in text
