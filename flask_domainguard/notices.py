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

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import current_app

from . import jobs, signals
from .journal import EventKind
from .mail.outgoing import send_mail
from .mail.recipients import safe_addresses_of
from .mail.safetynet import recipients_loaded
from .users import user_key

if TYPE_CHECKING:
    from .context import Guard
    from .jobs import JobRun
    from .journal import Transaction


def _json_key(user_id: Any) -> Any:
    # Integer and string keys survive JSON as they are; UUIDs and the like as text.
    return user_id if isinstance(user_id, (int, str)) else str(user_id)


@dataclass(frozen=True)
class WarningMail:
    """One expiry warning to queue: to ``user_id`` about ``domain``, for their ``addresses``."""

    user_id: Any
    domain: str
    stage: str
    until: datetime
    reason: str
    addresses: list[str]


@dataclass(frozen=True)
class NoticeMail:
    """One unverify notice to queue: ``items`` (``address``, ``domain``, ``reason``,
    ``explanation``) told to the user's safe addresses other than ``exclude_id``."""

    user_id: Any
    exclude_id: int
    items: list[dict[str, str]]


def queue_expiry_warnings(guard: Guard, tx: Transaction, warnings: list[WarningMail]) -> list[int]:
    """Queue each warning and journal it for each of its addresses (in ``tx``), with one
    recipient query and one insert for them all. Nothing for a user without a safe address.

    :returns: the ids of the jobs queued.
    """
    safe = safe_addresses_of(guard, [w.user_id for w in warnings])
    todo = [(w, len(safe[w.user_id])) for w in warnings if safe.get(w.user_id)]
    payloads = [
        {
            "user_id": _json_key(w.user_id),
            "domain": w.domain,
            "stage": w.stage,
            "until": w.until.isoformat(),
            "reason": w.reason,
            "addresses": w.addresses,
        }
        for w, _ in todo
    ]
    ids = jobs.enqueue_many(guard, jobs.EXPIRY_WARNING, payloads)
    for (w, recipients), job_id in zip(todo, ids, strict=True):
        for address in w.addresses:
            tx.record(
                EventKind.EXPIRY_WARNING_SENT,
                actor="sweep",
                user_id=w.user_id,
                address=address,
                signal=signals.expiry_warning_sent,
                domain=w.domain,
                until=w.until.isoformat(),
                stage=w.stage,
                recipients=recipients,
                job=job_id,
            )
    return ids


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
    """Queue one warning (:func:`queue_expiry_warnings`); its job's id, or ``None`` when the
    user has no safe address."""
    warning = WarningMail(user_id, domain, stage, until, reason, addresses)
    ids = queue_expiry_warnings(guard, tx, [warning])
    return ids[0] if ids else None


def queue_unverify_notices(
    guard: Guard, tx: Transaction, notices: list[NoticeMail], *, actor: str = "sweep"
) -> list[int]:
    """Queue each notice, journalled per address in ``tx``, with one recipient query and one
    insert for them all. Nothing for a user with no safe address left (the report lists
    such accounts).

    :returns: the ids of the jobs queued.
    """
    safe = safe_addresses_of(guard, [n.user_id for n in notices])
    todo: list[tuple[NoticeMail, int]] = []
    for notice in notices:
        others = [i for i, _ in safe.get(notice.user_id, []) if i != notice.exclude_id]
        if others:
            todo.append((notice, len(others)))
    payloads = [
        {"user_id": _json_key(n.user_id), "exclude_id": n.exclude_id, "items": n.items}
        for n, _ in todo
    ]
    ids = jobs.enqueue_many(guard, jobs.UNVERIFY_NOTICE, payloads)
    for (notice, recipients), job_id in zip(todo, ids, strict=True):
        for item in notice.items:
            tx.record(
                EventKind.UNSAFE_NOTICE_SENT,
                actor=actor,
                user_id=notice.user_id,
                address=item["address"],
                domain=item["domain"],
                recipients=recipients,
                job=job_id,
            )
    return ids


@dataclass(frozen=True)
class _Mail:
    """What one warning or notice job mails: the template, to whom, and its context."""

    template: str
    user_id: Any
    exclude_id: int | None
    context: dict[str, Any]


def _mail_of(guard: Guard, job: jobs.ClaimedJob) -> _Mail:
    p = job.payload
    user_id = user_key(guard, p["user_id"])  # a UUID key comes back from JSON as text
    if job.kind == jobs.EXPIRY_WARNING:
        context = {
            "domain": p["domain"],
            "stage": p["stage"],
            "until": datetime.fromisoformat(p["until"]),
            "reason": p["reason"],
            "addresses": list(p["addresses"]),
        }
        return _Mail("domain_expiring", user_id, None, context)
    return _Mail("address_unverified", user_id, int(p["exclude_id"]), {"items": p["items"]})


def _deliver(guard: Guard, runs: list[JobRun], safe: dict[Any, list[tuple[int, str]]]) -> None:
    """Journal the attempts in one commit, then mail each run's user over one connection.
    ``safe`` maps each user (by JSON key) to their safe ``(address id, address)`` pairs."""
    todo = []
    for run in runs:
        mail = _mail_of(guard, run.job)
        pairs = safe.get(_json_key(mail.user_id), [])
        recipients = [address for address_id, address in pairs if address_id != mail.exclude_id]
        if recipients:  # none: every address became unsafe since, nobody left to tell
            todo.append((run, mail, recipients))
    jobs.record_attempts(
        guard,
        [
            (run, {"recipients": len(to), "user_id": mail.user_id, "template": mail.template})
            for run, mail, to in todo
        ],
    )
    if not todo:
        return
    addresses = [address for _, _, to in todo for address in to]
    with (
        recipients_loaded(guard, addresses),
        current_app.extensions["mail"].connect() as connection,
    ):
        for _, mail, to in todo:
            send_mail(
                guard,
                to,
                mail.template,
                connection=connection,
                app_name=current_app.name,
                **mail.context,
            )


@jobs.register(jobs.EXPIRY_WARNING)
@jobs.register(jobs.UNVERIFY_NOTICE)
def _run_one(guard: Guard, run: JobRun) -> None:
    user_id = user_key(guard, run.job.payload["user_id"])
    # One user asked, so every row is theirs (whatever type the key came back as).
    safe = [(i, a) for pairs in safe_addresses_of(guard, [user_id]).values() for i, a in pairs]
    _deliver(guard, [run], {_json_key(user_id): safe})


@jobs.register_batch(jobs.EXPIRY_WARNING)
@jobs.register_batch(jobs.UNVERIFY_NOTICE)
def _run_many(guard: Guard, runs: list[JobRun]) -> None:
    """A claim's warnings and notices: one recipient query, one attempt commit, one SMTP
    connection."""
    users = [user_key(guard, run.job.payload["user_id"]) for run in runs]
    safe = {_json_key(k): v for k, v in safe_addresses_of(guard, users).items()}
    _deliver(guard, runs, safe)
