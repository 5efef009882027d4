"""The login gate around the host's own login: Flask-Login signals, a ``before_request`` hook
and the session's 2FA state (the "trust this device" cookie is :mod:`.trust`'s, freshness for
security changes :mod:`.fresh`'s).

The host's login view stays as it is. When it calls ``login_user`` (or Flask-Login restores a
user from its remember cookie), the session is marked *pending* for users with 2FA; until a
TOTP or recovery code succeeds, every endpoint but the 2FA pages, logout and static files
redirects to the 2FA step (or answers 401 with JSON to clients that prefer JSON). Users who
must enrol (``DOMAINGUARD_2FA_REQUIRED_SINCE``) are sent to enrolment the same way.

Per-session state lives in the signed Flask session under
:data:`~flask_domainguard.sessions.SESSION_KEY`::

    {"uid": "<user id>", "mode": "pending" | "done" | "none",
     "tf_at": <when the 2FA step last succeeded>, "pw_at": <when the password was confirmed>,
     "sb": <the session's binding to the password hash and the session epoch>}

A session without that state, or with the state of another user, is treated as just logged in
(fail closed). A session whose binding no longer matches (the password changed, or the user's
sessions were ended) is logged out before anything else, remember cookie included; see
:mod:`flask_domainguard.sessions`. A password that "this wasn't me" disabled does not log in
at all. Users loaded by a Flask-Login ``request_loader`` (API tokens) are not gated: such a
token is its own credential, not a password session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from flask import (
    Flask,
    current_app,
    flash,
    g,
    has_request_context,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)
from flask_login import current_user, logout_user
from flask_login.signals import (
    user_loaded_from_cookie,
    user_loaded_from_request,
    user_logged_in,
    user_logged_out,
)

from .. import passwords, sessions
from ..config import ConfigError
from ..context import current_guard, current_settings, registered_state
from ..redirects import wants_json
from ..sessions import SESSION_KEY
from ..timeutil import utcnow
from .crypto import SecretBox
from .devices import twofactor_enabled
from .requirement import Requirement, RequirementState, record_login, requirement
from .trust import trusted_device

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

    from ..context import Guard

PENDING = "pending"
DONE = "done"
NONE = "none"

#: Our pages a pending session must reach; they check the session state themselves.
ALWAYS_ALLOWED = frozenset(
    {
        "domainguard.twofactor_verify",
        "domainguard.twofactor_recovery",
        "domainguard.twofactor_enroll",
        "domainguard.static",
        # The link in a verification mail: its token proves the mailbox, and the one case
        # that needs more (an address unverified for a domain reason) demands a fresh
        # second factor itself, which a pending session does not have.
        "domainguard.verify_address",
        # "This wasn't me": its token proves the mailbox; it only ever takes access away.
        "domainguard.undo_change",
    }
)


def init_app(app: Flask, guard: Guard) -> None:
    """Connect the Flask-Login signals and put the gate before every other request hook."""
    # Blinker keeps one connection per receiver, so several apps connect these only once;
    # each handler finds its app's guard through the sender.
    user_logged_in.connect(_on_login)
    user_loaded_from_cookie.connect(_on_cookie_login)
    user_loaded_from_request.connect(_on_request_login)
    user_logged_out.connect(_on_logout)
    # First, so no host hook can answer for a pending session before the gate has looked.
    app.before_request_funcs.setdefault(None, []).insert(0, _gate)
    # First in the list is last to run (Flask runs them in reverse): after Flask-Login has
    # set or cleared its remember cookie, whose companion this keeps in step.
    app.after_request_funcs.setdefault(None, []).insert(0, _after_request)
    app.context_processor(_template_context)
    keys = current_settings(app).totp_keys
    if keys:
        try:
            SecretBox(keys)
        except ValueError as exc:  # a bad key fails at start-up, not at a user's login
            raise ConfigError(f"DOMAINGUARD_TOTP_KEYS is invalid: {exc}") from None


def _guard(app: Flask | None = None) -> Guard | None:
    state = registered_state(app)
    return None if state is None else state.guard


# -- session state ---------------------------------------------------------------------------


def _set_state(guard: Guard, user: Any, mode: str) -> None:
    session[SESSION_KEY] = {
        "uid": str(guard.user_id_of(user)),
        "mode": mode,
        "tf_at": None,
        "pw_at": None,
        "sb": sessions.binding(guard, user),
    }


def _start_session(guard: Guard, user: Any) -> None:
    """Mark a newly authenticated session: pending for 2FA users unless the device is trusted."""
    user_id = guard.user_id_of(user)
    if not twofactor_enabled(guard, user_id):
        _set_state(guard, user, NONE)
    elif trusted_device(guard, user):
        _set_state(guard, user, DONE)
    else:
        _set_state(guard, user, PENDING)


def _on_login(app: Flask, user: Any, **_: Any) -> None:
    guard = _guard(app)
    if guard is None:
        return
    # A reset the host completed without calling guard.password_changed shows here, at the
    # latest, when the new password is first used.
    passwords.notice_unannounced_change(guard, user)
    if passwords.is_locked(guard, user):
        _refuse_login()
        return
    record_login(guard, user)
    _start_session(guard, user)


def _refuse_login() -> None:
    """Undo the host's ``login_user``: the password it accepted was disabled by its owner."""
    logout_user()
    if session.get("_remember") == "set":  # no remember cookie for a refused login
        session.pop("_remember")
    g._domainguard_session_ended = True
    flash(
        "This password no longer works: the account's owner reported a password change that "
        "was not theirs. Reset the password through one of the account's addresses.",
        "error",
    )


