"""The 2FA pages on the extension's blueprint: the login step (TOTP or recovery code),
enrolment, the settings page, and the password + 2FA confirmation before security changes.

Every form carries its own CSRF token (Flask-WTF); every page answers ``Cache-Control:
no-store`` because some show secrets (the TOTP secret, recovery codes) that must not linger
in caches or the back button.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import flask_login
from flask import current_app, flash, make_response, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import generate_csrf
from wtforms import BooleanField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional

from ..blueprint import bp
from ..context import current_guard
from ..redirects import redirect_next, safe_next
from . import devices, verify
from .attempts import AttemptResult, Outcome
from .fresh import freshness, require_fresh_2fa
from .gate import (
    complete_second_factor,
    is_second_factor_pending,
    logout_target,
    mark_password_confirmed,
    second_factor_removed,
)
from .requirement import requirement
from .trust import trust_this_device

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

    from ..context import Guard

F = TypeVar("F", bound=Callable[..., Any])
FormT = TypeVar("FormT")

#: Flask-Login's decorator, typed: anonymous users go to the host's login view.
login_required = cast("Callable[[F], F]", flask_login.login_required)

_CODE_ATTRS = {
    "autocomplete": "one-time-code",
    "inputmode": "numeric",
    "autocapitalize": "none",
    "spellcheck": "false",
}


class CodeForm(FlaskForm):  # type: ignore[misc]
    """The 2FA step: a TOTP code, and "trust this device"."""

    code = StringField(
        "Authentication code", [DataRequired(), Length(max=20)], render_kw=_CODE_ATTRS
    )
    trust = BooleanField("Trust this device")
    next = HiddenField()


class RecoveryForm(FlaskForm):  # type: ignore[misc]
    """The 2FA step with a recovery code instead."""

    code = StringField(
        "Recovery code",
        [DataRequired(), Length(max=40)],
        render_kw={"autocomplete": "off", "autocapitalize": "none", "spellcheck": "false"},
    )
    next = HiddenField()


class EnrolForm(FlaskForm):  # type: ignore[misc]
    """Enrolment: the first code proves the app holds the secret."""

    code = StringField(
        "Code from your authenticator app", [DataRequired(), Length(max=20)], render_kw=_CODE_ATTRS
    )
    next = HiddenField()


class ConfirmForm(FlaskForm):  # type: ignore[misc]
    """Password, and a code when the last 2FA step is not fresh, before a security change."""

    password = PasswordField(
        "Password", [DataRequired()], render_kw={"autocomplete": "current-password"}
    )
    code = StringField("Authentication code", [Optional(), Length(max=20)], render_kw=_CODE_ATTRS)
    next = HiddenField()


class ActionForm(FlaskForm):  # type: ignore[misc]
    """A button with its CSRF token and nothing else."""


def _guard() -> Guard:
    return current_guard()


def _user() -> Any:
    return current_user._get_current_object()


def _client() -> str | None:
    # Behind a proxy the host applies werkzeug's ProxyFix, as Flask documents; then this is
    # the real client address.
    return request.remote_addr


def _page(template: str, status: int = 200, **context: Any) -> BaseResponse:
    guard = _guard()
    body = render_template(
        f"domainguard/twofactor/{template}",
        logout=logout_target(),
        logout_csrf=generate_csrf(),
        trust_days=guard.settings.trust_device_days,
        **context,
    )
    response = make_response(body, status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _message(result: AttemptResult) -> str:
    if result.outcome is Outcome.LOCKED:
        minutes = (
            max(1, -(-int(result.retry_after.total_seconds()) // 60)) if (result.retry_after) else 5
        )
        return (
            f"Too many wrong attempts. For your safety, try again in {minutes} "
            f"minute{'s' if minutes != 1 else ''}."
        )
    if result.retry_after is not None:  # this failure used up the last attempt
        return "That was not right, and it was the last attempt for now. Try again later."
    return {
        Outcome.WRONG: "That code is not right. Enter the newest code your app shows.",
        Outcome.REPLAY: "That code was already used. Wait for the next one and enter it.",
        Outcome.WRONG_PASSWORD: "That password is not right.",
        Outcome.UNREADABLE: (
            "Your authenticator cannot be checked at the moment. Use a recovery code, or "
            "contact support."
        ),
        Outcome.NOT_ENROLLED: "Two-factor authentication is not set up for this account.",
    }.get(result.outcome, "That did not work. Try again.")


def _form_with_next(form_class: type[FormT]) -> FormT:
    """A new ``form_class``; on a GET its hidden ``next`` comes from the query string (a POST
    sends its own back)."""
    form: Any = form_class()
    if request.method == "GET":
        form.next.data = request.args.get("next")
    return cast("FormT", form)


def _form_status() -> int:
    """The page's status until an attempt decides: ``400`` for a posted form that did not
    validate (CSRF included), else ``200``."""
    return 400 if request.method == "POST" else 200


def _refuse(field: Any, result: AttemptResult, message: str | None = None) -> int:
    """Say on ``field`` why the attempt failed; the status of the page shown again."""
    field.errors.append(message or _message(result))
    return 429 if result.outcome is Outcome.LOCKED else 400


def _code_page(template: str, form: Any, status: int, **context: Any) -> BaseResponse:
    """A page with a code form, shown again: the code typed is never sent back."""
    form.code.data = ""
    return _page(template, status, form=form, **context)


def _settings_url() -> str:
    return url_for("domainguard.twofactor_settings")


# -- the login step ----------------------------------------------------------------------------


@bp.route("/2fa/verify", methods=["GET", "POST"])
@login_required
def twofactor_verify() -> BaseResponse:
    """Second step of the login: a code from the authenticator app."""
    guard = _guard()
    form = _form_with_next(CodeForm)
    if not is_second_factor_pending():
        return redirect_next(form.next.data)
    status = _form_status()
    if form.validate_on_submit():
        user = _user()
        result = verify.verify_totp(guard, user, form.code.data, client=_client())
        if result.ok:
            complete_second_factor()
            response = redirect_next(form.next.data)
            if form.trust.data:
                trust_this_device(response, guard, user)
            return response
        status = _refuse(form.code, result)
    return _code_page("verify.html", form, status)


@bp.route("/2fa/recovery", methods=["GET", "POST"])
@login_required
def twofactor_recovery() -> BaseResponse:
    """Second step of the login with a single-use recovery code."""
    guard = _guard()
    form = _form_with_next(RecoveryForm)
    if not is_second_factor_pending():
        return redirect_next(form.next.data)
    status = _form_status()
    if form.validate_on_submit():
        result = verify.use_recovery_code(guard, _user(), form.code.data, client=_client())
        if result.ok:
            complete_second_factor()
            left = result.remaining_recovery_codes or 0
            flash(
                f"Recovery code accepted; {left} left. If you lost your authenticator, set up "
                "a new one and make new recovery codes in your account security settings.",
                "warning",
            )
            return redirect_next(form.next.data)
        wrong = "That recovery code is not right, or it was already used."
        status = _refuse(form.code, result, wrong if result.outcome is Outcome.WRONG else None)
    return _code_page("recovery.html", form, status)


# -- enrolment ---------------------------------------------------------------------------------


@bp.route("/2fa/enroll", methods=["GET", "POST"])
@login_required
def twofactor_enroll() -> BaseResponse:
    """Set up TOTP: QR code and secret, then a first code; recovery codes are shown once."""
    guard = _guard()
    user = _user()
    form = _form_with_next(EnrolForm)
    if is_second_factor_pending():
        # A pending session must never replace the authenticator it has not proved.
        verify_url = url_for("domainguard.twofactor_verify", next=safe_next(form.next.data))
        return redirect_next(verify_url)
    if devices.twofactor_enabled(guard, user):
        return redirect_next(_settings_url())
    need = requirement(guard, user)
    enrolment = devices.start_enrolment(guard, user)
    status = _form_status()
    if form.validate_on_submit():
        result = verify.confirm_enrolment(guard, user, form.code.data, client=_client())
        if result.ok:
            complete_second_factor()
            return _page(
                "recovery_codes.html",
                codes=result.recovery_codes,
                continue_url=safe_next(form.next.data) or _settings_url(),
                enrolled=True,
            )
        status = _refuse(form.code, result)
    secret = enrolment.secret
    return _code_page(
        "enroll.html",
        form,
        status,
        enrolment=enrolment,
        secret_groups=[secret[i : i + 4] for i in range(0, len(secret), 4)],
        requirement=need,
        skip_url=None if need.must_enrol_now else (safe_next(form.next.data) or None),
        issuer=guard.settings.totp_issuer or current_app.name,
    )


# -- settings ----------------------------------------------------------------------------------


@bp.route("/2fa/")
@login_required
def twofactor_settings() -> BaseResponse:
    """The account's 2FA state and what can be changed."""
    guard = _guard()
    user = _user()
    enabled = devices.twofactor_enabled(guard, user)
    return _page(
        "settings.html",
        enabled=enabled,
        remaining=devices.remaining_recovery_codes(guard, user) if enabled else 0,
        requirement=requirement(guard, user, tell=False),
    )


