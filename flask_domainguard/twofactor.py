"""TOTP two-factor authentication: secrets at rest, codes, recovery codes and the enrolment rule.

Nothing here reads the Flask request: the gate (:mod:`.twofactor_gate`) and the pages
(:mod:`.twofactor_views`) hand in the user and the client address. Every change of 2FA state
writes its journal row in the same transaction and sends its signal after the commit.

Secrets at rest
    TOTP secrets are sealed with Fernet (:class:`~cryptography.fernet.MultiFernet`) under
    ``DOMAINGUARD_TOTP_KEYS``, newest key first; a secret sealed under an older key still opens
    and is sealed again under the newest key the next time it is used. With no keys configured,
    one key is derived from ``SECRET_KEY`` with HKDF. That needs no setup, but rotating
    ``SECRET_KEY`` then makes every TOTP secret unreadable (users fall back to recovery codes
    or an admin ``2fa-reset``): production apps should set ``DOMAINGUARD_TOTP_KEYS``.

Recovery codes
    16 characters of Crockford base32 from :mod:`secrets` (80 bits each), stored as SHA-256
    digests. A slow hash (bcrypt, argon2) protects low-entropy human passwords; against
    80 random bits an offline search costs about 2**79 SHA-256 evaluations per code, out of
    reach either way. The digest is not keyed, so rotating ``SECRET_KEY`` or the TOTP keys
    never voids them: they are the way back in when a TOTP secret can no longer be read.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pyotp
import segno
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash

from . import signals
from .addresses.store import addresses_of
from .journal import EventKind, transaction
from .lockout import Lock, Throttle
from .mail.outgoing import notify_user
from .timeutil import utcnow

if TYPE_CHECKING:
    from .config import Settings
    from .context import Guard
    from .models import TOTPDevice, UserState

log = logging.getLogger(__name__)

#: Digits of a production code, seconds per time step, steps accepted either side of now.
DIGITS = 6
INTERVAL = 30
WINDOW = 1

#: 32 base32 characters = 160 bits, the secret length RFC 4226 recommends.
SECRET_CHARS = 32

#: Crockford's base32: no I, L, O or U, so codes read aloud or typed from paper survive.
RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
RECOVERY_LENGTH = 16
_RECOVERY_CONFUSABLES = str.maketrans({"i": "1", "l": "1", "o": "0"})

_HKDF_SALT = b"flask-domainguard"
_SECRET_INFO = b"flask-domainguard totp secret encryption v1"
_BINDING_INFO = b"flask-domainguard trusted device binding v1"


class SecretUnreadable(RuntimeError):
    """A stored TOTP secret opens under none of the configured keys."""


# -- keys and secrets at rest ------------------------------------------------------------


def _hkdf(secret_key: str | bytes, info: bytes) -> bytes:
    material = secret_key.encode() if isinstance(secret_key, str) else secret_key
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=info).derive(material)


def _secret_key() -> str | bytes:
    key: str | bytes | None = current_app.config.get("SECRET_KEY")
    if not key:
        raise RuntimeError(
            "Two-factor authentication needs SECRET_KEY (or DOMAINGUARD_TOTP_KEYS) to be set."
        )
    return key


def derived_fernet_key(secret_key: str | bytes) -> bytes:
    """The Fernet key used when ``DOMAINGUARD_TOTP_KEYS`` is empty (HKDF of ``SECRET_KEY``)."""
    return base64.urlsafe_b64encode(_hkdf(secret_key, _SECRET_INFO))


class SecretBox:
    """Seal and open TOTP secrets; the first key seals, every key opens."""

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if not keys:
            raise ValueError("SecretBox needs at least one key")
        try:
            self._fernets = [Fernet(key) for key in keys]
        except (ValueError, TypeError):
            raise ValueError(
                "DOMAINGUARD_TOTP_KEYS must hold Fernet keys (32 url-safe base64-encoded "
                "bytes), newest first; make one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`."
            ) from None
        self._multi = MultiFernet(self._fernets)

    @classmethod
    def for_settings(cls, settings: Settings) -> SecretBox:
        """The box of the current app: its configured keys, or one derived from SECRET_KEY."""
        keys: Sequence[str | bytes] = settings.totp_keys or (derived_fernet_key(_secret_key()),)
        return cls(keys)

    def seal(self, secret: str) -> str:
        """Encrypt ``secret`` under the newest key."""
        return self._multi.encrypt(secret.encode()).decode()

    def open(self, token: str) -> tuple[str, str | None]:
        """Decrypt ``token``.

        :returns: the secret, and the token sealed again under the newest key when ``token``
            was sealed under an older one (``None`` when it is already current).
        :raises SecretUnreadable: when no configured key opens it.
        """
        try:
            return self._fernets[0].decrypt(token.encode()).decode(), None
        except InvalidToken:
            pass
        try:
            secret = self._multi.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "A TOTP secret opens under none of the keys in DOMAINGUARD_TOTP_KEYS (or the "
                "key derived from SECRET_KEY): keep retired keys in the list until "
                "`flask domainguard 2fa-rotate-keys` has run."
            ) from None
        return secret, self._multi.rotate(token.encode()).decode()


# -- TOTP ----------------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh 160-bit TOTP secret in base32."""
    return pyotp.random_base32(SECRET_CHARS)


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """The ``otpauth://totp/...`` URI authenticator apps read from the QR code."""
    return str(
        pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).provisioning_uri(
            name=account, issuer_name=issuer
        )
    )


