"""Sessions that die with the password: a binding in every session and remember cookie.

Flask's session is a signed cookie the server cannot take back, and Flask-Login's remember
cookie holds nothing but the user id, so neither ends when the password changes. So every
session the login gate starts (:mod:`.twofactor.gate`) keeps a record under
:data:`SESSION_KEY` holding a *binding* (``"sb"``), a keyed digest of
the user id, the password hash and the user's session epoch
(:attr:`~.models.UserState.session_epoch`). The gate computes it again on each request; once
the password changed (by any flow, the host's own forms included) or the epoch was raised
(``guard.password_changed``, "this wasn't me"), it no longer matches and the session is
logged out, its remember cookie with it.

Flask-Login's remember cookie cannot carry the binding, so a companion cookie,
:data:`REMEMBER_COOKIE`, does: it is set whenever Flask-Login sets its own, and a login from
a remember cookie without a matching companion is refused. Remember cookies made before
DomainGuard had one therefore end once, at their next use.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

from flask import current_app, g, request, session

from . import tokens
from .timeutil import utcnow
from .users import logged_in_user, password_hash_of, session_epoch

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

    from .context import Guard

#: The session's record: whose it is (``uid``), its binding (``sb``), and the 2FA step's
#: state (see :mod:`.twofactor.gate`).
SESSION_KEY = "_domainguard_2fa"
#: The companion of Flask-Login's remember cookie.
REMEMBER_COOKIE = "domainguard_remember"
_PURPOSE = "session-binding"
#: Flask-Login's defaults, for apps that do not set the ``REMEMBER_COOKIE_*`` keys.
_FLASK_LOGIN_COOKIE = "remember_token"
_FLASK_LOGIN_DURATION = timedelta(days=365)


def _text(guard: Guard, user: Any) -> str:
    user_id = guard.user_id_of(user)
    password = password_hash_of(guard, user) or ""
    return f"{user_id}\0{password}\0{session_epoch(guard, user_id)}"


def binding(guard: Guard, user: Any) -> str:
    """The binding of a session of ``user`` made now (a keyed digest; needs ``SECRET_KEY``)."""
    return tokens.bind(_PURPOSE, _text(guard, user))


def matches(guard: Guard, user: Any, given: object) -> bool:
    """Whether ``given`` (from a session or a cookie) is still ``user``'s binding.

    Checked under ``SECRET_KEY`` and its fallbacks, so rotating the key ends no session.
    """
    return tokens.bound_to(_PURPOSE, _text(guard, user), given)


def record() -> dict[str, Any] | None:
    """The current session's record, or ``None`` when it has none (or a malformed one)."""
    value = session.get(SESSION_KEY)
    return value if isinstance(value, dict) else None


def rebind(guard: Guard, user: Any) -> None:
    """Give the current session ``user``'s new binding, when it is ``user``'s own session.

    Called after the user changed their own password (:func:`.passwords.password_changed`), so
    the session that made the change goes on while every other one ends.
    """
    me = logged_in_user()
    if me is None or g.get("_domainguard_request_user"):
        return
    if guard.user_id_of(me) != guard.user_id_of(user):
        return
    state = record()
    if state is None or state.get("uid") != str(guard.user_id_of(user)):
        return
    session[SESSION_KEY] = {**state, "sb": binding(guard, user)}
    g._domainguard_rebind_remember = True


# -- the companion of the remember cookie ------------------------------------------------------


def flask_login_cookie_name() -> str:
    """The name of Flask-Login's remember cookie in this app."""
    return str(current_app.config.get("REMEMBER_COOKIE_NAME", _FLASK_LOGIN_COOKIE))


def remember_cookie_matches(guard: Guard, user: Any) -> bool:
    """Whether the request's companion cookie holds ``user``'s current binding."""
    return matches(guard, user, request.cookies.get(REMEMBER_COOKIE))


def _flask_login_cookie_in(response: BaseResponse) -> tuple[str, Any] | None:
    """``("set", morsel)`` or ``("deleted", morsel)`` when the response changes Flask-Login's
    remember cookie, else ``None``."""
    name = flask_login_cookie_name()
    for header in response.headers.getlist("Set-Cookie"):
        if not header.startswith(name + "="):
            continue
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue
        morsel = jar.get(name)
        if morsel is None:
            continue
        return ("deleted" if not morsel.value or morsel["max-age"] == "0" else "set"), morsel
    return None


def _cookie_options() -> dict[str, Any]:
    config = current_app.config
    return {
        "path": config.get("REMEMBER_COOKIE_PATH", "/"),
        "domain": config.get("REMEMBER_COOKIE_DOMAIN"),
    }


def _set_companion(response: BaseResponse, value: str, expires: datetime | str | None) -> None:
    config = current_app.config
    if expires is None:
        duration = config.get("REMEMBER_COOKIE_DURATION", _FLASK_LOGIN_DURATION)
        if not isinstance(duration, timedelta):
            duration = timedelta(seconds=int(duration))
        expires = utcnow() + duration
    response.set_cookie(
        REMEMBER_COOKIE,
        value,
        expires=expires,
        secure=bool(config.get("REMEMBER_COOKIE_SECURE", False)),
        httponly=True,
        samesite=config.get("REMEMBER_COOKIE_SAMESITE"),
        **_cookie_options(),
    )


def update_companion(
    response: BaseResponse, session_binding: str | None, *, forget: bool, rebind: bool
) -> None:
    """Keep the companion cookie in step with Flask-Login's remember cookie on ``response``.

    :param session_binding: the binding of the session's user, when logged in.
    :param forget: the session was ended: drop the companion whatever Flask-Login does.
    :param rebind: the binding changed in this request (the user changed their own password)
        and the browser holds a remember cookie: give it the new binding.
    """
    change = _flask_login_cookie_in(response)
    if forget or (change is not None and change[0] == "deleted"):
        if REMEMBER_COOKIE in request.cookies:
            response.delete_cookie(REMEMBER_COOKIE, **_cookie_options())
        return
    if session_binding is None:
        return
    if change is not None:  # Flask-Login (re)sets its cookie: the companion follows it
        expires = change[1]["expires"] or None
        _set_companion(response, session_binding, expires)
    elif rebind and flask_login_cookie_name() in request.cookies:
        _set_companion(response, session_binding, None)
