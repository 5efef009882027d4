"""The guarded password reset: who may receive a reset, reset tokens, and the request pipeline.

Three ways in, one rule: a reset goes only to a known, verified address whose domain is not
unsafe *now* (:func:`reset_decision`, with a live lookup when the last check is stale).

1. Custom flows call ``guard.reset_decision(email)`` and, when allowed, send their mail
   inside ``guard.reset_mail_scope(decision)`` or through ``guard.send_reset_mail(decision)``.
2. A host's own forgot-password view takes a decorator::

       @app.route("/forgot", methods=["GET", "POST"])
       @guard.guarded_reset_request(field="email", template_or_response="forgot_sent.html")
       def forgot():
           if request.method == "POST":
               decision = g.domainguard_reset          # always allowed when we get here
               send_my_reset_mail(decision.user, decision.address.address)
               return render_template("forgot_sent.html")
           return render_template("forgot.html")

3. The blueprint's own pages: ``/reset`` (request), a mailed link, ``/reset/<token>`` (new
   password, stored by ``guard.password_setter``).

Whatever happens, the requester sees one answer. With ``DOMAINGUARD_RESET_PROCESSING =
"background"`` (the default) the request only validates the form, counts the client's
attempts and writes one row to the job table (:mod:`.jobs`), the same row whatever the
address; the decision, the live lookup and the mail happen in a worker (:mod:`.background`,
Celery, or ``flask domainguard jobs --drain``), so the answer also takes the same time, and a
crash after the answer loses nothing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from flask import current_app, g, has_request_context, render_template, request
from flask.typing import ResponseReturnValue

from . import jobs, passwords, signals, tokens
from .addresses import find_address
from .background import jobs_for
from .dnsverdict import Baseline
from .emails import InvalidAddress, parse_address
from .jobs import JobRun
from .journal import EventKind, transaction
from .links import reset_link
from .livecheck import check_domain
from .mail import is_safe_recipient, notify_user, safe_addresses, send_mail
from .mailguard import reset_mail_scope
from .models import UserT
from .ratelimit import RateLimiter
from .users import password_hash_of
from .verdict import Verdict

if TYPE_CHECKING:
    from .context import Guard
    from .models import EmailAddress

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Longest address text read from a form: RFC 5321 allows 254 characters in a path.
MAX_ADDRESS_LENGTH = 320

# Reasons of a ResetDecision. The host logs them; it never shows them to the requester.
ALLOWED = "allowed"
UNKNOWN_ADDRESS = "unknown_address"
UNVERIFIED = "unverified"
#: No successful, recent observation shows the domain safe for the address (the lookup failed).
NO_EVIDENCE = "no_evidence"
RATE_LIMITED = "rate_limited"
#: Prefix of the domain reasons: ``domain_released``, ``domain_expired``, ``domain_reregistered``.
DOMAIN_PREFIX = "domain_"

#: Refusals the account's owner hears about (at their other, safe addresses).
_NOTICE_REASONS = ("unverified", "domain_", NO_EVIDENCE)


@dataclass(frozen=True)
class ResetDecision(Generic[UserT]):
    """Whether a password reset may be mailed to an address, and why (never shown).

    :param allowed: mail the reset.
    :param reason: ``allowed``, ``unknown_address``, ``unverified``, ``domain_released``,
        ``domain_expired``, ``domain_reregistered``, ``no_evidence`` or ``rate_limited``.
    :param user: the host's user owning the address, or ``None`` when unknown.
    :param address: the :class:`~flask_domainguard.models.EmailAddress` row, or ``None``.
    :param verdict: the domain verdict the decision rests on, when one was needed.
    """

    allowed: bool
    reason: str
    user: UserT | None
    address: EmailAddress | None
    verdict: Verdict | None = None


def _parse(raw: str) -> tuple[str, str | None]:
    try:
        parsed = parse_address(raw)
    except InvalidAddress:
        return raw.strip().lower()[:MAX_ADDRESS_LENGTH], None
    return parsed.normalized, parsed.registrable


def _lookup_row(guard: Guard, normalized: str) -> EmailAddress | None:
    # find_address re-parses; querying the normalised text directly keeps the work the same
    # for addresses that parse and for those that do not.
    import sqlalchemy as sa

    Row = guard.models.EmailAddress
    row: EmailAddress | None = guard.db.session.scalar(
        sa.select(Row).where(Row.address == normalized)
    )
    return row


def reset_decision(guard: Guard, address: str) -> ResetDecision[UserT]:
    """Decide whether a password reset may be mailed to ``address`` (any spelling).

    Allowed only for a stored, verified address on a domain that affirmative evidence shows
    safe for it: a live lookup now, or a check younger than
    ``DOMAINGUARD_RESET_LIVE_CHECK_AFTER`` that judged it ``OK`` for this address (any other
    stored verdict is looked up again). A domain registered again after the address was
    verified, sold after it was seen lapsing, released or expired is refused at once, without
    the sweep's confirmation. A lookup that fails leaves no evidence: refused as
    ``no_evidence`` (with ``DOMAINGUARD_RESET_LIVE_CHECK = "fallback"`` the stored state
    decides instead). Trusted providers are never looked up.

    Records a successful live observation on the Domain row (and commits); never unverifies.
    """
    normalized, registrable = _parse(address)
    row = _lookup_row(guard, normalized)
    if row is None:
        # The same primary-key lookups a known address costs, so the database's answer time
        # says nothing about whether the address exists.
        if registrable is not None:
            guard.db.session.get(guard.models.Domain, registrable)
        return ResetDecision(False, UNKNOWN_ADDRESS, None, None)
    user = guard.get_user(row.user_id)
    if user is None:  # pragma: no cover - rows go with their user (ON DELETE CASCADE)
        return ResetDecision(False, UNKNOWN_ADDRESS, None, None)
    if row.verified_at is None:
        return ResetDecision(False, UNVERIFIED, user, row)
    check = check_domain(
        guard,
        row.registrable,
        verified_at=row.verified_at,
        baseline=Baseline.of(row),
        actor="reset",
    )
    if check.verdict.unsafe:
        return ResetDecision(
            False, DOMAIN_PREFIX + check.verdict.kind.value, user, row, check.verdict
        )
    if not check.evidence and guard.settings.reset_live_check == "evidence":
        return ResetDecision(False, NO_EVIDENCE, user, row, check.verdict)
    return ResetDecision(True, ALLOWED, user, row, check.verdict)


def safe_to_mail(guard: Guard, address: str) -> bool:
    """Whether ``address`` is stored, verified and on a domain not unsafe by its last check.

    No live lookup (that is :func:`reset_decision`): cheap enough for every outgoing mail.
    """
    row = find_address(guard, address)
    return row is not None and is_safe_recipient(guard, row)


# -- reset tokens --------------------------------------------------------------------------


def _password_hash(guard: Guard, user: Any) -> str:
    return password_hash_of(guard, user) or ""


def _binding_text(guard: Guard, user: Any, row: EmailAddress) -> str:
    # The password hash is in here, so a changed password (by this reset or any other way)
    # kills every reset link issued before the change.
    return f"{guard.user_id_of(user)}|{row.address}|{_password_hash(guard, user)}"


def reset_token(guard: Guard, user: Any, row: EmailAddress) -> str:
    """A reset token for ``user`` mailed to ``row``: bound to both and to the password hash."""
    return tokens.issue(
        tokens.RESET,
        {
            "u": str(guard.user_id_of(user)),
            "a": row.id,
            "b": tokens.bind(tokens.RESET, _binding_text(guard, user, row)),
        },
    )


@dataclass(frozen=True)
class ResetGrant(Generic[UserT]):
    """A reset token that checked out: whose password it may set, and the address it went to."""

    user: UserT
    address: EmailAddress
    token: tokens.Token


def read_reset_token(guard: Guard, token: str) -> ResetGrant[UserT]:
    """Check a reset token: signature, age, bindings, single use, and the address still safe.

    :raises flask_domainguard.tokens.TokenError: when any of these fail (one message for all
        but "expired").
    """
    checked = tokens.read(tokens.RESET, token, lifetime=guard.settings.reset_within)
    invalid = tokens.TokenError("This link is no longer valid. Ask for a new one.")
    row_id = checked.claims.get("a")
    row = guard.db.session.get(guard.models.EmailAddress, row_id) if type(row_id) is int else None
    if row is None or str(row.user_id) != checked.claims.get("u"):
        raise invalid
    user = guard.get_user(row.user_id)
    if user is None:
        raise invalid
    if not tokens.bound_to(tokens.RESET, _binding_text(guard, user, row), checked.claims.get("b")):
        raise invalid
    # The address may have lost its standing since the mail went out (the sweep unverified
    # it, its domain was found unsafe): the link dies with it.
    if not is_safe_recipient(guard, row) or tokens.is_used(guard, checked):
        raise invalid
    return ResetGrant(user, row, checked)


def complete_reset(guard: Guard, token: str, new_password: str) -> Any:
    """Set a new password through ``guard.password_setter``; the token is spent with it.

    Never logs the user in: they log in with the new password, and 2FA, as always. What
    follows every password change follows (:func:`.passwords.password_changed`): other
    sessions end, the other safe addresses get a "this wasn't me" link.

    :returns: the user.
    :raises flask_domainguard.tokens.TokenError: the token is not (or no longer) good.
    :raises ValueError: the host's setter refused the password (its message is shown).
    :raises RuntimeError: no password setter is registered.
    """
    setter = guard.password_setter
    if setter is None:
        raise RuntimeError(
            "DomainGuard's reset pages need to know how to store a password: register it with "
            "@guard.set_password_setter (def store(user, new_password): ...)."
        )
    grant = read_reset_token(guard, token)
    with transaction(guard.db, guard.models) as tx:
        if not tokens.consume(guard, grant.token):
            raise tokens.TokenError("This link was already used. Ask for a new one.")
        setter(grant.user, new_password)
        change = passwords.record_change(tx, guard, grant.user, actor="user", via=grant.address)
    # Other sessions end, the other safe addresses get "this wasn't me" (guard.password_changed).
    passwords.after_change(guard, grant.user, change)
    return grant.user


# -- mailing -------------------------------------------------------------------------------


def send_reset_mail(
    guard: Guard,
    target: ResetDecision | str,
    *,
    template: str = "reset_password",
    **context: Any,
) -> bool:
    """Mail a reset link (to the blueprint's ``/reset/<token>`` page) if, and only if, allowed.

    :param target: a decision from :func:`reset_decision`, or an address to decide on now.
    :param template: ``domainguard/mail/<template>.txt`` (and ``.html``); it gets ``link``,
        ``address``, ``user``, ``valid_for``, ``app_name`` and ``context``.

    The link is built on ``DOMAINGUARD_EXTERNAL_URL`` (or ``SERVER_NAME``), never on the
    request's ``Host`` header; ``DOMAINGUARD_RESET_URL`` points it at a front end of the host's.
    :returns: whether the mail was sent. Refusals are not errors: the caller answers the
        requester the same way either way.
    """
    decision = target if isinstance(target, ResetDecision) else reset_decision(guard, target)
    return _mail_reset(guard, decision, template=template, context=context)


def _job_details(run: JobRun | None) -> dict[str, Any]:
    return {} if run is None else {"job": run.job.id, "requests": run.job.requests}


def _mail_reset(
    guard: Guard,
    decision: ResetDecision,
    *,
    template: str = "reset_password",
    context: dict[str, Any] | None = None,
    run: JobRun | None = None,
) -> bool:
    row = decision.address
    # A decision is trusted only as far as the stored state agrees with it.
    if not decision.allowed or row is None or not is_safe_recipient(guard, row):
        return False
    link = reset_link(reset_token(guard, decision.user, row))
    values: dict[str, Any] = {"app_name": current_app.name, **(context or {})}
    values.update(
        link=link, address=row.address, user=decision.user, valid_for=guard.settings.reset_within
    )
    if run is not None:
        run.record_attempt(recipients=1, address=row, template=template)
    with reset_mail_scope(decision):
        send_mail(guard, [row.address], template, **values)
    with transaction(guard.db, guard.models) as tx:
        tx.record(
            EventKind.RESET_SENT,
            actor="requester",
            address=row,
            signal=signals.reset_sent,
            **_job_details(run),
        )
        if run is not None:
            run.mark_done()
        # Its commit is the transaction's: the journal row, the job and this note together.
        passwords.reset_mailed(guard, decision.user, row)
    return True


_REFUSAL_TEXT = {
    UNVERIFIED: "this address is not verified",
    "domain_released": "its domain is no longer registered, so anyone could register it",
    "domain_expired": "its domain has expired",
    "domain_reregistered": "its domain was registered again after you verified the address",
    "domain_dns_changed": "its domain's name servers and mail servers have all changed since "
    "you verified the address",
    NO_EVIDENCE: "we could not confirm that its domain still belongs to you",
}


def _first_run(run: JobRun | None) -> bool:
    # A job run again after its worker died was counted against the limits already.
    return run is None or run.job.attempts <= 1


def _notify_refused(guard: Guard, decision: ResetDecision, run: JobRun | None = None) -> int:
    """Tell the owner's other safe addresses that a reset was refused; rate-limited per account.

    :returns: how many addresses were told.
    """
    row = decision.address
    if row is None:
        return 0
    safe = safe_addresses(guard, row.user_id, exclude_id=row.id)
    if not safe:
        return 0
    limit = guard.settings.reset_notice_limit
    if _first_run(run) and not RateLimiter(guard).hit(f"reset-notice:{row.user_id}", limit):
        return 0
    if run is not None:
        run.record_attempt(recipients=len(safe), user_id=row.user_id, template="reset_refused")
    recipients = notify_user(
        guard,
        row.user_id,
        "reset_refused",
        exclude_id=row.id,
        address=row.address,
        why=_REFUSAL_TEXT.get(decision.reason, "its domain is not safe"),
        app_name=current_app.name,
    )
    return len(recipients)


# -- the request pipeline ------------------------------------------------------------------


def client_allowed(guard: Guard, client: str | None) -> bool:
    """Count one reset request from ``client`` (an IP address); ``False`` once over the limit."""
    return RateLimiter(guard).hit(
        f"reset:client:{client or 'unknown'}", guard.settings.reset_limit_per_client
    )


def mail_budget_keys(row: EmailAddress, client: str | None) -> tuple[str, str]:
    """The rate-limit keys of reset mails to ``row``: one client's, and every client's."""
    return f"reset:mail:{row.id}:client:{client or 'unknown'}", f"reset:mail:{row.id}"


def _mail_allowed(guard: Guard, row: EmailAddress, client: str | None) -> bool:
    """Count one reset mail to ``row`` for ``client``; ``False`` when a budget is spent.

    The owner's allowance is their mailbox's: only mails actually sent count, per address,
    so requests refused for the attacker's own (unverified, unsafe) address use up nothing
    of the owner's. Each client has its own budget per address
    (``DOMAINGUARD_RESET_LIMIT_PER_ACCOUNT``), so another client's requests leave the owner's
    untouched; all clients together have ``DOMAINGUARD_RESET_LIMIT_PER_ADDRESS``, a bound on
    mail bombing. Whoever spends that one from many clients has put that many working links
    in the owner's mailbox (they last ``DOMAINGUARD_RESET_WITHIN``).
    """
    per_client, per_address = mail_budget_keys(row, client)
    limiter = RateLimiter(guard)
    settings = guard.settings
    return limiter.hit(per_client, settings.reset_limit_per_account) and limiter.hit(
        per_address, settings.reset_limit_per_address
    )


def process_reset_request(
    guard: Guard,
    address: str,
    *,
    client: str | None = None,
    on_allowed: Callable[[ResetDecision], Any] | None = None,
    run: JobRun | None = None,
) -> tuple[ResetDecision, Any]:
    """Decide, count the mail against the address's budgets, journal, tell the owner of
    refusals, act when allowed.

    :param client: the requester's address (for the per-client budget of mails).
    :param on_allowed: what to do for an allowed request (the host's view); by default
        :func:`send_reset_mail`.
    :param run: the job this request came from: its mail attempts are journalled, it is
        marked done in the transaction that journals the outcome, and a run after a crash
        does not count against the limits again.
    :returns: the decision and what ``on_allowed`` returned.
    """
    address = address[:MAX_ADDRESS_LENGTH]
    decision = reset_decision(guard, address)
    if (
        decision.allowed
        and decision.address is not None
        and _first_run(run)
        and not _mail_allowed(guard, decision.address, client)
    ):
        decision = ResetDecision(
            False, RATE_LIMITED, decision.user, decision.address, decision.verdict
        )

    result: Any = None
    if decision.allowed:
        if on_allowed is None:
            _mail_reset(guard, decision, run=run)
        else:
            if run is not None:
                run.record_attempt(recipients=1, address=decision.address, template="host")
            with reset_mail_scope(decision):
                result = on_allowed(decision)
            with transaction(guard.db, guard.models) as tx:
                tx.record(
                    EventKind.RESET_SENT,
                    actor="requester",
                    address=decision.address,
                    signal=signals.reset_sent,
                    via="host",
                    **_job_details(run),
                )
                if run is not None:
                    run.mark_done()
                if decision.address is not None:
                    # The host's reset page may forget guard.password_changed: this lets the
                    # next login notice the change (passwords.notice_unannounced_change).
                    # It commits the transaction: the journal row, the job and this together.
                    passwords.reset_mailed(guard, decision.user, decision.address)
        return decision, result

    if decision.address is not None:
        told = 0
        if decision.reason.startswith(_NOTICE_REASONS):
            try:
                told = _notify_refused(guard, decision, run)
            except Exception:
                if run is not None:
                    raise  # the job runs again: the notice is sent at least once
                log.exception("could not send the refused-reset notice")
        _journal_refused(guard, decision, run, notice_recipients=told)
    return decision, result


def _journal_refused(
    guard: Guard, decision: ResetDecision, run: JobRun | None, **details: Any
) -> None:
    with transaction(guard.db, guard.models) as tx:
        tx.record(
            EventKind.RESET_REFUSED,
            actor="requester",
            address=decision.address,
            signal=signals.reset_refused,
            reason=decision.reason,
            verdict=decision.verdict.kind.value if decision.verdict else None,
            **details,
            **_job_details(run),
        )
        if run is not None:
            run.mark_done()


#: Host views decorated with :func:`guarded_reset_request`, by :func:`_view_key`: a worker
#: finds the view a queued request is for by this name (the closure cannot be stored).
_HOST_VIEWS: dict[str, tuple[Callable[..., Any], str]] = {}


def _view_key(view: Callable[..., Any]) -> str:
    return f"{view.__module__}:{view.__qualname__}"


def _plain(values: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (values or {}).items() if isinstance(v, (str, int, float, bool))}


def submit_reset_request(
    guard: Guard,
    address: str,
    *,
    client: str | None,
    on_allowed: Callable[[ResetDecision], Any] | None = None,
    view: str | None = None,
) -> tuple[ResetDecision | None, Any]:
    """Handle a reset request from a view: process it now, or queue it.

    Queued (``DOMAINGUARD_RESET_PROCESSING = "background"``, in a request), the request is
    exactly one statement, the same whatever the address: an insert into the job table of the
    normalised address, the client and, for a host's view, the view's name, path and
    arguments; never a token or a cookie. A waiting request for the same address absorbs it.
    The worker counts the client against ``DOMAINGUARD_RESET_LIMIT_PER_CLIENT``; a request
    over it does no work, and a known account hears of it in the journal. Inline, the client
    is counted here and a request over the limit is refused at once.

    :param view: the key of the decorated host view (:func:`guarded_reset_request`) a queued
        request calls when allowed.
    :returns: ``(decision, result)`` when processed now (``"inline"``, or no request to
        copy), else ``(None, None)``: the work was queued.
    """
    address = address[:MAX_ADDRESS_LENGTH]
    if guard.settings.reset_processing == "inline" or not has_request_context():
        if not client_allowed(guard, client):
            return ResetDecision(False, RATE_LIMITED, None, None), None
        return process_reset_request(guard, address, client=client, on_allowed=on_allowed)
    normalized, _ = _parse(address)
    payload: dict[str, Any] = {
        "address": normalized,
        "client": client,
        "url_root": request.url_root,
        "path": request.path,
    }
    if view is not None:
        payload.update(view=view, view_args=_plain(request.view_args))
    what = f"{view or ''}|{normalized}"
    with transaction(guard.db, guard.models):
        jobs.enqueue(
            guard,
            jobs.RESET_REQUEST,
            payload,
            address=normalized,
            dedupe_key=f"reset:{jobs.digest(what)}",
        )
    jobs_for().wake()
    return None, None


@jobs.register(jobs.RESET_REQUEST)
def _run_reset_job(guard: Guard, run: JobRun) -> None:
    """A queued reset request, in a request context rebuilt from what the job stored."""
    payload = run.job.payload
    address = str(payload.get("address") or "")
    view_key = payload.get("view")
    field = "email"
    view: Callable[..., Any] | None = None
    if view_key is not None:
        try:
            view, field = _HOST_VIEWS[view_key]
        except KeyError:
            raise LookupError(
                f"no view decorated with guarded_reset_request is named {view_key!r} in this "
                "process: import the host's views before draining the job table"
            ) from None
    base_url = guard.settings.external_url or payload.get("url_root") or None
    context = current_app.test_request_context(
        str(payload.get("path") or "/"),
        base_url=base_url,
        method="POST",
        data={field: address},
        environ_base={"REMOTE_ADDR": str(payload.get("client") or "")},
    )
    with context:
        if _first_run(run) and not client_allowed(guard, payload.get("client")):
            row = _lookup_row(guard, address)
            if row is not None:
                user = guard.get_user(row.user_id)
                decision = ResetDecision(False, RATE_LIMITED, user, row)
                _journal_refused(guard, decision, run, limit="client")
            return
        on_allowed: Callable[[ResetDecision], Any] | None = None
        if view is not None:
            host_view = view
            view_args = dict(payload.get("view_args") or {})

            def call_view(decision: ResetDecision) -> Any:
                g.domainguard_reset = decision
                return host_view(**view_args)

            on_allowed = call_view
        process_reset_request(
            guard, address, client=payload.get("client"), on_allowed=on_allowed, run=run
        )


# -- the decorator for a host's own forgot-password view -----------------------------------


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
    from flask_wtf.csrf import CSRFError, validate_csrf
    from wtforms import ValidationError

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
        key = _view_key(view)
        _HOST_VIEWS[key] = (view, field)

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