def qr_svg(uri: str, *, title: str) -> str:
    """The QR code of ``uri`` as inline SVG markup (nothing is written to disk).

    The SVG carries a ``viewBox`` and no fixed size, so CSS can scale it: with fixed width and
    height, a smaller CSS box crops the code (quiet zone and finder patterns) instead.
    """
    code = segno.make(uri, error="m")
    return str(code.svg_inline(scale=5, title=title, svgclass="dg-qr-code", omitsize=True))


def time_step(now: datetime, interval: int = INTERVAL) -> int:
    """The RFC 6238 time step counter at ``now``."""
    return int(now.timestamp()) // interval


def normalize_code(code: str) -> str:
    """``code`` without the spaces and hyphens people type or paste."""
    return re.sub(r"[\s-]", "", code)


def matching_step(
    secret: str,
    code: str,
    *,
    now: datetime,
    last_used_step: int | None = None,
    digits: int = DIGITS,
    window: int = WINDOW,
    interval: int = INTERVAL,
) -> int | None:
    """The time step within ``window`` steps of ``now`` whose code is ``code``, or ``None``.

    Steps at or before ``last_used_step`` never match: a code once accepted is a replay.
    Every candidate is compared in constant time, and all of them are, whatever matches.
    """
    code = normalize_code(code)
    if len(code) != digits or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=digits, interval=interval)
    current = time_step(now, interval)
    found: int | None = None
    for step in range(current - window, current + window + 1):
        if step < 0:
            continue
        candidate = totp.generate_otp(step)
        if hmac.compare_digest(candidate, code) and found is None:
            found = step
    if found is not None and last_used_step is not None and found <= last_used_step:
        return None
    return found


# -- recovery codes ------------------------------------------------------------------------


def new_recovery_codes(count: int) -> list[str]:
    """``count`` fresh codes, formatted ``xxxx-xxxx-xxxx-xxxx`` for reading."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
        codes.append("-".join(raw[i : i + 4] for i in range(0, RECOVERY_LENGTH, 4)))
    return codes


def normalize_recovery_code(raw: str) -> str | None:
    """The canonical form of a typed recovery code, or ``None`` when it cannot be one."""
    code = normalize_code(raw).lower().translate(_RECOVERY_CONFUSABLES)
    if len(code) != RECOVERY_LENGTH or any(c not in RECOVERY_ALPHABET for c in code):
        return None
    return code


def recovery_code_hash(user_id: Any, code: str) -> str:
    """The stored digest of a canonical recovery code, bound to its user."""
    data = f"flask-domainguard recovery code v1\0{user_id}\0{code}".encode()
    return hashlib.sha256(data).hexdigest()


# -- passwords -----------------------------------------------------------------------------


def password_hash_of(guard: Guard, user: Any) -> str | None:
    """The user's password hash, read as ``DOMAINGUARD_PASSWORD_HASH_ATTR`` says."""
    source = guard.settings.password_hash_attr
    value = source(user) if callable(source) else getattr(user, source, None)
    return str(value) if value else None


def check_password(guard: Guard, user: Any, password: str) -> bool:
    """Whether ``password`` is the user's: ``guard.password_checker`` or werkzeug's check.

    :raises RuntimeError: when the host has neither a checker nor a readable password hash.
    """
    if guard.password_checker is not None:
        return bool(guard.password_checker(user, password))
    stored = password_hash_of(guard, user)
    if stored is None:
        raise RuntimeError(
            "DomainGuard cannot check this user's password: set guard.password_checker "
            "(@guard.set_password_checker) or DOMAINGUARD_PASSWORD_HASH_ATTR."
        )
    return check_password_hash(stored, password)