def _on_cookie_login(app: Flask, user: Any, **_: Any) -> None:
    guard = _guard(app)
    if guard is None:
        return
    if not sessions.remember_cookie_matches(guard, user):
        # Made before the last password change (or before DomainGuard set companions): the
        # gate logs it out before anything else runs.
        g._domainguard_session_refused = True
        return
    # A remembered user is a new session without a password: it passes the 2FA step again.
    _on_login(app, user)


def _on_request_login(app: Flask, user: Any, **_: Any) -> None:
    if _guard(app) is not None:
        g._domainguard_request_user = True


def _on_logout(app: Flask, user: Any, **_: Any) -> None:
    if _guard(app) is not None:
        session.pop(SESSION_KEY, None)


def current_state(guard: Guard) -> dict[str, Any]:
    """The session's state for the current user, started afresh when missing or foreign."""
    user = current_user._get_current_object()
    state = sessions.record()
    if state is None or state.get("uid") != str(guard.user_id_of(user)):
        _start_session(guard, user)
        state = cast("dict[str, Any]", session[SESSION_KEY])
    elif "sb" not in state:  # a session from before sessions were bound: bind it now
        state = {**state, "sb": sessions.binding(guard, user)}
        session[SESSION_KEY] = state
    return state


def _session_alive(guard: Guard) -> bool:
    """Whether the logged-in session's binding still matches its user.

    See :mod:`flask_domainguard.sessions`.
    """
    if g.get("_domainguard_session_refused"):
        return False
    user = current_user._get_current_object()
    state = sessions.record()
    if state is None or state.get("uid") != str(guard.user_id_of(user)) or "sb" not in state:
        return True  # a session just started: current_state binds it
    return sessions.matches(guard, user, state["sb"])


def _end_session() -> None:
    """Log the current session out, remember cookie and its companion included."""
    logout_user()
    g._domainguard_session_ended = True
    flash("You were signed out because the account's password or security changed.", "warning")


def _after_request(response: BaseResponse) -> BaseResponse:
    if _guard() is None:
        return response
    state = sessions.record()
    uid = session.get("_user_id")
    binding = state.get("sb") if state is not None and state.get("uid") == str(uid) else None
    sessions.update_companion(
        response,
        binding if uid is not None else None,
        forget=bool(g.get("_domainguard_session_ended")),
        rebind=bool(g.get("_domainguard_rebind_remember")),
    )
    return response


def is_second_factor_pending() -> bool:
    """Whether the current user passed the password but not yet the 2FA step."""
    guard = current_guard()
    if not has_request_context() or not current_user.is_authenticated:
        return False
    if g.get("_domainguard_request_user"):
        return False
    return bool(current_state(guard)["mode"] == PENDING)


def complete_second_factor(*, fresh: bool = True) -> None:
    """Mark the current session as past its 2FA step (after a code, or a new enrolment)."""
    guard = current_guard()
    user_id = guard.user_id_of(current_user._get_current_object())
    state = dict(current_state(guard))
    state.update(uid=str(user_id), mode=DONE)
    if fresh:
        state["tf_at"] = utcnow().timestamp()
    session[SESSION_KEY] = state


