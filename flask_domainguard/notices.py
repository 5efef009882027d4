"""The sweep's mail to users, through the job table: expiry warnings and unverify notices.

The sweep decides in a transaction (an address warned for this expiry date, an address
unverified) and queues the mail in that same transaction with its journal row
(``expiry_warning_sent``, ``unsafe_notice_sent``), so a crash after the commit loses no
warning and no record of one: a worker delivers it, at least once. The sweep delivers its
own jobs right after the commit (:func:`flask_domainguard.jobs.deliver_now`); whatever
fails there stays queued.

Recipients are the user's safe addresses, chosen when the job is queued (the journal says how
many) and again when it runs: an address that became unsafe in between gets nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import current_app

from . import jobs, signals
from .journal import EventKind
from .mail.outgoing import send_mail
from .mail.recipients import safe_addresses

if TYPE_CHECKING:
    from blinker import NamedSignal

    from .context import Guard
    from .jobs import JobRun
    from .journal import Transaction


def _json_key(user_id: Any) -> Any:
    # Integer and string keys survive JSON as they are; UUIDs and the like as text.
    return user_id if isinstance(user_id, (int, str)) else str(user_id)


def _queue(
    guard: Guard,
    tx: Transaction,
    job_kind: str,
    payload: dict[str, Any],
    event: EventKind,
    entries: list[dict[str, Any]],
    *,
    user_id: Any,
    actor: str,
    exclude_id: int | None = None,
    signal: NamedSignal | None = None,
) -> int | None:
    """Queue one mail job to the user and journal ``event`` in ``tx`` once per entry (its
    ``address`` and details), with how many safe addresses it will go to. Nothing when the
    user has no safe address left.

    :returns: the job's id, or ``None`` when nothing was queued.
    """
    recipients = safe_addresses(guard, user_id, exclude_id=exclude_id)
    if not recipients:
        return None
    job_id = jobs.enqueue(guard, job_kind, {"user_id": _json_key(user_id), **payload})
    for entry in entries:
        tx.record(
            event,
            actor=actor,
            user_id=user_id,
            signal=signal,
            **entry,
            recipients=len(recipients),
            job=job_id,
        )
    return job_id


def queue_expiry_warning(
    guard: Guard,
    tx: Transaction,
    *,
    user_id: Any,
    domain: str,
    stage: str,
    until: datetime,
    reason: str,
    addresses: list[str],
) -> int | None:
    """Queue one warning to a user about ``domain``'s expiry and journal it for each of
    ``addresses`` (in ``tx``). Nothing when the user has no safe address.

    :returns: the job's id, or ``None`` when nothing was queued.
    """
    details = {"domain": domain, "until": until.isoformat(), "stage": stage}
    return _queue(
        guard,
        tx,
        jobs.EXPIRY_WARNING,
        {**details, "reason": reason, "addresses": addresses},
        EventKind.EXPIRY_WARNING_SENT,
        [{"address": address, **details} for address in addresses],
        user_id=user_id,
        actor="sweep",
        signal=signals.expiry_warning_sent,
    )


def queue_unverify_notice(
    guard: Guard,
    tx: Transaction,
    *,
    user_id: Any,
    exclude_id: int,
    items: list[dict[str, str]],
    actor: str = "sweep",
) -> int | None:
    """Queue one notice telling a user which of their addresses were unverified (``items``:
    ``address``, ``domain``, ``reason``, ``explanation``), journalled per address in ``tx``.
    Nothing when no safe address is left (the report lists such accounts).

    :returns: the job's id, or ``None`` when nothing was queued.
    """
    return _queue(
        guard,
        tx,
        jobs.UNVERIFY_NOTICE,
        {"exclude_id": exclude_id, "items": items},
        EventKind.UNSAFE_NOTICE_SENT,
        [{"address": item["address"], "domain": item["domain"]} for item in items],
        user_id=user_id,
        actor=actor,
        exclude_id=exclude_id,
    )


def _deliver(
    guard: Guard,
    run: JobRun,
    template: str,
    *,
    user_id: Any,
    exclude_id: int | None = None,
    **context: Any,
) -> None:
    recipients = safe_addresses(guard, user_id, exclude_id=exclude_id)
    if not recipients:
        return  # every address became unsafe since: nobody left to tell
    run.record_attempt(recipients=len(recipients), user_id=user_id, template=template)
    send_mail(guard, recipients, template, app_name=current_app.name, **context)


@jobs.register(jobs.EXPIRY_WARNING)
def _run_expiry_warning(guard: Guard, run: JobRun) -> None:
    p = run.job.payload
    _deliver(
        guard,
        run,
        "domain_expiring",
        user_id=p["user_id"],
        domain=p["domain"],
        stage=p["stage"],
        until=datetime.fromisoformat(p["until"]),
        reason=p["reason"],
        addresses=list(p["addresses"]),
    )


@jobs.register(jobs.UNVERIFY_NOTICE)
def _run_unverify_notice(guard: Guard, run: JobRun) -> None:
    p = run.job.payload
    _deliver(
        guard,
        run,
        "address_unverified",
        user_id=p["user_id"],
        exclude_id=int(p["exclude_id"]),
        items=list(p["items"]),
    )
