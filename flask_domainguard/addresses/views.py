"""Pages of the verification flow (templates under ``templates/domainguard/verify/``).

``GET /verify/<token>`` shows a confirmation button and changes nothing, so mail scanners
that fetch links verify nothing; only its ``POST`` verifies. ``/verify/`` lists the logged-in
user's addresses with their state, and ``POST /verify/send`` mails a new link. Clients that
prefer JSON get JSON from each (see :mod:`flask_domainguard.blueprint`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from wtforms import HiddenField, SubmitField
from wtforms.validators import DataRequired

from .. import tokens
from ..blueprint import bp, csrf_body, form_errors, invalid_token, json_answer
from ..context import current_guard
from ..redirects import safe_next, wants_json
from ..users import logged_in_user
from .standing import address_state, needs_owner
from .store import AddressError, addresses_of
from .verification import (
    VerificationError,
    confirm_verification,
    read_verification_token,
    send_verification,
)


class ConfirmAddressForm(FlaskForm):  # type: ignore[misc]
    """The confirmation button of a verification link."""

    submit = SubmitField("Verify this address")


class SendVerificationForm(FlaskForm):  # type: ignore[misc]
    """A "send a new link" button for one of the user's addresses."""

    address_id = HiddenField(validators=[DataRequired()])
    next = HiddenField()
    submit = SubmitField("Send a verification link")


def _unauthorized() -> ResponseReturnValue:
    manager = getattr(current_app, "login_manager", None)
    if manager is None:
        abort(401)
    result: ResponseReturnValue = manager.unauthorized()
    return result


@bp.route("/verify/<token>", methods=["GET", "POST"])
def verify_address(token: str) -> ResponseReturnValue:
    """Show the confirmation page (GET) or verify the address (POST)."""
    guard = current_guard()
    json = wants_json()
    try:
        row, _ = read_verification_token(guard, token)
    except tokens.TokenError as exc:
        return invalid_token("verify", exc, json)
    form = ConfirmAddressForm()
    if request.method == "POST" and form.validate_on_submit():
        try:
            outcome = confirm_verification(guard, token, user=logged_in_user())
        except tokens.TokenError as exc:
            return invalid_token("verify", exc, json)
        except VerificationError as exc:
            if json:
                body = {"error": exc.code, "message": str(exc), "address": row.address}
                return json_answer(body, 409)
            page = render_template(
                "domainguard/verify/refused.html",
                address=row.address,
                message=str(exc),
                code=exc.code,
            )
            return page, 409
        if json:
            body = {"status": outcome.value, "address": row.address}
            return json_answer(body)
        page = render_template(
            "domainguard/verify/done.html", address=row.address, outcome=outcome.value
        )
        return page
    status = 400 if request.method == "POST" else 200
    needs_login = needs_owner(row) and logged_in_user() is None
    if json:
        if status == 400:
            return json_answer(form_errors(form), 400)
        state: dict[str, Any] = {
            "address": row.address,
            "already_verified": row.verified_at is not None,
            "needs_login": needs_login,
            **csrf_body(),
        }
        return json_answer(state)
    page = render_template(
        "domainguard/verify/confirm.html",
        form=form,
        address=row.address,
        already=row.verified_at is not None,
        needs_login=needs_login,
    )
    return (page, status)


@bp.route("/verify/", methods=["GET"])
def verify_status() -> ResponseReturnValue:
    """The logged-in user's addresses, their state, and buttons to send new links."""
    user = logged_in_user()
    if user is None:
        return _unauthorized()
    guard = current_guard()
    rows = addresses_of(guard, user)
    if wants_json():
        states = [address_state(guard, row) for row in rows]
        body = [{"id": row.id, **asdict(state)} for row, state in zip(rows, states, strict=True)]
        return json_answer({"addresses": body, **csrf_body()})
    entries = []
    for row in rows:
        form = SendVerificationForm(formdata=None, address_id=str(row.id), next=request.path)
        entries.append((address_state(guard, row), form))
    return render_template("domainguard/verify/status.html", entries=entries)


@bp.route("/verify/send", methods=["POST"])
def send_verification_link() -> ResponseReturnValue:
    """Mail a new verification link for one of the logged-in user's addresses."""
    user = logged_in_user()
    if user is None:
        return _unauthorized()
    guard = current_guard()
    json = wants_json()
    form = SendVerificationForm()
    back = safe_next(form.next.data) or url_for("domainguard.verify_status")
    if not form.validate_on_submit():
        if json:
            return json_answer(form_errors(form), 400)
        flash("The form expired; please try again.", "error")
        return redirect(back)
    raw_id = str(form.address_id.data or "")
    row = guard.db.session.get(guard.models.EmailAddress, int(raw_id)) if raw_id.isdigit() else None
    # Someone else's address id gets the same answer as a missing one.
    if row is None or row.user_id != guard.user_id_of(user):
        if json:
            return json_answer({"error": "no_such_address"}, 404)
        flash("No such address on your account.", "error")
        return redirect(back)
    try:
        send_verification(guard, row)
    except (VerificationError, AddressError) as exc:
        if json:
            code = getattr(exc, "code", "refused")
            return json_answer({"error": code, "message": str(exc)}, 409)
        flash(str(exc), "error")
    else:
        if json:
            return json_answer({"status": "sent", "address": row.address})
        flash(f"A verification link is on its way to {row.address}.", "success")
    return redirect(back)
