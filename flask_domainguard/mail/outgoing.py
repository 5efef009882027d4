"""DomainGuard's own outgoing mail: rendering and sending, and notices to a user's safe
addresses (who counts as safe is :mod:`.recipients`' rule)."""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from flask import current_app, render_template
from flask_mail import Connection, Message
from jinja2 import Environment, TemplateNotFound

from .recipients import safe_addresses

if TYPE_CHECKING:
    from ..context import Guard

log = logging.getLogger(__name__)

# Optional templates found missing, per Jinja environment. Jinja caches the templates it
# loaded, not the ones it did not find: each miss searched every loader's folders again
# (for every warning a sweep mails, most mail having no HTML part).
_missing: weakref.WeakKeyDictionary[Environment, set[str]] = weakref.WeakKeyDictionary()


def _render_optional(name: str, **context: Any) -> str | None:
    """Render template ``name``, or ``None`` when nobody provides it. A miss is remembered
    unless templates reload (``TEMPLATES_AUTO_RELOAD``, debug), so a file added then is seen."""
    env = current_app.jinja_env
    missing = None if env.auto_reload else _missing.setdefault(env, set())
    if missing is not None and name in missing:
        return None
    try:
        return render_template(name, **context)
    except TemplateNotFound as exc:
        if missing is not None and exc.name == name:  # not a missing include inside it
            missing.add(name)
        return None


def send_mail(
    guard: Guard,
    recipients: list[str],
    template: str,
    *,
    connection: Connection | None = None,
    **context: Any,
) -> None:
    """Render ``domainguard/mail/<template>.txt`` (and ``.html`` when present) and send it,
    over ``connection`` when given (several mails, one SMTP session), else a new one.

    The subject is the first line of the text template, after ``Subject:``.
    """
    text = render_template(f"domainguard/mail/{template}.txt", **context)
    first, _, body = text.partition("\n")
    subject = first.removeprefix("Subject:").strip()
    html = _render_optional(f"domainguard/mail/{template}.html", **context)
    sender = guard.settings.mail_sender or current_app.config.get("MAIL_DEFAULT_SENDER")
    message = Message(
        subject=subject,
        recipients=list[str | tuple[str, str]](recipients),
        body=body.lstrip("\n"),
        html=html,
        sender=sender,
    )
    if connection is not None:
        connection.send(message)
    else:
        current_app.extensions["mail"].send(message)
    # Addresses are personal data and tokens are secrets: log the template and a count only.
    log.info("sent %s mail to %d recipient(s)", template, len(recipients))


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
