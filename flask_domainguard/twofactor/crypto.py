"""Two-factor secrets and codes: keys, TOTP secrets at rest, TOTP and recovery codes.

Pure functions and :class:`SecretBox`; nothing here touches the database or the request.

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
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

if TYPE_CHECKING:
    from ..config import Settings

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


def binding_key() -> bytes:
    """The key of the "trust this device" binding (HKDF of ``SECRET_KEY``)."""
    return _hkdf(_secret_key(), _BINDING_INFO)


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
