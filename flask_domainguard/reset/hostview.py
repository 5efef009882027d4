"""The decorator for a host's own forgot-password view: :func:`guarded_reset_request`.

::

    @app.route("/forgot", methods=["GET", "POST"])
    @guard.guarded_reset_request(field="email", template_or_response="forgot_sent.html")
    def forgot():
        if request.method == "POST":
            decision = g.domainguard_reset          # always allowed when we get here
            send_my_reset_mail(decision.user, decision.address.address)
            return render_template("forgot_sent.html")
        return render_template("forgot.html")
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flask import current_app, g, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms import ValidationError

from .decision import MAX_ADDRESS_LENGTH, ResetDecision
from .flow import HOST_VIEWS, submit_reset_request, view_key

if TYPE_CHECKING:
    from ..context import Guard

F = TypeVar("F", bound=Callable[..., Any])


def _check_csrf() -> None:
    """Check Flask-WTF's CSRF token of this request (form field, or ``X-CSRFToken`` header).

    Only two things skip it: ``CSRFProtect`` validated this very request already (it sets
    ``g.csrf_valid``), or the host turned CSRF off altogether (``WTF_CSRF_ENABLED = False``).
    ``WTF_CSRF_CHECK_DEFAULT = False`` or a view exempted from ``CSRFProtect`` does not: then
    nothing else checks it.

    :raises flask_wtf.csrf.CSRFError: a 400 answer, before anything is counted or decided.
    """
    app = current_app
    if not app.config.get("WTF_CSRF_ENABLED", True) or g.get("csrf_valid"):
        return
    field = app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    token = request.form.get(field)
    if not token:
        headers = app.config.get("WTF_CSRF_HEADERS", ["X-CSRFToken", "X-CSRF-Token"])
        token = next((request.headers[h] for h in headers if request.headers.get(h)), None)
    try:
        validate_csrf(token)
    except ValidationError as exc:
        raise CSRFError(exc.args[0] if exc.args else "The CSRF token is invalid.") from None


def _generic(template_or_response: str | Callable[[], ResponseReturnValue]) -> ResponseReturnValue:
    if isinstance(template_or_response, str):
        return render_template(template_or_response)
    return template_or_response()


def guarded_reset_request(
    guard: Guard,
    *,
    field: str = "email",
    template_or_response: str | Callable[[], ResponseReturnValue],
    csrf: bool = True,
) -> Callable[[F], F]:
    """Decorate a host's forgot-password view so it only runs for allowed requests.

    GET (and other methods) reach the view unchanged. On POST the decorator reads
    ``request.form[field]``, checks CSRF itself (Flask-WTF's token, also when the host set
    ``WTF_CSRF_CHECK_DEFAULT = False``; see :func:`_check_csrf`), rate-limits, decides with
    :func:`reset_decision`, and:

    - allowed: calls the view, with the decision in ``flask.g.domainguard_reset``. The view
      sends its own mail; inside it Flask-Mail delivers only to safe addresses.
    - anything else: never calls the view; returns the generic answer instead.

    With ``DOMAINGUARD_RESET_PROCESSING = "background"`` (default) the generic answer is
    returned at once in every case and the request is queued in the job table; a worker runs
    the view afterwards in a request context rebuilt from the job (path, view arguments, the
    address in ``request.form[field]``, the client; no cookies, so no session or logged-in
    user), and discards its return value. With ``"inline"`` an allowed
    request returns the view's own response, which must then look exactly like the generic
    one (it also takes longer: the mail is sent in the request).

    :param field: the form field holding the address.
    :param template_or_response: the generic answer: a template name rendered without
        context, or a callable returning a response. Rendered fresh for each request.
    :param csrf: check Flask-WTF's CSRF token (field ``WTF_CSRF_FIELD_NAME``); turn it off
        only for a view that checks a token of its own.
    """

    def decorate(view: F) -> F:
        key = view_key(view)
        HOST_VIEWS[key] = (view, field)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if request.method != "POST":
                return view(*args, **kwargs)
            if csrf:
                _check_csrf()
            raw = str(request.form.get(field, ""))[:MAX_ADDRESS_LENGTH]

            def call_view(decision: ResetDecision) -> Any:
                g.domainguard_reset = decision
                return view(*args, **kwargs)

            decision, result = submit_reset_request(
                guard, raw, client=request.remote_addr, on_allowed=call_view, view=key
            )
            if decision is not None:
                g.domainguard_reset = decision
                if decision.allowed and result is not None:
                    return result
            return _generic(template_or_response)

        return wrapper  # type: ignore[return-value]

    return decorate
