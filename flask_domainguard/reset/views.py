"""The blueprint's reset pages (templates under ``templates/domainguard/reset/``).

``/reset`` asks for an address and always answers with the same page; ``/reset/<token>``
(GET shows the form, nothing is spent) sets a new password through ``guard.password_setter``
and sends the user to log in: a reset never logs anyone in and never skips 2FA. Clients that
prefer JSON get JSON from both (see :mod:`flask_domainguard.blueprint`).
"""

from __future__ import annotations

from typing import Any

from flask import current_app, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SubmitField
from wtforms.validators import DataRequired, EqualTo, Length

from .. import tokens
from ..blueprint import bp, csrf_body, form_errors, invalid_token, json_answer
from ..context import current_guard
from ..redirects import wants_json
from .decision import MAX_ADDRESS_LENGTH
from .flow import submit_reset_request
from .tokens import complete_reset, read_reset_token

#: The one answer to every valid reset request, for JSON clients.
SENT = {
    "status": "sent",
    "message": "If an account uses that address and the address is verified, a link to reset "
    "the password is on its way.",
}


class ResetRequestForm(FlaskForm):  # type: ignore[misc]
    """Ask for a reset link."""

    email = EmailField("Email address", validators=[DataRequired(), Length(max=MAX_ADDRESS_LENGTH)])
    submit = SubmitField("Send me a reset link")


class NewPasswordForm(FlaskForm):  # type: ignore[misc]
    """Choose a new password."""

    password = PasswordField("New password", validators=[DataRequired(), Length(min=8, max=1024)])
    confirm = PasswordField(
        "Repeat the new password",
        validators=[DataRequired(), EqualTo("password", message="The passwords differ.")],
    )
    submit = SubmitField("Set the new password")


@bp.route("/reset", methods=["GET", "POST"])
def reset_request() -> ResponseReturnValue:
    """Ask for a reset link; every valid submission gets the same page."""
    form = ResetRequestForm()
    json = wants_json()
    if request.method == "POST":
        if form.validate_on_submit():
            submit_reset_request(current_guard(), form.email.data or "", client=request.remote_addr)
            return json_answer(SENT) if json else render_template("domainguard/reset/sent.html")
        if json:
            return json_answer(form_errors(form), 400)
        return render_template("domainguard/reset/request.html", form=form), 400
    if json:
        return json_answer(csrf_body())
    return render_template("domainguard/reset/request.html", form=form)


def _login_url() -> str | None:
    manager = getattr(current_app, "login_manager", None)
    view = getattr(manager, "login_view", None)
    return url_for(view) if view else None


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str) -> ResponseReturnValue:
    """The link in the reset mail: choose a new password."""
    guard = current_guard()
    json = wants_json()
    try:
        read_reset_token(guard, token)
    except tokens.TokenError as exc:
        return invalid_token("reset", exc, json)
    form = NewPasswordForm()
    if request.method == "POST" and form.validate_on_submit():
        try:
            complete_reset(guard, token, form.password.data or "")
        except tokens.TokenError as exc:
            return invalid_token("reset", exc, json)
        except ValueError as exc:  # the host's setter refused this password
            form.password.errors = [*form.password.errors, str(exc)]
        else:
            if json:
                done: dict[str, Any] = {"status": "password_changed", "login_url": _login_url()}
                return json_answer(done)
            page = render_template("domainguard/reset/done.html", login_url=_login_url())
            return page
    status = 400 if request.method == "POST" else 200
    if json:
        return json_answer(form_errors(form) if status == 400 else csrf_body(), status)
    return render_template("domainguard/reset/password.html", form=form), status
