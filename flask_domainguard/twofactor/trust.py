""" "Trust this device": a signed cookie that skips the 2FA step on one browser for
``DOMAINGUARD_TRUST_DEVICE_DAYS``, bound to the password and the TOTP secret it was made under.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from flask import current_app, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..users import password_hash_of
from .crypto import SecretUnreadable, binding_key
from .devices import confirmed_device_of, open_secret

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

    from ..context import Guard

TRUST_COOKIE = "domainguard_trusted_device"
_TRUST_SALT = "domainguard.trusted-device"


def device_binding(guard: Guard, user: Any) -> str | None:
    """A keyed digest of user id, password hash and TOTP secret, for "trust this device".

    It changes when the password or the TOTP secret changes, which is what kills a trusted
    device cookie after a password reset. ``None`` when the user has no confirmed device or
    no readable password hash (then no device is ever trusted).
    """
    user_id = guard.user_id_of(user)
    password_hash = password_hash_of(guard, user)
    device = confirmed_device_of(guard, user_id)
    if password_hash is None or device is None:
        return None
    try:
        secret, _ = open_secret(guard, device)
    except SecretUnreadable:
        return None
    key = binding_key()
    message = f"{user_id}\0{password_hash}\0{secret}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key or "", salt=_TRUST_SALT)


def trusted_device(guard: Guard, user: Any) -> bool:
    """Whether the request carries a live "trust this device" cookie for ``user``.

    The cookie holds a keyed digest of the user id, the password hash and the TOTP secret:
    a password reset or a new authenticator makes every trusted device ask again.
    """
    days = guard.settings.trust_device_days
    cookie = request.cookies.get(TRUST_COOKIE)
    if days == 0 or not cookie:
        return False
    try:
        data = _serializer().loads(cookie, max_age=days * 86400)
    except BadSignature:
        return False
    if not isinstance(data, dict) or data.get("u") != str(guard.user_id_of(user)):
        return False
    binding = device_binding(guard, user)
    given = data.get("b")
    return binding is not None and isinstance(given, str) and hmac.compare_digest(binding, given)


def trust_this_device(response: BaseResponse, guard: Guard, user: Any) -> bool:
    """Set the "trust this device" cookie on ``response``.

    :returns: ``False`` when trusted devices are off or the user has no password hash to bind.
    """
    days = guard.settings.trust_device_days
    binding = device_binding(guard, user)
    if days == 0 or binding is None:
        return False
    value = _serializer().dumps({"u": str(guard.user_id_of(user)), "b": binding})
    response.set_cookie(
        TRUST_COOKIE,
        value,
        max_age=days * 86400,
        httponly=True,
        secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure,
        samesite="Lax",
        path=current_app.config.get("APPLICATION_ROOT") or "/",
    )
    return True