# -- devices -------------------------------------------------------------------------------


def _device(guard: Guard, user_id: Any) -> TOTPDevice | None:
    model = guard.models.TOTPDevice
    row: TOTPDevice | None = guard.db.session.scalar(
        sa.select(model).where(model.user_id == user_id)
    )
    return row


def _confirmed_device(guard: Guard, user_id: Any) -> TOTPDevice | None:
    row = _device(guard, user_id)
    return row if row is not None and row.confirmed_at is not None else None


def twofactor_enabled(guard: Guard, user: Any) -> bool:
    """Whether the user has a confirmed TOTP device."""
    return _confirmed_device(guard, guard.user_id_of(user)) is not None


def _open_secret(guard: Guard, device: TOTPDevice) -> tuple[str, str | None]:
    return SecretBox.for_settings(guard.settings).open(device.secret_encrypted)


def device_binding(guard: Guard, user: Any) -> str | None:
    """A keyed digest of user id, password hash and TOTP secret, for "trust this device".

    It changes when the password or the TOTP secret changes, which is what kills a trusted
    device cookie after a password reset. ``None`` when the user has no confirmed device or
    no readable password hash (then no device is ever trusted).
    """
    user_id = guard.user_id_of(user)
    password_hash = password_hash_of(guard, user)
    device = _confirmed_device(guard, user_id)
    if password_hash is None or device is None:
        return None
    try:
        secret, _ = _open_secret(guard, device)
    except SecretUnreadable:
        return None
    key = _hkdf(_secret_key(), _BINDING_INFO)
    message = f"{user_id}\0{password_hash}\0{secret}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def account_name(guard: Guard, user: Any) -> str:
    """How the account is labelled in authenticator apps: its primary address, else its id."""
    rows = addresses_of(guard, user)
    if rows:
        return rows[0].address
    fallback = getattr(user, guard.settings.user_email_attr, None)
    return str(fallback) if fallback else str(guard.user_id_of(user))


@dataclass(frozen=True)
class Enrolment:
    """What the enrolment page shows: the secret as text, its URI and QR code."""

    secret: str
    uri: str
    qr_svg: str


def start_enrolment(guard: Guard, user: Any) -> Enrolment:
    """Create (or reuse) the user's unconfirmed device and describe it for the page.

    Reusing the pending secret keeps a QR code already scanned valid across reloads.

    :raises ValueError: when the user already has confirmed 2FA.
    """
    user_id = guard.user_id_of(user)
    db = guard.db
    box = SecretBox.for_settings(guard.settings)
    device = _device(guard, user_id)
    if device is not None and device.confirmed_at is not None:
        raise ValueError("Two-factor authentication is already on; turn it off first.")
    secret: str | None = None
    if device is not None:
        try:
            secret, _ = box.open(device.secret_encrypted)
        except SecretUnreadable:
            secret = None
    if secret is None:
        secret = new_secret()
        try:
            if device is None:
                db.session.add(
                    guard.models.TOTPDevice(
                        user_id=user_id, secret_encrypted=box.seal(secret), created_at=utcnow()
                    )
                )
            else:
                device.secret_encrypted = box.seal(secret)
            db.session.commit()
        except IntegrityError:
            # Another request of the same user created the pending device first: use it.
            db.session.rollback()
            return start_enrolment(guard, user)
    issuer = guard.settings.totp_issuer or current_app.name
    uri = provisioning_uri(secret, account=account_name(guard, user), issuer=issuer)
    return Enrolment(secret=secret, uri=uri, qr_svg=qr_svg(uri, title=f"QR code for {issuer}"))


# -- attempts ------------------------------------------------------------------------------


class Outcome(str, enum.Enum):
    """How a second-factor attempt ended."""

    OK = "ok"
    WRONG = "wrong_code"
    REPLAY = "replay"
    WRONG_PASSWORD = "wrong_password"  # noqa: S105 - an outcome name
    LOCKED = "locked"
    NOT_ENROLLED = "not_enrolled"
    UNREADABLE = "secret_unreadable"


