""" "This wasn't me": the single-use link in the notices that follow a password change, and the
lock-back it triggers.

A reset that gets through (a stale check, a host flow that forgot to ask, a sale no public
data shows) gives the attacker a password; on an account without 2FA they then enrol their
own authenticator. So every password change mails the account's *other* safe addresses a
link (valid ``DOMAINGUARD_UNDO_WITHIN``), and so does a 2FA enrolment within that time of a
reset. Following it (``GET`` shows a page, ``POST`` acts) locks the account back to its owner,
in one transaction:

- every session and remember cookie of the user ends (the session epoch is raised);
- the 2FA device and recovery codes made since the change are removed;
- the current password stops logging in until a reset through a safe address
  (:func:`.passwords.is_locked`);
- the address the reset went to is unverified (reason ``manual``): it sends no more resets
  and only its owner, logged in with 2FA, can verify it again;
- the journal records ``account_locked`` and the ``account_locked`` signal is sent.

A link is bound to the address it was mailed to: it dies when that address is no longer
verified and safe, and it works once. Whoever holds a safe address of the account can
already reset its password, so the link gives no one more power than that address has.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app

from . import signals, tokens
from .addresses.store import unverify
from .journal import EventKind, transaction
from .links import external_link
from .mail.outgoing import notify_user, send_mail
from .mail.recipients import is_safe_recipient, safe_addresses
from .models import UnverifyReason
from .timeutil import utcnow
from .users import ensure_state, fingerprint, raise_session_epoch, state_of

if TYPE_CHECKING:
    from .context import Guard
    from .models import EmailAddress

log = logging.getLogger(__name__)


# -- links -------------------------------------------------------------------------------------


def _binding_text(row: EmailAddress) -> str:
    # verified_at: a link mailed before the address lost its verified state dies with it.
    verified = row.verified_at.isoformat() if row.verified_at else ""
    return f"{row.user_id}|{row.address}|{verified}"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _micros(when: datetime) -> int:
    # Exact to the microsecond: a device enrolled a moment before the change is not "since".
    return (when - _EPOCH) // timedelta(microseconds=1)


def undo_token(row: EmailAddress, *, changed_at: datetime, via_id: int | None) -> str:
    """A "this wasn't me" token mailed to ``row`` about the change made at ``changed_at``."""
    return tokens.issue(
        tokens.UNDO,
        {
            "u": str(row.user_id),
            "a": row.id,
            "r": via_id,
            "c": _micros(changed_at),
            "b": tokens.bind(tokens.UNDO, _binding_text(row)),
        },
    )


def undo_link(token: str) -> str:
    """The link in the notice, on ``DOMAINGUARD_EXTERNAL_URL`` (never the ``Host`` header)."""
    return external_link("domainguard.undo_change", token=token)


def send_notices(
    guard: Guard,
    user_id: Any,
    template: str,
    *,
    changed_at: datetime,
    via_id: int | None,
    **context: Any,
) -> list[str]:
    """Mail ``template`` to each safe address of the user but ``via_id``, each with its own
    "this wasn't me" link.

    :returns: the recipients.
    """
    recipients = safe_addresses(guard, user_id, exclude_id=via_id)
    if not recipients:
        return []
    EmailAddress = guard.models.EmailAddress
    rows = guard.db.session.scalars(
        sa.select(EmailAddress).where(EmailAddress.address.in_(recipients))
    )
    for row in rows:
        link = undo_link(undo_token(row, changed_at=changed_at, via_id=via_id))
        values: dict[str, Any] = {"app_name": current_app.name, **context}
        values.update(undo_link=link, valid_for=guard.settings.undo_within, when=changed_at)
        send_mail(guard, [row.address], template, **values)
    return recipients


def notify_enrolment_after_reset(guard: Guard, user_id: Any) -> bool:
    """After a 2FA enrolment: within ``DOMAINGUARD_UNDO_WITHIN`` of a reset, tell the other
    safe addresses, with a link that undoes the reset and the enrolment.

    :returns: whether the enrolment followed a reset (the notices were the enrolment's).
    """
    state = state_of(guard, user_id)
    if state is None or state.password_reset_at is None:
        return False
    reset_at = state.password_reset_at
    if utcnow() - reset_at > guard.settings.undo_within:
        return False
    via_id = state.password_reset_via
    via = guard.db.session.get(guard.models.EmailAddress, via_id) if via_id is not None else None
    send_notices(
        guard,
        user_id,
        "twofactor_enrolled",
        changed_at=reset_at,
        via_id=via_id,
        via=via.address if via is not None else None,
        reset_at=reset_at,
    )
    return True


# -- following a link --------------------------------------------------------------------------


@dataclass(frozen=True)
class UndoGrant:
    """An undo token that checked out.

    :param reporter: the address the link was mailed to.
    :param via: the address the reset went to, when the change was a reset (``None`` once
        removed or no longer the user's).
    :param changed_at: when the password was changed.
    """

    user: Any
    reporter: EmailAddress
    via: EmailAddress | None
    changed_at: datetime
    token: tokens.Token


def read_undo_token(guard: Guard, token: str) -> UndoGrant:
    """Check an undo token: signature, age, binding, single use, the address still safe.

    :raises flask_domainguard.tokens.TokenError: when any of these fail.
    """
    checked = tokens.read(tokens.UNDO, token, lifetime=guard.settings.undo_within)
    invalid = tokens.TokenError("This link is no longer valid.")
    claims = checked.claims
    row_id, stamp, via_id = claims.get("a"), claims.get("c"), claims.get("r")
    if type(row_id) is not int or type(stamp) is not int:
        raise invalid
    if via_id is not None and type(via_id) is not int:
        raise invalid
    Row = guard.models.EmailAddress
    row = guard.db.session.get(Row, row_id)
    if row is None or str(row.user_id) != claims.get("u"):
        raise invalid
    if not tokens.bound_to(tokens.UNDO, _binding_text(row), claims.get("b")):
        raise invalid
    if not is_safe_recipient(guard, row) or tokens.is_used(guard, checked):
        raise invalid
    user = guard.get_user(row.user_id)
    if user is None:  # pragma: no cover - rows go with their user (ON DELETE CASCADE)
        raise invalid
    via = guard.db.session.get(Row, via_id) if via_id is not None else None
    if via is not None and via.user_id != row.user_id:
        via = None
    try:
        changed_at = _EPOCH + timedelta(microseconds=stamp)
    except OverflowError:
        raise invalid from None
    return UndoGrant(user, row, via, changed_at, checked)


@dataclass(frozen=True)
class LockBack:
    """What :func:`lock_back` did."""

    user_id: Any
    twofactor_removed: bool
    recovery_codes_removed: int
    unverified: str | None
    told: tuple[str, ...]


def _remove_twofactor_since(guard: Guard, user_id: Any, since: datetime) -> tuple[bool, int]:
    TOTPDevice = guard.models.TOTPDevice
    RecoveryCode = guard.models.RecoveryCode
    session = guard.db.session
    newer = sa.or_(TOTPDevice.created_at >= since, TOTPDevice.confirmed_at >= since)
    device_ids = list(
        session.scalars(sa.select(TOTPDevice.id).where(TOTPDevice.user_id == user_id, newer))
    )
    codes = sa.select(RecoveryCode.id).where(RecoveryCode.user_id == user_id)
    if not device_ids:  # the device predates the change: only codes made since go
        codes = codes.where(RecoveryCode.created_at >= since)
    code_ids = list(session.scalars(codes))
    if code_ids:
        session.execute(sa.delete(RecoveryCode).where(RecoveryCode.id.in_(code_ids)))
    if device_ids:
        session.execute(
            sa.delete(TOTPDevice)
            .where(TOTPDevice.id.in_(device_ids))
            .execution_options(synchronize_session="fetch")
        )
    return bool(device_ids), len(code_ids)


def lock_back(guard: Guard, token: str) -> LockBack:
    """Lock the account back to its owner (the POST of the page); see the module description.

    :raises flask_domainguard.tokens.TokenError: the token is not (or no longer) good.
    """
    grant = read_undo_token(guard, token)
    user_id = grant.reporter.user_id
    with transaction(guard.db, guard.models) as tx:
        if not tokens.consume(guard, grant.token):
            raise tokens.TokenError("This link was already used.")
        raise_session_epoch(guard, user_id)
        state = ensure_state(guard, user_id)
        state.password_locked_at = utcnow()
        state.password_fingerprint = fingerprint(guard, grant.user)
        removed, codes = _remove_twofactor_since(guard, user_id, grant.changed_at)
        unverified = None
        via = grant.via
        if (
            via is not None
            and via.id != grant.reporter.id
            and unverify(tx, via, UnverifyReason.MANUAL, actor="user", undo=True)
        ):
            unverified = via.address
        tx.record(
            EventKind.ACCOUNT_LOCKED,
            actor="user",
            address=grant.reporter,
            signal=signals.account_locked,
            changed_at=grant.changed_at.isoformat(),
            twofactor_removed=removed,
            recovery_codes_removed=codes,
            unverified=unverified,
        )
    told: list[str] = []
    try:
        told = notify_user(
            guard,
            user_id,
            "account_locked",
            reset_link=_reset_page(),
            app_name=current_app.name,
        )
    except Exception:
        log.exception("could not send the account-locked notice")
    return LockBack(user_id, removed, codes, unverified, tuple(told))


def _reset_page() -> str | None:
    if "domainguard.reset_request" not in current_app.view_functions:
        return None
    return external_link("domainguard.reset_request")
