"""The user's TOTP device and recovery codes: enrolment, regeneration, turning 2FA off, an
admin's reset and key rotation.

Checking a code against them is :mod:`.verify`'s. Every change of 2FA state writes its
journal row in the same transaction and sends its signal after the commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from .. import signals
from ..addresses.store import addresses_of
from ..journal import EventKind, transaction
from ..mail.outgoing import notify_user
from ..timeutil import utcnow
from .crypto import (
    SecretBox,
    SecretUnreadable,
    new_recovery_codes,
    new_secret,
    normalize_recovery_code,
    provisioning_uri,
    qr_svg,
    recovery_code_hash,
)

if TYPE_CHECKING:
    from blinker import NamedSignal

    from ..context import Guard
    from ..models import TOTPDevice

log = logging.getLogger(__name__)


def device_of(guard: Guard, user_id: Any) -> TOTPDevice | None:
    """The user's TOTP device, confirmed or pending, or ``None``."""
    model = guard.models.TOTPDevice
    row: TOTPDevice | None = guard.db.session.scalar(
        sa.select(model).where(model.user_id == user_id)
    )
    return row


def confirmed_device_of(guard: Guard, user_id: Any) -> TOTPDevice | None:
    """The user's TOTP device once enrolment confirmed it, else ``None``."""
    row = device_of(guard, user_id)
    return row if row is not None and row.confirmed_at is not None else None


def twofactor_enabled(guard: Guard, user: Any) -> bool:
    """Whether the user has a confirmed TOTP device."""
    return confirmed_device_of(guard, guard.user_id_of(user)) is not None


def open_secret(guard: Guard, device: TOTPDevice) -> tuple[str, str | None]:
    """The device's TOTP secret (see :meth:`.crypto.SecretBox.open`)."""
    return SecretBox.for_settings(guard.settings).open(device.secret_encrypted)


def account_name(guard: Guard, user: Any) -> str:
    """How the account is labelled in authenticator apps: its primary address, else its id."""
    rows = addresses_of(guard, user)
    if rows:
        return rows[0].address
    fallback = getattr(user, guard.settings.user_email_attr, None)
    return str(fallback) if fallback else str(guard.user_id_of(user))


@dataclass(frozen=True)
class Enrolment:
    """What the enrolment page shows: the secret as text, its URI and QR code."""

    secret: str
    uri: str
    qr_svg: str


def start_enrolment(guard: Guard, user: Any) -> Enrolment:
    """Create (or reuse) the user's unconfirmed device and describe it for the page.

    Reusing the pending secret keeps a QR code already scanned valid across reloads.

    :raises ValueError: when the user already has confirmed 2FA.
    """
    user_id = guard.user_id_of(user)
    db = guard.db
    box = SecretBox.for_settings(guard.settings)
    device = device_of(guard, user_id)
    if device is not None and device.confirmed_at is not None:
        raise ValueError("Two-factor authentication is already on; turn it off first.")
    secret: str | None = None
    if device is not None:
        try:
            secret, _ = box.open(device.secret_encrypted)
        except SecretUnreadable:
            secret = None
    if secret is None:
        secret = new_secret()
        try:
            if device is None:
                db.session.add(
                    guard.models.TOTPDevice(
                        user_id=user_id, secret_encrypted=box.seal(secret), created_at=utcnow()
                    )
                )
            else:
                device.secret_encrypted = box.seal(secret)
            db.session.commit()
        except IntegrityError:
            # Another request of the same user created the pending device first: use it.
            db.session.rollback()
            return start_enrolment(guard, user)
    issuer = guard.settings.totp_issuer or current_app.name
    uri = provisioning_uri(secret, account=account_name(guard, user), issuer=issuer)
    return Enrolment(secret=secret, uri=uri, qr_svg=qr_svg(uri, title=f"QR code for {issuer}"))


# -- recovery codes --------------------------------------------------------------------------


