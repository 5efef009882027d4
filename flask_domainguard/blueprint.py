"""The extension's blueprint and what its pages share: JSON answers, form errors, the
``no-store`` hook of token pages. The pages themselves live with their flows
(:mod:`.reset.views`, :mod:`.addresses.views`, :mod:`.twofactor.views`, :mod:`.undo_views`);
:mod:`.views` registers them.

The reset and verification endpoints answer JSON to clients that prefer it (the 2FA gate's
rule, :func:`.redirects.wants_json`), for hosts whose front end is a JavaScript app
(see ``DOMAINGUARD_RESET_URL`` / ``DOMAINGUARD_VERIFY_URL``): a ``GET`` gives the
``csrf_token`` to send back in the JSON body of the ``POST``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import generate_csrf

bp = Blueprint("domainguard", __name__, template_folder="templates", static_folder="static")

#: URL arguments that hold a secret (reset, verification and "this wasn't me" links).
TOKEN_ARGUMENTS = frozenset({"token"})


@bp.after_request
def _private_token_pages(response: Response) -> Response:
    """Every answer of a page whose URL carries a token, errors and JSON included: kept out of
    caches (``no-store``) and out of ``Referer`` headers sent to other sites."""
    if request.view_args and TOKEN_ARGUMENTS & request.view_args.keys():
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
    return response


#: Only the templates (mail above all), for apps that turn the pages off.
templates_only = Blueprint("domainguard_templates", __name__, template_folder="templates")


def json_answer(body: dict[str, Any], status: int = 200) -> Response:
    """A JSON response (answers about a token get their headers from the blueprint's hook)."""
    response = jsonify(body)
    response.status_code = status
    return response


def form_errors(form: Any) -> dict[str, Any]:
    """The ``400`` body for a form that did not validate (CSRF included)."""
    return {"error": "invalid_form", "errors": dict(form.errors)}


def csrf_body() -> dict[str, Any]:
    """The ``GET`` answer for JSON clients: the token their ``POST`` must send back."""
    return {"csrf_token": generate_csrf()}


def invalid_token(flow: str, exc: Exception, json: bool) -> ResponseReturnValue:
    """The ``400`` answer to a link whose token is bad, expired or spent: JSON, or the page
    ``domainguard/<flow>/invalid.html`` (``flow``: ``verify``, ``reset``, ``undo``)."""
    if json:
        return json_answer({"error": "invalid_token", "message": str(exc)}, 400)
    return render_template(f"domainguard/{flow}/invalid.html", message=str(exc)), 400