@dataclass(frozen=True)
class AttemptResult:
    """The outcome of one attempt; ``retry_after`` is set when locked out."""

    outcome: Outcome
    retry_after: timedelta | None = None
    recovery_codes: tuple[str, ...] = ()
    """New recovery codes, only after a successful enrolment."""
    remaining_recovery_codes: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the attempt succeeded."""
        return self.outcome is Outcome.OK


def _user_key(user_id: Any) -> str:
    return f"2fa:user:{user_id}"


def _client_key(client: str) -> str:
    return f"2fa:client:{client}"


def _locked(lock: Lock) -> AttemptResult:
    return AttemptResult(Outcome.LOCKED, retry_after=lock.retry_after(utcnow()))


def _begin(guard: Guard, user_id: Any, client: str | None) -> AttemptResult | None:
    """Take one attempt from the user's budget before checking anything.

    Counting first (committed, then counted: see :mod:`.lockout`) means parallel requests
    against one account cannot all slip in before the first failure is counted; a success
    gives the attempts back. The client's budget counts failures only, so people behind one
    NAT address can log in.

    :returns: a LOCKED result while either is locked out, else ``None``.
    """
    throttle = Throttle(guard)
    keys = [_client_key(client)] if client is not None else []
    for key in [*keys, _user_key(user_id)]:
        lock = throttle.active(key)
        if lock is not None:
            return _locked(lock)
    if throttle.record(_user_key(user_id)) > throttle.limit:
        # Concurrent attempts went past the limit before any of them failed: lock out now.
        lock = throttle.lock(_user_key(user_id))
        if lock.started:
            _journal_lockout(guard, user_id, lock, "user")
            _tell_owner_of_lockout(guard, user_id, lock)
        return _locked(lock)
    # A lockout that started since the first look emptied the window this attempt was
    # counted in: it must not pass as the first of a fresh window.
    started = throttle.active(_user_key(user_id))
    return _locked(started) if started is not None else None


def _journal_lockout(guard: Guard, user_id: Any, lock: Lock, scope: str) -> None:
    with transaction(guard.db, guard.models) as tx:
        tx.record(
            EventKind.TWOFACTOR_LOCKED_OUT,
            actor="system",
            user_id=user_id,
            signal=signals.twofactor_locked_out,
            scope=scope,
            level=lock.level,
            lockout_seconds=int(lock.retry_after(utcnow()).total_seconds()),
            window_seconds=int(guard.settings.twofactor_limit.window.total_seconds()),
        )


def _tell_owner_of_lockout(guard: Guard, user_id: Any, lock: Lock) -> None:
    # At the first lockout of a run only: the owner hears that someone is guessing (and so
    # knows the password), without a mail for every escalation.
    if lock.level == 1:
        minutes = max(1, round(lock.retry_after(utcnow()).total_seconds() / 60))
        _notify(guard, user_id, "twofactor_locked_out", minutes=minutes)


def _fail(
    guard: Guard,
    user_id: Any,
    client: str | None,
    outcome: Outcome,
    method: str,
    purpose: str,
) -> AttemptResult:
    """Count a failure against the client, journal it, and start the lockouts it causes."""
    throttle = Throttle(guard)
    locks: list[tuple[Lock, str]] = []
    if client is not None and throttle.record(_client_key(client)) >= throttle.limit:
        locks.append((throttle.lock(_client_key(client)), "client"))
    if throttle.count(_user_key(user_id)) >= throttle.limit:
        locks.append((throttle.lock(_user_key(user_id)), "user"))
    with transaction(guard.db, guard.models) as tx:
        tx.record(
            EventKind.TWOFACTOR_FAILED,
            actor="user",
            user_id=user_id,
            signal=signals.twofactor_failed,
            method=method,
            reason=outcome.value,
            purpose=purpose,
        )
    for lock, scope in locks:
        if lock.started:
            _journal_lockout(guard, user_id, lock, scope)
            if scope == "user":
                _tell_owner_of_lockout(guard, user_id, lock)
    now = utcnow()
    retry = max((lock.retry_after(now) for lock, _ in locks), default=None)
    return AttemptResult(outcome, retry_after=retry)


def _succeed(guard: Guard, user_id: Any) -> None:
    # The user proved the factor: their attempts start over (how far their lockouts have
    # escalated does not). The client's do not, so one address cannot spread guesses over
    # accounts it controls.
    Throttle(guard).clear(_user_key(user_id))


def _check_totp(guard: Guard, device: TOTPDevice, code: str) -> Outcome:
    """Accept ``code`` for ``device`` at most once per time step (atomically), or say why not."""
    try:
        secret, resealed = _open_secret(guard, device)
    except SecretUnreadable:
        log.error("the TOTP secret of user %s cannot be decrypted", device.user_id)
        return Outcome.UNREADABLE
    now = utcnow()
    step = matching_step(secret, code, now=now, last_used_step=device.last_used_step)
    if step is None:
        replay = matching_step(secret, code, now=now) is not None
        return Outcome.REPLAY if replay else Outcome.WRONG
    TOTPDevice = guard.models.TOTPDevice
    values: dict[str, Any] = {"last_used_step": step}
    if resealed is not None:
        values["secret_encrypted"] = resealed
    # Compare-and-set: of two requests with the same code, only one moves the step forward.
    result = guard.db.session.execute(
        sa.update(TOTPDevice)
        .where(
            TOTPDevice.id == device.id,
            sa.or_(TOTPDevice.last_used_step.is_(None), TOTPDevice.last_used_step < step),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return Outcome.REPLAY
    return Outcome.OK


def _totp_attempt(guard: Guard, device: TOTPDevice, code: str, purpose: str) -> Outcome:
    """Check ``code``; a success is journalled in the transaction that spends its time step."""
    with transaction(guard.db, guard.models) as tx:
        outcome = _check_totp(guard, device, code)
        if outcome is Outcome.OK:
            tx.record(
                EventKind.TWOFACTOR_SUCCEEDED,
                actor="user",
                user_id=device.user_id,
                signal=signals.twofactor_succeeded,
                method="totp",
                purpose=purpose,
            )
    guard.db.session.expire(device)
    return outcome


def verify_totp(
    guard: Guard, user: Any, code: str, *, client: str | None, purpose: str = "login"
) -> AttemptResult:
    """Check a TOTP code for ``user``: rate limited, replay refused, journalled.

    :param client: the client's address, limited alongside the user.
    :param purpose: recorded in the journal (``login``, ``confirm``).
    """
    user_id = guard.user_id_of(user)
    device = _confirmed_device(guard, user_id)
    if device is None:
        return AttemptResult(Outcome.NOT_ENROLLED)
    locked = _begin(guard, user_id, client)
    if locked is not None:
        return locked
    outcome = _totp_attempt(guard, device, code, purpose)
    if outcome is Outcome.OK:
        _succeed(guard, user_id)
        return AttemptResult(Outcome.OK)
    if outcome is Outcome.UNREADABLE:
        return AttemptResult(outcome)
    return _fail(guard, user_id, client, outcome, "totp", purpose)


def use_recovery_code(
    guard: Guard, user: Any, raw: str, *, client: str | None, purpose: str = "login"
) -> AttemptResult:
    """Spend one recovery code for ``user``: single use even under concurrent requests.

    A spent code mails the user's safe verified addresses, with the number left.
    """
    user_id = guard.user_id_of(user)
    if _confirmed_device(guard, user_id) is None:
        return AttemptResult(Outcome.NOT_ENROLLED)
    locked = _begin(guard, user_id, client)
    if locked is not None:
        return locked
    RecoveryCode = guard.models.RecoveryCode
    code = normalize_recovery_code(raw)
    wanted = recovery_code_hash(user_id, code) if code is not None else ""
    db = guard.db
    unused = db.session.execute(
        sa.select(RecoveryCode.id, RecoveryCode.code_hash).where(
            RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)
        )
    ).all()
    match: int | None = None
    for row_id, digest in unused:
        # Every stored digest is compared, in constant time, whichever matches.
        if hmac.compare_digest(digest, wanted) and code is not None:
            match = row_id
    remaining = 0
    if match is not None:
        with transaction(db, guard.models) as tx:
            spent = db.session.execute(
                sa.update(RecoveryCode)
                .where(RecoveryCode.id == match, RecoveryCode.used_at.is_(None))
                .values(used_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if spent.rowcount == 1:
                remaining = _remaining(guard, user_id)
                tx.record(
                    EventKind.TWOFACTOR_SUCCEEDED,
                    actor="user",
                    user_id=user_id,
                    signal=signals.twofactor_succeeded,
                    method="recovery_code",
                    purpose=purpose,
                )
                tx.record(
                    EventKind.RECOVERY_CODE_USED,
                    actor="user",
                    user_id=user_id,
                    signal=signals.recovery_code_used,
                    remaining=remaining,
                )
            else:
                match = None  # a concurrent request spent it first
    if match is None:
        return _fail(guard, user_id, client, Outcome.WRONG, "recovery_code", purpose)
    _succeed(guard, user_id)
    _notify(guard, user_id, "twofactor_recovery_code_used", remaining=remaining)
    return AttemptResult(Outcome.OK, remaining_recovery_codes=remaining)


def confirm_identity(
    guard: Guard, user: Any, password: str, code: str | None, *, client: str | None
) -> AttemptResult:
    """Check the password, and a TOTP code when ``code`` is given, for a security change.

    One attempt from the same budget as the 2FA step, whichever part is wrong.
    """
    user_id = guard.user_id_of(user)
    device = _confirmed_device(guard, user_id) if code is not None else None
    if code is not None and device is None:
        return AttemptResult(Outcome.NOT_ENROLLED)
    locked = _begin(guard, user_id, client)
    if locked is not None:
        return locked
    if not check_password(guard, user, password):
        return _fail(guard, user_id, client, Outcome.WRONG_PASSWORD, "password", "confirm")
    if device is not None and code is not None:
        outcome = _totp_attempt(guard, device, code, "confirm")
        if outcome is Outcome.UNREADABLE:
            return AttemptResult(outcome)
        if outcome is not Outcome.OK:
            return _fail(guard, user_id, client, outcome, "totp", "confirm")
    _succeed(guard, user_id)
    return AttemptResult(Outcome.OK)


def _remaining(guard: Guard, user_id: Any) -> int:
    RecoveryCode = guard.models.RecoveryCode
    return int(
        guard.db.session.scalar(
            sa.select(sa.func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        )
        or 0
    )


def remaining_recovery_codes(guard: Guard, user: Any) -> int:
    """How many unused recovery codes the user has."""
    return _remaining(guard, guard.user_id_of(user))


def _replace_recovery_codes(guard: Guard, user_id: Any) -> list[str]:
    RecoveryCode = guard.models.RecoveryCode
    guard.db.session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = new_recovery_codes(guard.settings.recovery_codes)
    now = utcnow()
    guard.db.session.add_all(
        RecoveryCode(
            user_id=user_id,
            code_hash=recovery_code_hash(user_id, normalize_recovery_code(code) or ""),
            created_at=now,
        )
        for code in codes
    )
    return codes


def _notify(guard: Guard, user_id: Any, template: str, **context: Any) -> None:
    # The change is committed and journalled; a mail server outage must not undo it or fail
    # the request, so the notice is best effort and its failure is logged.
    try:
        notify_user(guard, user_id, template, app_name=current_app.name, **context)
    except Exception:
        log.exception("could not send the %s notice", template)


def _notify_enrolment_after_reset(guard: Guard, user_id: Any) -> bool:
    # An attacker whose reset got through enrols their own authenticator next: soon after a
    # reset, the other safe addresses get a "this wasn't me" link instead of the usual notice.
    from .undo import notify_enrolment_after_reset

    try:
        return notify_enrolment_after_reset(guard, user_id)
    except Exception:
        log.exception("could not send the enrolment-after-reset notice")
        return False


def confirm_enrolment(guard: Guard, user: Any, code: str, *, client: str | None) -> AttemptResult:
    """Turn 2FA on once ``code`` matches the pending secret; issue the recovery codes.

    :returns: a result whose ``recovery_codes`` are shown to the user once, never stored.
    """
    user_id = guard.user_id_of(user)
    device = _device(guard, user_id)
    if device is None or device.confirmed_at is not None:
        return AttemptResult(Outcome.NOT_ENROLLED)
    locked = _begin(guard, user_id, client)
    if locked is not None:
        return locked
    codes: list[str] = []
    with transaction(guard.db, guard.models) as tx:
        outcome = _check_totp(guard, device, code)
        if outcome is Outcome.OK:
            guard.db.session.execute(
                sa.update(guard.models.TOTPDevice)
                .where(guard.models.TOTPDevice.id == device.id)
                .values(confirmed_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            codes = _replace_recovery_codes(guard, user_id)
            tx.record(
                EventKind.TWOFACTOR_ENROLLED,
                actor="user",
                user_id=user_id,
                signal=signals.twofactor_enrolled,
                method="totp",
                recovery_codes=len(codes),
            )
    guard.db.session.expire(device)
    if outcome is not Outcome.OK:
        return _fail(guard, user_id, client, outcome, "totp", "enrol")
    _succeed(guard, user_id)
    if not _notify_enrolment_after_reset(guard, user_id):
        _notify(guard, user_id, "twofactor_enrolled")
    return AttemptResult(
        Outcome.OK, recovery_codes=tuple(codes), remaining_recovery_codes=len(codes)
    )


def regenerate_recovery_codes(guard: Guard, user: Any, *, actor: str = "user") -> list[str]:
    """Replace the user's recovery codes (the old set stops working at once).

    The caller makes sure the user passed a fresh password and 2FA check.

    :raises ValueError: when the user has no 2FA.
    """
    user_id = guard.user_id_of(user)
    if _confirmed_device(guard, user_id) is None:
        raise ValueError("Turn on two-factor authentication before making recovery codes.")
    with transaction(guard.db, guard.models) as tx:
        codes = _replace_recovery_codes(guard, user_id)
        tx.record(
            EventKind.RECOVERY_CODES_REGENERATED,
            actor=actor,
            user_id=user_id,
            signal=signals.recovery_codes_regenerated,
            count=len(codes),
        )
    _notify(guard, user_id, "twofactor_recovery_codes_regenerated", count=len(codes))
    return codes


def _remove_factor(guard: Guard, user_id: Any) -> bool:
    TOTPDevice = guard.models.TOTPDevice
    RecoveryCode = guard.models.RecoveryCode
    existed = _confirmed_device(guard, user_id) is not None
    guard.db.session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    guard.db.session.execute(
        sa.delete(TOTPDevice)
        .where(TOTPDevice.user_id == user_id)
        .execution_options(synchronize_session="fetch")
    )
    return existed


def disable(guard: Guard, user: Any) -> bool:
    """Turn the user's 2FA off (device and recovery codes deleted); the caller checked freshness.

    :returns: whether 2FA was on.
    """
    user_id = guard.user_id_of(user)
    with transaction(guard.db, guard.models) as tx:
        existed = _remove_factor(guard, user_id)
        if existed:
            tx.record(
                EventKind.TWOFACTOR_DISABLED,
                actor="user",
                user_id=user_id,
                signal=signals.twofactor_disabled,
            )
    if existed:
        _notify(guard, user_id, "twofactor_disabled")
    return existed


def admin_reset(guard: Guard, user: Any, *, actor: str, reason: str) -> bool:
    """Remove a user's 2FA for account recovery, journalling who did it and why.

    :param actor: the operator's name, journalled as ``admin:<actor>``.
    :returns: whether the user had 2FA (nothing is journalled otherwise).
    """
    user_id = guard.user_id_of(user)
    with transaction(guard.db, guard.models) as tx:
        existed = _remove_factor(guard, user_id)
        if existed:
            tx.record(
                EventKind.TWOFACTOR_ADMIN_RESET,
                actor=f"admin:{actor}",
                user_id=user_id,
                signal=signals.twofactor_admin_reset,
                reason=reason,
            )
    if existed:
        _notify(guard, user_id, "twofactor_admin_reset")
    return existed


def rotate_keys(guard: Guard, *, batch_size: int = 500) -> tuple[int, int]:
    """Seal every stored secret under the newest key, so retired keys can be dropped.

    :returns: ``(resealed, unreadable)`` counts.
    """
    box = SecretBox.for_settings(guard.settings)
    TOTPDevice = guard.models.TOTPDevice
    resealed = unreadable = 0
    last_id = 0
    while True:
        rows = list(
            guard.db.session.scalars(
                sa.select(TOTPDevice)
                .where(TOTPDevice.id > last_id)
                .order_by(TOTPDevice.id)
                .limit(batch_size)
            )
        )
        if not rows:
            return resealed, unreadable
        for row in rows:
            last_id = row.id
            try:
                _, token = box.open(row.secret_encrypted)
            except SecretUnreadable:
                unreadable += 1
                continue
            if token is not None:
                row.secret_encrypted = token
                resealed += 1
        guard.db.session.commit()


# -- the enrolment rule --------------------------------------------------------------------


class RequirementState(str, enum.Enum):
    """Where a user stands against ``DOMAINGUARD_2FA_REQUIRED_SINCE``."""

    NOT_REQUIRED = "not_required"
    EXEMPT = "exempt"
    ENROLLED = "enrolled"
    GRACE = "grace"
    """Must enrol; may go on with a banner until ``deadline``."""
    REQUIRED = "required"
    """Must enrol before anything else."""


@dataclass(frozen=True)
class Requirement:
    """A user's standing against the 2FA rule."""

    state: RequirementState
    deadline: datetime | None = None

    @property
    def must_enrol_now(self) -> bool:
        """Whether every page but enrolment is closed to the user."""
        return self.state is RequirementState.REQUIRED


