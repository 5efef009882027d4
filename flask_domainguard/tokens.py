"""Signed links: one salt per purpose, an issue time, and single use through ``UsedToken``.

A token is an :mod:`itsdangerous` signature over a small JSON object of *claims* (what the
token is bound to: a row id, keyed digests of an address or a password hash), a random
nonce and the time it was issued. Its lifetime is checked against the *current* config, so
shortening ``DOMAINGUARD_RESET_WITHIN`` also shortens links already sent.

Single use is recorded by the nonce, never by the token text: base64 has spellings that
decode to the same bytes, so a digest of the text could be dodged by re-spelling a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .models import MYSQL_DIALECTS, check_dialect
from .timeutil import utcnow

if TYPE_CHECKING:
    from .context import Guard

#: Purposes in use; each gets its own salt, so a token of one is worthless as the other.
VERIFY = "verify-address"
RESET = "reset-password"
UNDO = "undo-password-change"

#: Longer text is not one of our tokens; refusing it early bounds the work an attacker causes.
MAX_TOKEN_LENGTH = 1024

#: A token stamped this far in the future was not issued by a clock we trust.
_CLOCK_SKEW = timedelta(minutes=5)


class TokenError(ValueError):
    """A token that is malformed, tampered with, expired, used, or no longer bound to its data.

    The message is safe to show: it never says which of these it was beyond "expired".
    """


class TokenExpired(TokenError):
    """A genuine token past its lifetime."""


@dataclass(frozen=True)
class Token:
    """A token whose signature and age were checked; bindings are the caller's to check."""

    purpose: str
    claims: Mapping[str, Any]
    nonce: str
    issued_at: datetime
    expires_at: datetime


def _keys() -> list[bytes]:
    app = current_app
    secret = app.config.get("SECRET_KEY")
    if not secret:
        raise RuntimeError(
            "DomainGuard signs its links with SECRET_KEY, which is not set. Set "
            "app.config['SECRET_KEY'] to a long random value."
        )
    fallbacks = list(app.config.get("SECRET_KEY_FALLBACKS") or [])
    # itsdangerous signs with the last key and accepts all of them, which is how Flask's own
    # SECRET_KEY_FALLBACKS rotation works for sessions.
    return [k.encode() if isinstance(k, str) else bytes(k) for k in [*fallbacks, secret]]


def _serializer(purpose: str) -> URLSafeSerializer:
    return URLSafeSerializer(_keys(), salt=f"flask-domainguard.{purpose}")


def _mac(key: bytes, purpose: str, value: str) -> str:
    digest = hmac.new(key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()
    # 128 bits: enough to bind, short enough to keep the links short.
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def bind(purpose: str, value: str) -> str:
    """A keyed digest of ``value`` to put in a token (the payload is signed, not secret)."""
    return _mac(_keys()[-1], purpose, value)


def bound_to(purpose: str, value: str, binding: object) -> bool:
    """Whether ``binding`` (from a token) is :func:`bind` of ``value`` under any current key."""
    if not isinstance(binding, str):
        return False
    matches = [hmac.compare_digest(_mac(key, purpose, value), binding) for key in _keys()]
    return any(matches)


def issue(purpose: str, claims: Mapping[str, Any]) -> str:
    """Sign ``claims`` (JSON-serialisable, no secrets) with a fresh nonce and the time now."""
    payload = {
        **claims,
        "n": secrets.token_urlsafe(12),
        "t": int(utcnow().timestamp()),
    }
    return str(_serializer(purpose).dumps(payload))


def read(purpose: str, token: str, *, lifetime: timedelta) -> Token:
    """Check a token's signature and age (not its bindings, not whether it was used).

    :raises TokenExpired: for a genuine token older than ``lifetime``.
    :raises TokenError: for anything else that is not a token of ``purpose``.
    """
    invalid = TokenError("This link is invalid. Ask for a new one.")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise invalid
    try:
        payload = _serializer(purpose).loads(token)
    except BadSignature:
        raise invalid from None
    if not isinstance(payload, dict):
        raise invalid
    nonce, stamp = payload.get("n"), payload.get("t")
    if not isinstance(nonce, str) or not nonce or type(stamp) is not int:
        raise invalid
    now = utcnow()
    try:
        issued_at = datetime.fromtimestamp(stamp, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise invalid from None
    if issued_at > now + _CLOCK_SKEW:
        raise invalid
    expires_at = issued_at + lifetime
    if now >= expires_at:
        raise TokenExpired("This link has expired. Ask for a new one.")
    claims = {k: v for k, v in payload.items() if k not in ("n", "t")}
    return Token(purpose, claims, nonce, issued_at, expires_at)


def _digest(purpose: str, nonce: str) -> str:
    return hashlib.sha256(f"{purpose}:{nonce}".encode()).hexdigest()


def is_used(guard: Guard, token: Token) -> bool:
    """Whether ``token`` was already spent."""
    UsedToken = guard.models.UsedToken
    found = guard.db.session.scalar(
        sa.select(sa.func.count())
        .select_from(UsedToken)
        .where(UsedToken.digest == _digest(token.purpose, token.nonce))
    )
    return bool(found)


def consume(guard: Guard, token: Token) -> bool:
    """Mark ``token`` spent inside the caller's transaction (which commits or rolls it back).

    Atomic across processes: ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` lets exactly one
    of two concurrent spenders through. MySQL/MariaDB have neither clause there: a plain
    INSERT in a savepoint does the same, the primary key refusing the second spender (who
    waits on the first's row lock, then fails once it commits).

    :returns: ``False`` when the token was already spent.
    """
    db = guard.db
    UsedToken = guard.models.UsedToken
    table: sa.Table = UsedToken.__table__  # type: ignore[attr-defined]
    dialect = db.session.get_bind(mapper=sa.inspect(UsedToken)).dialect.name
    check_dialect(dialect)
    now = utcnow()
    # Spent tokens are only needed until they would have expired anyway.
    db.session.execute(sa.delete(table).where(table.c.expires_at < now))
    values = {
        "digest": _digest(token.purpose, token.nonce),
        # A day's margin: a lifetime raised in the config must not revive a spent token.
        "expires_at": token.expires_at + timedelta(days=1),
    }
    if dialect in MYSQL_DIALECTS:
        try:
            with db.session.begin_nested():
                db.session.execute(sa.insert(table).values(**values))
        except sa.exc.IntegrityError:
            return False
        return True
    insert: Any = sqlite_insert if dialect == "sqlite" else postgresql_insert
    stmt = (
        insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[table.c.digest])
        .returning(table.c.digest)
    )
    return db.session.execute(stmt).scalar_one_or_none() is not None
