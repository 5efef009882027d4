"""Transactions that journal: a state change, its :class:`~.models.Event` row, one commit,
then the signals. Every module that changes security state goes through :func:`transaction`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from blinker import NamedSignal
from flask import current_app

from .timeutil import utcnow

if TYPE_CHECKING:
    from .models import EmailAddress, Models


class EventKind(str, enum.Enum):
    """What a journal row records."""

    ADDRESS_ADDED = "address_added"
    ADDRESS_REMOVED = "address_removed"
    PRIMARY_CHANGED = "primary_changed"
    ADDRESS_ADOPTED = "address_adopted"
    VERIFICATION_SENT = "verification_sent"
    ADDRESS_VERIFIED = "address_verified"
    ADDRESS_REVERIFIED = "address_reverified"
    VERIFICATION_REFUSED = "verification_refused"
    ADDRESS_UNVERIFIED = "address_unverified"
    UNVERIFY_HELD = "unverify_held"
    HELD_APPLIED = "held_applied"
    HELD_DISMISSED = "held_dismissed"
    DOMAIN_VERDICT = "domain_verdict"
    EXPIRY_WARNING_SENT = "expiry_warning_sent"
    UNSAFE_NOTICE_SENT = "unsafe_notice_sent"
    RESET_SENT = "reset_sent"
    RESET_REFUSED = "reset_refused"
    RESET_SHED = "reset_shed"
    MAIL_ATTEMPT = "mail_attempt"
    MAIL_FAILED = "mail_failed"
    PASSWORD_RESET = "password_reset"  # noqa: S105 - an event name, not a password
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 - an event name, not a password
    ACCOUNT_LOCKED = "account_locked"
    TWOFACTOR_ENROLLED = "twofactor_enrolled"
    TWOFACTOR_DISABLED = "twofactor_disabled"
    TWOFACTOR_SUCCEEDED = "twofactor_succeeded"
    TWOFACTOR_FAILED = "twofactor_failed"
    TWOFACTOR_LOCKED_OUT = "twofactor_locked_out"
    TWOFACTOR_ADMIN_RESET = "twofactor_admin_reset"
    RECOVERY_CODE_USED = "recovery_code_used"
    RECOVERY_CODES_REGENERATED = "recovery_codes_regenerated"


@dataclass
class Transaction:
    """Collects journal rows and the signals to send once the transaction commits."""

    db: Any
    models: Models
    signals: list[tuple[NamedSignal, dict[str, Any]]] = field(default_factory=list)

    def record(
        self,
        kind: EventKind,
        *,
        actor: str,
        user_id: Any = None,
        address: EmailAddress | str | None = None,
        signal: NamedSignal | None = None,
        **details: Any,
    ) -> None:
        """Add a journal row to this transaction and queue ``signal`` for after the commit.

        ``details`` must be JSON-serialisable and must never hold secrets or tokens.
        """
        address_id = None
        address_text = None
        if isinstance(address, str):
            address_text = address
        elif address is not None:
            if address.id is None:
                self.db.session.flush()  # the journal row needs the new row's id
            address_id = address.id
            address_text = address.address
            if user_id is None:
                user_id = address.user_id
        self.db.session.add(
            self.models.Event(
                kind=kind.value,
                user_id=user_id,
                address_id=address_id,
                address=address_text,
                details=details,
                actor=actor,
                created_at=utcnow(),
            )
        )
        if signal is not None:
            self.signals.append((signal, {"user_id": user_id, "address": address_text, **details}))


@contextmanager
def transaction(db: Any, models: Models) -> Iterator[Transaction]:
    """Run a block as one transaction: commit with its journal rows, then send its signals.

    On any exception the session is rolled back and no signal is sent.
    """
    tx = Transaction(db, models)
    try:
        yield tx
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    for signal, kwargs in tx.signals:
        signal.send(app, **kwargs)