def required_threshold(since: date | None) -> datetime | None:
    """The first instant (UTC midnight) of ``DOMAINGUARD_2FA_REQUIRED_SINCE``."""
    return None if since is None else datetime.combine(since, time(), tzinfo=timezone.utc)


def _user_state(guard: Guard, user_id: Any) -> UserState | None:
    row: UserState | None = guard.db.session.get(guard.models.UserState, user_id)
    return row


def is_exempt(guard: Guard, user: Any) -> bool:
    """Whether ``DOMAINGUARD_2FA_EXEMPT`` exempts the user (service accounts)."""
    callback = guard.settings.twofactor_exempt
    return bool(callback(user)) if callback is not None else False


def requirement(
    guard: Guard, user: Any, *, now: datetime | None = None, tell: bool = True
) -> Requirement:
    """Where ``user`` stands: users who logged in on or after the rule's date must enrol.

    :param tell: record now as the start of the user's grace window when it is the first
        time they are told (the gate does; reports do not).
    """
    now = now or utcnow()
    user_id = guard.user_id_of(user)
    if twofactor_enabled(guard, user_id):
        return Requirement(RequirementState.ENROLLED)
    threshold = required_threshold(guard.settings.twofactor_required_since)
    state = _user_state(guard, user_id)
    if threshold is None or state is None or state.last_login_at is None:
        return Requirement(RequirementState.NOT_REQUIRED)
    if state.last_login_at < threshold:
        return Requirement(RequirementState.NOT_REQUIRED)
    if is_exempt(guard, user if isinstance(user, guard.user_model) else guard.get_user(user_id)):
        return Requirement(RequirementState.EXEMPT)
    told = state.twofactor_required_from
    if told is None:
        told = now
        if tell:
            state.twofactor_required_from = now
            guard.db.session.commit()
    deadline = told + timedelta(days=guard.settings.twofactor_grace_days)
    if now < deadline:
        return Requirement(RequirementState.GRACE, deadline)
    return Requirement(RequirementState.REQUIRED, deadline)


