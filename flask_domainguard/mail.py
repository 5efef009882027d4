"""Outgoing mail: rendering, the safe-recipient rule, and notices to a user's safe addresses.

The one rule every sender here obeys: mail about an account goes only to addresses that are
verified and whose domain is not unsafe. The unsafe address itself never hears about it: its
domain may belong to the attacker now.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app, render_template
from flask_mail import Message
from jinja2 import TemplateNotFound

from .verdict import UNSAFE_KINDS

if TYPE_CHECKING:
    from .extension import DomainGuard
    from .models import EmailAddress

log = logging.getLogger(__name__)

_UNSAFE_VALUES = frozenset(kind.value for kind in UNSAFE_KINDS)


def send_mail(guard: DomainGuard, recipients: list[str], template: str, **context: Any) -> None:
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


def is_safe_recipient(guard: DomainGuard, row: EmailAddress) -> bool:
    """Whether ``row`` may receive mail about its account: verified, on a domain not unsafe."""
    if row.verified_at is None:
        return False
    if row.registrable in guard.settings.trusted_domains:
        return True
    domain = guard.db.session.get(guard.models.Domain, row.registrable)
    return domain is None or domain.verdict not in _UNSAFE_VALUES


def safe_addresses(guard: DomainGuard, user_id: Any, *, exclude_id: int | None = None) -> list[str]:
    """The user's verified addresses on domains not unsafe, primary first."""
    EmailAddress = guard.models.EmailAddress
    Domain = guard.models.Domain
    rows = guard.db.session.execute(
        sa.select(EmailAddress.id, EmailAddress.address, EmailAddress.registrable, Domain.verdict)
        .join(Domain, Domain.name == EmailAddress.registrable, isouter=True)
        .where(EmailAddress.user_id == user_id, EmailAddress.verified_at.is_not(None))
        .order_by(EmailAddress.primary.desc(), EmailAddress.id)
    )
    trusted = guard.settings.trusted_domains
    return [
        address
        for row_id, address, registrable, verdict in rows
        if row_id != exclude_id and (registrable in trusted or verdict not in _UNSAFE_VALUES)
    ]


def notify_user(
    guard: DomainGuard,
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