def remaining_recovery_codes(guard: Guard, user: Any) -> int:
    """How many unused recovery codes the user (or user id) has."""
    RecoveryCode = guard.models.RecoveryCode
    user_id = guard.user_id_of(user)
    return int(
        guard.db.session.scalar(
            sa.select(sa.func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        )
        or 0
    )


def replace_recovery_codes(guard: Guard, user_id: Any) -> list[str]:
    """A new set of recovery codes for the user, inside the caller's transaction."""
    RecoveryCode = guard.models.RecoveryCode
    guard.db.session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = new_recovery_codes(guard.settings.recovery_codes)
    now = utcnow()
    guard.db.session.add_all(
        RecoveryCode(
            user_id=user_id,
            code_hash=recovery_code_hash(user_id, normalize_recovery_code(code) or ""),
            created_at=now,
        )
        for code in codes
    )
    return codes


def notify(guard: Guard, user_id: Any, template: str, **context: Any) -> None:
    """Mail the user a 2FA notice, best effort."""
    # The change is committed and journalled; a mail server outage must not undo it or fail
    # the request, so the notice is best effort and its failure is logged.
    try:
        notify_user(guard, user_id, template, app_name=current_app.name, **context)
    except Exception:
        log.exception("could not send the %s notice", template)


def regenerate_recovery_codes(guard: Guard, user: Any, *, actor: str = "user") -> list[str]:
    """Replace the user's recovery codes (the old set stops working at once).

    The caller makes sure the user passed a fresh password and 2FA check.

    :raises ValueError: when the user has no 2FA.
    """
    user_id = guard.user_id_of(user)
    if confirmed_device_of(guard, user_id) is None:
        raise ValueError("Turn on two-factor authentication before making recovery codes.")
    with transaction(guard.db, guard.models) as tx:
        codes = replace_recovery_codes(guard, user_id)
        tx.record(
            EventKind.RECOVERY_CODES_REGENERATED,
            actor=actor,
            user_id=user_id,
            signal=signals.recovery_codes_regenerated,
            count=len(codes),
        )
    notify(guard, user_id, "twofactor_recovery_codes_regenerated", count=len(codes))
    return codes


# -- turning it off, and key rotation -----------------------------------------------------


def _remove_factor(
    guard: Guard,
    user: Any,
    kind: EventKind,
    signal: NamedSignal,
    *,
    actor: str,
    notice: str,
    **details: Any,
) -> bool:
    """Delete the user's device and recovery codes; when 2FA was on, journal ``kind`` (with
    ``signal`` and ``details``) in the same transaction, then mail the user ``notice``.

    :returns: whether 2FA was on (nothing is journalled or mailed otherwise).
    """
    user_id = guard.user_id_of(user)
    TOTPDevice = guard.models.TOTPDevice
    RecoveryCode = guard.models.RecoveryCode
    with transaction(guard.db, guard.models) as tx:
        existed = confirmed_device_of(guard, user_id) is not None
        guard.db.session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        guard.db.session.execute(
            sa.delete(TOTPDevice)
            .where(TOTPDevice.user_id == user_id)
            .execution_options(synchronize_session="fetch")
        )
        if existed:
            tx.record(kind, actor=actor, user_id=user_id, signal=signal, **details)
    if existed:
        notify(guard, user_id, notice)
    return existed


def disable(guard: Guard, user: Any) -> bool:
    """Turn the user's 2FA off (device and recovery codes deleted); the caller checked freshness.

    :returns: whether 2FA was on.
    """
    return _remove_factor(
        guard,
        user,
        EventKind.TWOFACTOR_DISABLED,
        signals.twofactor_disabled,
        actor="user",
        notice="twofactor_disabled",
    )


def admin_reset(guard: Guard, user: Any, *, actor: str, reason: str) -> bool:
    """Remove a user's 2FA for account recovery, journalling who did it and why.

    :param actor: the operator's name, journalled as ``admin:<actor>``.
    :returns: whether the user had 2FA (nothing is journalled otherwise).
    """
    return _remove_factor(
        guard,
        user,
        EventKind.TWOFACTOR_ADMIN_RESET,
        signals.twofactor_admin_reset,
        actor=f"admin:{actor}",
        notice="twofactor_admin_reset",
        reason=reason,
    )


def rotate_keys(guard: Guard, *, batch_size: int = 500) -> tuple[int, int]:
    """Seal every stored secret under the newest key, so retired keys can be dropped.

    :returns: ``(resealed, unreadable)`` counts.
    """
    box = SecretBox.for_settings(guard.settings)
    TOTPDevice = guard.models.TOTPDevice
    resealed = unreadable = 0
    last_id = 0
    while True:
        rows = list(
            guard.db.session.scalars(
                sa.select(TOTPDevice)
                .where(TOTPDevice.id > last_id)
                .order_by(TOTPDevice.id)
                .limit(batch_size)
            )
        )
        if not rows:
            return resealed, unreadable
        for row in rows:
            last_id = row.id
            try:
                _, token = box.open(row.secret_encrypted)
            except SecretUnreadable:
                unreadable += 1
                continue
            if token is not None:
                row.secret_encrypted = token
                resealed += 1
        guard.db.session.commit()