@bp.route("/2fa/confirm", methods=["GET", "POST"])
@login_required
def twofactor_confirm() -> BaseResponse:
    """Re-enter the password (and a code when the last 2FA step is old) before a change."""
    guard = _guard()
    form = _form_with_next(ConfirmForm)
    _, second_fresh = freshness()
    need_code = not second_fresh
    status = _form_status()
    if form.validate_on_submit():
        code = (form.code.data or "").strip() or None
        if need_code and code is None:
            form.code.errors.append("Enter the code from your authenticator app.")
        else:
            result = verify.confirm_identity(
                guard, _user(), form.password.data, code if need_code else None, client=_client()
            )
            if result.ok:
                mark_password_confirmed()
                if need_code:
                    complete_second_factor()
                return redirect_next(form.next.data, _settings_url())
            on_code = need_code and result.outcome in (Outcome.WRONG, Outcome.REPLAY)
            status = _refuse(form.code if on_code else form.password, result)
    return _code_page("confirm.html", form, status, need_code=need_code)


@bp.route("/2fa/recovery-codes", methods=["GET", "POST"])
@login_required
@require_fresh_2fa
def twofactor_regenerate() -> BaseResponse:
    """Replace the recovery codes (fresh password + 2FA required); the old set dies."""
    guard = _guard()
    user = _user()
    if not devices.twofactor_enabled(guard, user):
        return redirect_next(_settings_url())
    form = ActionForm()
    if form.validate_on_submit():
        codes = devices.regenerate_recovery_codes(guard, user)
        return _page(
            "recovery_codes.html", codes=codes, continue_url=_settings_url(), enrolled=False
        )
    return _page(
        "regenerate.html",
        _form_status(),
        form=form,
        remaining=devices.remaining_recovery_codes(guard, user),
    )


@bp.route("/2fa/disable", methods=["GET", "POST"])
@login_required
@require_fresh_2fa
def twofactor_disable() -> BaseResponse:
    """Turn 2FA off (fresh password + 2FA required)."""
    guard = _guard()
    user = _user()
    if not devices.twofactor_enabled(guard, user):
        return redirect_next(_settings_url())
    form = ActionForm()
    if form.validate_on_submit():
        devices.disable(guard, user)
        second_factor_removed()
        flash("Two-factor authentication is off.", "warning")
        return redirect_next(_settings_url())
    return _page("disable.html", _form_status(), form=form)
