"""Outgoing mail: rendering, the safe-recipient rule, and notices to a user's safe addresses.

The one rule every sender here obeys: mail about an account goes only to addresses that are
verified and whose domain is not unsafe. The unsafe address itself never hears about it: its
domain may belong to the attacker now.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app, render_template
from flask_mail import Message
from jinja2 import TemplateNotFound

from . import domainstate
from .dnsverdict import BASELINE_COLUMNS, Baseline
from .domainstate import STATE_COLUMNS, DomainState, load_state, policy_of, verdict_for
from .timeutil import as_utc, utcnow

if TYPE_CHECKING:
    from .context import Guard
    from .models import EmailAddress
    from .verdict import Verdict

log = logging.getLogger(__name__)


def send_mail(guard: Guard, recipients: list[str], template: str, **context: Any) -> None:
    """Render ``domainguard/mail/<template>.txt`` (and ``.html`` when present) and send it.

    The subject is the first line of the text template, after ``Subject:``.
    """
    text = render_template(f"domainguard/mail/{template}.txt", **context)
    first, _, body = text.partition("\n")
    subject = first.removeprefix("Subject:").strip()
    try:
        html: str | None = render_template(f"domainguard/mail/{template}.html", **context)
    except TemplateNotFound:
        html = None
    sender = guard.settings.mail_sender or current_app.config.get("MAIL_DEFAULT_SENDER")
    message = Message(
        subject=subject,
        recipients=list[str | tuple[str, str]](recipients),
        body=body.lstrip("\n"),
        html=html,
        sender=sender,
    )
    current_app.extensions["mail"].send(message)
    # Addresses are personal data and tokens are secrets: log the template and a count only.
    log.info("sent %s mail to %d recipient(s)", template, len(recipients))


def address_verdict(
    guard: Guard,
    state: DomainState,
    verified_at: datetime | None,
    now: datetime,
    baseline: Baseline | None = None,
) -> Verdict:
    """The stored verdict for one address on ``state``'s domain, by its own proof date and
    DNS baseline.

    An unverified address (``verified_at`` ``None``) has no proof to measure a change of hands
    against; mail to it reaches whoever holds the domain now, so it is judged for a proof
    made now (only a name up for grabs, released or expired, is unsafe for it).
    """
    if verified_at is None:
        return verdict_for(state, now, now, policy_of(guard.settings))
    return verdict_for(state, verified_at, now, policy_of(guard.settings), baseline)


def is_safe_recipient(guard: Guard, row: EmailAddress) -> bool:
    """Whether ``row`` may receive mail about its account: verified, and its domain's stored
    facts not unsafe *for this address* (a newer address on the domain changes nothing).

    A domain never checked counts as safe here (notices such as "password changed"); a
    reset needs more (:func:`has_reset_evidence`).
    """
    if row.verified_at is None:
        return False
    if row.registrable in guard.settings.trusted_domains:
        return True
    state = load_state(guard, row.registrable)
    return not address_verdict(guard, state, row.verified_at, utcnow(), Baseline.of(row)).unsafe


def has_reset_evidence(guard: Guard, row: EmailAddress) -> bool:
    """Whether the stored state alone is evidence that ``row`` may receive a reset: verified,
    and a trusted provider or a recent check that judged its domain ``OK`` for it."""
    if row.verified_at is None:
        return False
    if row.registrable in guard.settings.trusted_domains:
        return True
    from .dnsevidence import EVIDENCE, role_for

    settings = guard.settings
    return domainstate.has_reset_evidence(
        load_state(guard, row.registrable),
        row.verified_at,
        utcnow(),
        within=settings.reset_live_check_after,
        policy=policy_of(settings),
        baseline=Baseline.of(row),
        dns_evidence=role_for(guard, row.registrable) == EVIDENCE,
    )


def safe_addresses(guard: Guard, user_id: Any, *, exclude_id: int | None = None) -> list[str]:
    """The user's verified addresses whose domain is not unsafe for them, primary first."""
    # One user asked, so every row is theirs (whatever type the key came back as).
    return [
        address
        for pairs in safe_addresses_of(guard, [user_id]).values()
        for address_id, address in pairs
        if address_id != exclude_id
    ]


def safe_addresses_of(guard: Guard, user_ids: Iterable[Any]) -> dict[Any, list[tuple[int, str]]]:
    """:func:`safe_addresses` of many users in one query (a sweep batch's): each user's safe
    ``(address id, address)`` pairs, primary first; users without one are left out."""
    wanted = list(dict.fromkeys(user_ids))
    if not wanted:
        return {}
    EmailAddress = guard.models.EmailAddress
    Domain = guard.models.Domain
    # The Domain's columns under their own names (none clashes with the address columns),
    # so each result row reads as a Domain row too.
    columns = [getattr(Domain, column) for column in STATE_COLUMNS]
    rows = guard.db.session.execute(
        sa.select(
            EmailAddress.id,
            EmailAddress.user_id,
            EmailAddress.address,
            EmailAddress.registrable,
            EmailAddress.verified_at,
            *(getattr(EmailAddress, column) for column in BASELINE_COLUMNS),
            *columns,
        )
        .join(Domain, Domain.name == EmailAddress.registrable, isouter=True)
        .where(EmailAddress.user_id.in_(wanted), EmailAddress.verified_at.is_not(None))
        .order_by(EmailAddress.user_id, EmailAddress.primary.desc(), EmailAddress.id)
    )
    trusted = guard.settings.trusted_domains
    now = utcnow()
    safe: dict[Any, list[tuple[int, str]]] = {}
    for row in rows:
        if row.registrable not in trusted:
            state = (
                DomainState.of(row) if row.name is not None else DomainState(name=row.registrable)
            )
            baseline = Baseline.of(row)
            if address_verdict(guard, state, as_utc(row.verified_at), now, baseline).unsafe:
                continue
        safe.setdefault(row.user_id, []).append((row.id, row.address))
    return safe


def notify_user(
    guard: Guard,
    user_id: Any,
    template: str,
    *,
    exclude_id: int | None = None,
    **context: Any,
) -> list[str]:
    """Mail a notice to each of the user's safe addresses (never ``exclude_id``).

    :returns: the recipients; empty when the user has no safe address left.
    """
    recipients = safe_addresses(guard, user_id, exclude_id=exclude_id)
    if recipients:
        send_mail(guard, recipients, template, **context)
    return recipients
