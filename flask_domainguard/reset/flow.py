"""The reset request pipeline: deciding, counting, mailing the link, telling the owner of
refusals, and the job that does it all in a worker.

Three ways in, one rule (:func:`.decision.reset_decision`):

1. Custom flows call ``guard.reset_decision(email)`` and, when allowed, send their mail
   inside ``guard.reset_mail_scope(decision)`` or through ``guard.send_reset_mail(decision)``.
2. A host's own forgot-password view takes a decorator (:mod:`.hostview`).
3. The blueprint's own pages (:mod:`.views`): ``/reset`` (request), a mailed link,
   ``/reset/<token>`` (new password, stored by ``guard.password_setter``).

Whatever happens, the requester sees one answer. With ``DOMAINGUARD_RESET_PROCESSING =
"background"`` (the default) the request only validates the form, counts the client's
attempts and writes one row to the job table (:mod:`flask_domainguard.jobs`), the same row
whatever the address; the decision, the live lookup and the mail happen in a worker
(:mod:`flask_domainguard.background`, Celery, or ``flask domainguard jobs --drain``), so the
answer also takes the same time, and a crash after the answer loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import current_app, g, has_request_context, request

from .. import jobs, passwords, signals
from ..background import jobs_for
from ..jobs import JobRun
from ..journal import EventKind, Transaction, transaction
from ..links import reset_link
from ..mail.outgoing import notify_user, send_mail
from ..mail.recipients import is_safe_recipient, safe_addresses
from ..mail.safetynet import reset_mail_scope
from ..ratelimit import RateLimiter
from .decision import (
    MAX_ADDRESS_LENGTH,
    NO_EVIDENCE,
    RATE_LIMITED,
    UNVERIFIED,
    ResetDecision,
    lookup_row,
    parse_requested,
    reset_decision,
)
from .tokens import reset_token

if TYPE_CHECKING:
    from blinker import NamedSignal

    from ..context import Guard
    from ..models import EmailAddress

log = logging.getLogger(__name__)

#: Refusals the account's owner hears about (at their other, safe addresses).
_NOTICE_REASONS = (UNVERIFIED, "domain_", NO_EVIDENCE)


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
    _journal_sent(guard, decision, run)
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
            _journal_sent(guard, decision, run, via="host")
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


def _journal(
    tx: Transaction,
    kind: EventKind,
    signal: NamedSignal,
    decision: ResetDecision,
    run: JobRun | None,
    **details: Any,
) -> None:
    """Journal what came of a reset request in ``tx``; its job, if any, is done with the
    same commit (so a crash cannot journal it twice or lose it)."""
    tx.record(
        kind,
        actor="requester",
        address=decision.address,
        signal=signal,
        **details,
        **_job_details(run),
    )
    if run is not None:
        run.mark_done()


def _journal_sent(
    guard: Guard, decision: ResetDecision, run: JobRun | None, **details: Any
) -> None:
    with transaction(guard.db, guard.models) as tx:
        _journal(tx, EventKind.RESET_SENT, signals.reset_sent, decision, run, **details)
        if decision.address is not None:
            # A host's own reset page may forget guard.password_changed: this lets the next
            # login notice the change (passwords.notice_unannounced_change). It commits the
            # transaction: the journal row, the job and this note together.
            passwords.reset_mailed(guard, decision.user, decision.address)


def _journal_refused(
    guard: Guard, decision: ResetDecision, run: JobRun | None, **details: Any
) -> None:
    verdict = decision.verdict.kind.value if decision.verdict else None
    with transaction(guard.db, guard.models) as tx:
        _journal(
            tx,
            EventKind.RESET_REFUSED,
            signals.reset_refused,
            decision,
            run,
            reason=decision.reason,
            verdict=verdict,
            **details,
        )


#: Host views decorated with :func:`.hostview.guarded_reset_request`, by :func:`view_key`: a
#: worker finds the view a queued request is for by this name (the closure cannot be stored).
HOST_VIEWS: dict[str, tuple[Callable[..., Any], str]] = {}


def view_key(view: Callable[..., Any]) -> str:
    """The name a queued request stores for a decorated host view."""
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

    :param view: the key (:func:`view_key`) of the decorated host view
        (:func:`.hostview.guarded_reset_request`) a queued request calls when allowed.
    :returns: ``(decision, result)`` when processed now (``"inline"``, or no request to
        copy), else ``(None, None)``: the work was queued.
    """
    address = address[:MAX_ADDRESS_LENGTH]
    if guard.settings.reset_processing == "inline" or not has_request_context():
        if not client_allowed(guard, client):
            return ResetDecision(False, RATE_LIMITED, None, None), None
        return process_reset_request(guard, address, client=client, on_allowed=on_allowed)
    normalized, _ = parse_requested(address)
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
            view, field = HOST_VIEWS[view_key]
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
            row = lookup_row(guard, address)
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
