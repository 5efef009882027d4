"""Password changes: what follows one, however it was made, and the password "this wasn't me"
disabled.

``guard.password_changed(user, actor=..., via=...)`` is the one call after a new password is
stored. DomainGuard's reset pages make it (:func:`.reset.complete_reset`); a host's own
reset or change-password page makes it after storing the password. It

- raises the user's session epoch: every other session and remember cookie ends (the caller's
  own session, when it is the user's, goes on with the new binding; see :mod:`.sessions`);
- journals ``password_reset`` (with ``via``) or ``password_changed``, and sends the signal;
- mails each of the user's *other* safe addresses a notice with a single-use "this wasn't
  me" link (:mod:`.undo`), and the reset's own address a plain notice;
- lifts a lock that "this wasn't me" set.

A host flow that forgets the call is caught at the latest when the new password first logs
in: a reset link mailed for the user (through the decorator or ``request_reset``) followed by
a password hash that differs from the one seen when it was mailed is a reset that completed,
and is treated as if the call had been made then (:func:`notice_unannounced_change`). Changes
with no reset link behind them (a hash upgraded at login) only update the record.

The lock of "this wasn't me" is a per-user flag beside the host's table
(:attr:`~.models.UserState.password_locked_at`), checked when the host's login view calls
``login_user``: the host's password column stays as it is, and so does its login view. The
lock holds the fingerprint of the password it disabled; any later change of the password
(only a reset can make one: the locked password logs nobody in) lifts it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import current_app

from . import sessions, signals, undo
from .addresses.store import find_address
from .journal import EventKind, Transaction, transaction
from .mail.outgoing import send_mail
from .mail.recipients import is_safe_recipient
from .timeutil import utcnow
from .users import ensure_state, fingerprint, raise_session_epoch, state_of

if TYPE_CHECKING:
    from .context import Guard
    from .models import EmailAddress

log = logging.getLogger(__name__)


def _row(guard: Guard, via: EmailAddress | str | None) -> EmailAddress | None:
    if via is None or not isinstance(via, str):
        return via
    return find_address(guard, via)


@dataclass(frozen=True)
class Change:
    """A password change recorded by :func:`record_change`."""

    user_id: Any
    changed_at: datetime
    via_id: int | None
    via_address: str | None
    unlocked: bool


def record_change(
    tx: Transaction,
    guard: Guard,
    user: Any,
    *,
    actor: str,
    via: EmailAddress | None,
    **details: Any,
) -> Change:
    """Record a new password inside ``tx``: epoch raised, fingerprint, reset, lock lifted."""
    user_id = guard.user_id_of(user)
    now = utcnow()
    raise_session_epoch(guard, user_id)
    state = ensure_state(guard, user_id)
    state.password_fingerprint = fingerprint(guard, user)
    unlocked = state.password_locked_at is not None
    state.password_locked_at = None
    if via is not None:
        state.password_reset_at = now
        state.password_reset_via = via.id
        state.reset_mailed_at = None
        state.reset_mailed_via = None
    if unlocked:
        details["unlocked"] = True
    tx.record(
        EventKind.PASSWORD_RESET if via is not None else EventKind.PASSWORD_CHANGED,
        actor=actor,
        user_id=user_id,
        address=via,
        signal=signals.password_reset if via is not None else signals.password_changed,
        **details,
    )
    return Change(
        user_id=user_id,
        changed_at=now,
        via_id=via.id if via is not None else None,
        via_address=via.address if via is not None else None,
        unlocked=unlocked,
    )


def after_change(guard: Guard, user: Any, change: Change) -> None:
    """What follows a committed change: the caller's session rebound, the notices mailed."""
    sessions.rebind(guard, user)
    # The password is changed either way; a mail server outage must not undo or hide it.
    try:
        undo.send_notices(
            guard,
            change.user_id,
            "password_changed",
            changed_at=change.changed_at,
            via_id=change.via_id,
            via=change.via_address,
        )
        via = (
            guard.db.session.get(guard.models.EmailAddress, change.via_id)
            if change.via_id is not None
            else None
        )
        if via is not None and is_safe_recipient(guard, via):
            # The reset's own address hears of it too, without a link: whoever reads it
            # just chose the password.
            send_mail(
                guard,
                [via.address],
                "password_changed",
                via=via.address,
                when=change.changed_at,
                undo_link=None,
                app_name=current_app.name,
            )
    except Exception:
        log.exception("could not send the password-changed notices")


def password_changed(
    guard: Guard, user: Any, *, actor: str, via: EmailAddress | str | None = None
) -> None:
    """Everything that follows a new password (see the module's description).

    :param actor: who changed it, for the journal: ``user``, ``admin:<name>``, ``system``.
    :param via: the address the reset link went to, when a reset completed (row or text);
        ``None`` for a change made while logged in.
    """
    row = _row(guard, via)
    with transaction(guard.db, guard.models) as tx:
        change = record_change(tx, guard, user, actor=actor, via=row)
    after_change(guard, user, change)


# -- reset links mailed, and changes nobody announced ----------------------------------------


def reset_mailed(guard: Guard, user: Any, row: EmailAddress) -> None:
    """Note that a reset link for ``user`` went to ``row``, with the password hash of now
    (and commit): a different hash at the next login means that link was used."""
    user_id = guard.user_id_of(user)
    state = ensure_state(guard, user_id)
    state.reset_mailed_at = utcnow()
    state.reset_mailed_via = row.id
    # Only a first fingerprint: overwriting one would hide a change made since it was taken.
    if state.password_fingerprint is None:
        state.password_fingerprint = fingerprint(guard, user)
    guard.db.session.commit()


def notice_unannounced_change(guard: Guard, user: Any) -> bool:
    """At login: treat a password changed since a reset link was mailed as a completed reset
    the host did not announce; otherwise just remember the current password's fingerprint.

    :returns: whether an unannounced reset was found (and :func:`password_changed` run).
    """
    current = fingerprint(guard, user)
    if current is None:
        return False
    user_id = guard.user_id_of(user)
    state = state_of(guard, user_id)
    if state is not None and state.password_fingerprint == current:
        mailed = state.reset_mailed_at
        if mailed is not None and utcnow() - mailed > guard.settings.reset_within:
            # That link is dead: a later new hash cannot be its doing.
            state.reset_mailed_at = state.reset_mailed_via = None
            guard.db.session.commit()
        return False
    if state is None or state.password_fingerprint is None or state.reset_mailed_at is None:
        # First sight, or a new hash with no reset behind it (a hash upgraded at login).
        ensure_state(guard, user_id).password_fingerprint = current
        guard.db.session.commit()
        return False
    via = (
        guard.db.session.get(guard.models.EmailAddress, state.reset_mailed_via)
        if state.reset_mailed_via is not None
        else None
    )
    if via is not None and via.user_id != user_id:
        via = None
    log.warning("a password reset completed without guard.password_changed(); handled at login")
    password_changed(guard, user, actor="system", via=via)
    return True


# -- the lock of "this wasn't me" ----------------------------------------------------------


def is_locked(guard: Guard, user: Any) -> bool:
    """Whether the user's current password was disabled by "this wasn't me".

    A password changed since the lock (by a reset) is not the one it disabled. Without a
    readable password hash the lock holds until :func:`password_changed` lifts it.
    """
    state = state_of(guard, guard.user_id_of(user))
    if state is None or state.password_locked_at is None:
        return False
    current = fingerprint(guard, user)
    return current is None or state.password_fingerprint in (None, current)