def record_login(guard: Guard, user: Any, *, now: datetime | None = None) -> None:
    """Store the user's last login in :class:`~.models.UserState` (and commit)."""
    now = now or utcnow()
    user_id = guard.user_id_of(user)
    db = guard.db
    for _attempt in range(2):
        state = _user_state(guard, user_id)
        try:
            if state is None:
                db.session.add(guard.models.UserState(user_id=user_id, last_login_at=now))
            else:
                state.last_login_at = now
            db.session.commit()
            return
        except IntegrityError:
            # A concurrent login of the same user created the row; update it instead.
            db.session.rollback()
    raise RuntimeError("could not record the login")  # pragma: no cover


@dataclass(frozen=True)
class UserWithout2FA:
    """An active user who must enrol and has not."""

    user_id: Any
    last_login_at: datetime
    required_from: datetime | None
    deadline: datetime | None


def active_users_without_2fa(guard: Guard, *, batch_size: int = 500) -> list[UserWithout2FA]:
    """Users who logged in since ``DOMAINGUARD_2FA_REQUIRED_SINCE`` without 2FA, not exempt.

    Oldest deadline first; empty when the rule is off.
    """
    threshold = required_threshold(guard.settings.twofactor_required_since)
    if threshold is None:
        return []
    UserState = guard.models.UserState
    TOTPDevice = guard.models.TOTPDevice
    enrolled = sa.select(TOTPDevice.user_id).where(TOTPDevice.confirmed_at.is_not(None))
    rows = guard.db.session.execute(
        sa.select(UserState.user_id, UserState.last_login_at, UserState.twofactor_required_from)
        .where(UserState.last_login_at >= threshold, UserState.user_id.not_in(enrolled))
        .order_by(UserState.user_id)
    ).all()
    grace = timedelta(days=guard.settings.twofactor_grace_days)
    exempt_ids: set[Any] = set()
    if guard.settings.twofactor_exempt is not None:
        pk = guard.models.user_pk
        for start in range(0, len(rows), batch_size):
            ids = [row[0] for row in rows[start : start + batch_size]]
            users = guard.db.session.scalars(sa.select(guard.user_model).where(pk.in_(ids)))
            exempt_ids.update(guard.user_id_of(u) for u in users if is_exempt(guard, u))
    result = [
        UserWithout2FA(
            user_id=user_id,
            last_login_at=last,
            required_from=told,
            deadline=told + grace if told is not None else None,
        )
        for user_id, last, told in rows
        if user_id not in exempt_ids
    ]
    far = datetime.max.replace(tzinfo=timezone.utc)
    result.sort(key=lambda u: (u.deadline or far, str(u.user_id)))
    return result
