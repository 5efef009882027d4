""" "This wasn't me" pages (templates under ``templates/domainguard/undo/``).

``GET /undo/<token>`` says what changed and shows a button, and changes nothing (mail
scanners fetch links); its ``POST`` locks the account back (:func:`.undo.lock_back`). No
login is needed: the link proves the mailbox, and an owner locked out of their account is
exactly who follows it. Clients that prefer JSON get JSON (see :mod:`.blueprint`).
"""

from __future__ import annotations

from typing import Any

from flask import current_app, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from wtforms import SubmitField

from . import tokens
from .blueprint import bp, csrf_body, form_errors, invalid_token, json_answer
from .context import current_guard
from .redirects import wants_json
from .undo import lock_back, read_undo_token


class UndoForm(FlaskForm):  # type: ignore[misc]
    """The button that locks the account back to its owner."""

    submit = SubmitField("This wasn't me: lock my account")


@bp.route("/undo/<token>", methods=["GET", "POST"])
def undo_change(token: str) -> ResponseReturnValue:
    """The link in a password-changed notice: show what happened (GET), lock back (POST)."""
    guard = current_guard()
    json = wants_json()
    try:
        grant = read_undo_token(guard, token)
    except tokens.TokenError as exc:
        return invalid_token("undo", exc, json)
    form = UndoForm()
    address = grant.reporter.address
    if request.method == "POST" and form.validate_on_submit():
        try:
            done = lock_back(guard, token)
        except tokens.TokenError as exc:
            return invalid_token("undo", exc, json)
        if json:
            body: dict[str, Any] = {
                "status": "locked",
                "twofactor_removed": done.twofactor_removed,
                "unverified": done.unverified,
            }
            return json_answer(body)
        reset_url = (
            url_for("domainguard.reset_request")
            if "domainguard.reset_request" in current_app.view_functions
            else None
        )
        return render_template(
            "domainguard/undo/done.html",
            address=address,
            twofactor_removed=done.twofactor_removed,
            unverified=done.unverified,
            reset_url=reset_url,
        )
    status = 400 if request.method == "POST" else 200
    via = grant.via.address if grant.via is not None else None
    if json:
        if status == 400:
            return json_answer(form_errors(form), 400)
        state = {"address": address, "via": via, "changed_at": grant.changed_at.isoformat()}
        return json_answer({**state, **csrf_body()})
    page = render_template(
        "domainguard/undo/confirm.html",
        form=form,
        address=address,
        via=via,
        changed_at=grant.changed_at,
    )
    return page, status