def second_factor_removed() -> None:
    """Mark the current session as having no second factor (after turning 2FA off)."""
    guard = current_guard()
    state = dict(current_state(guard))
    state.update(mode=NONE, tf_at=None)
    session[SESSION_KEY] = state


def mark_password_confirmed() -> None:
    """Record that the current user just re-entered their password (see :mod:`.fresh`)."""
    guard = current_guard()
    state = dict(current_state(guard))
    state["pw_at"] = utcnow().timestamp()
    session[SESSION_KEY] = state


# -- the gate --------------------------------------------------------------------------------


def _allowed(endpoint: str, allowed: tuple[str, ...]) -> bool:
    if endpoint in ALWAYS_ALLOWED or endpoint == "static" or endpoint.endswith(".static"):
        return True
    return any(endpoint == name or endpoint.endswith("." + name) for name in allowed)


def _here() -> str | None:
    """Where to come back to after the 2FA step: this page, for GET requests only."""
    if request.method != "GET":
        return None
    path = request.script_root + request.full_path
    return path[:-1] if path.endswith("?") else path


def challenge(endpoint: str, error: str, message: str) -> BaseResponse:
    """Send the client to ``endpoint`` and back: a redirect for HTML, 401 JSON otherwise."""
    if endpoint in current_app.view_functions:
        location: str | None = url_for(endpoint, next=_here())
    else:  # the host turned our blueprint off and serves its own pages
        location = None
    if wants_json() or location is None:
        body: dict[str, Any] = {"error": error, "message": message}
        if location is not None:
            body["location"] = location
        response = jsonify(body)
        response.status_code = 401
        return response
    return redirect(location)


def _gate() -> BaseResponse | None:
    guard = _guard()
    endpoint = request.endpoint
    if guard is None or endpoint is None:  # no route: let Flask answer 404/405
        return None
    if endpoint == "static" or endpoint.endswith(".static"):
        return None
    # Every other page, our own included: a session that died with its password must not
    # pass as its user anywhere (the verification page trusts the logged-in owner).
    if (
        current_user.is_authenticated
        and not g.get("_domainguard_request_user")
        and not _session_alive(guard)
    ):
        _end_session()
    if _allowed(endpoint, guard.settings.twofactor_allowed_endpoints):
        return None
    if not current_user.is_authenticated or g.get("_domainguard_request_user"):
        return None
    state = current_state(guard)
    if state["mode"] == PENDING:
        return challenge(
            "domainguard.twofactor_verify",
            "second_factor_required",
            "Enter the code from your authenticator app to finish signing in.",
        )
    if state["mode"] == NONE and guard.settings.twofactor_required_since is not None:
        need = requirement(guard, current_user._get_current_object())
        if need.must_enrol_now:
            return challenge(
                "domainguard.twofactor_enroll",
                "twofactor_enrolment_required",
                "Set up two-factor authentication to continue.",
            )
        if need.state is RequirementState.GRACE:
            g.domainguard_twofactor_notice = need
            if not state.get("told"):
                session[SESSION_KEY] = {**state, "told": True}
                flash(_notice_text(need), "warning")
    return None


def _notice_text(need: Requirement) -> str:
    deadline = need.deadline.strftime("%Y-%m-%d %H:%M UTC") if need.deadline else "soon"
    return f"Two-factor authentication will be required for your account from {deadline}."


def _template_context() -> dict[str, Any]:
    """``domainguard_twofactor_notice``: the grace-window requirement, for a banner."""
    return {"domainguard_twofactor_notice": g.get("domainguard_twofactor_notice")}


def logout_target() -> tuple[str, str] | None:
    """The host's logout URL and method (``GET`` or ``POST``), for the 2FA pages' own button."""
    guard = current_guard()
    names = guard.settings.twofactor_allowed_endpoints
    for rule in current_app.url_map.iter_rules():
        endpoint = rule.endpoint
        if "logout" in endpoint and _allowed(endpoint, names) and not rule.arguments:
            methods = rule.methods or set()
            return url_for(endpoint), "GET" if "GET" in methods else "POST"
    return None
