"""Checking a second factor: a TOTP code at login or before a security change, a recovery
code, the password with it, and the first code that confirms an enrolment.

Each check takes one attempt from the budget of :mod:`.attempts` before it looks at the code;
a TOTP code is accepted at most once per time step, a recovery code once, even under
concurrent requests. Successes are journalled in the transaction that spends the code.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .. import signals
from ..journal import EventKind, Transaction, transaction
from ..timeutil import utcnow
from ..undo import notify_enrolment_after_reset
from ..users import check_password
from .attempts import AttemptResult, Outcome, begin, fail, succeed
from .crypto import SecretUnreadable, matching_step, normalize_recovery_code, recovery_code_hash
from .devices import (
    confirmed_device_of,
    device_of,
    notify,
    open_secret,
    remaining_recovery_codes,
    replace_recovery_codes,
)

if TYPE_CHECKING:
    from ..context import Guard
    from ..models import TOTPDevice

log = logging.getLogger(__name__)


# -- codes -----------------------------------------------------------------------------------


def _check_totp(guard: Guard, device: TOTPDevice, code: str) -> Outcome:
    """Accept ``code`` for ``device`` at most once per time step (atomically), or say why not."""
    try:
        secret, resealed = open_secret(guard, device)
    except SecretUnreadable:
        log.error("the TOTP secret of user %s cannot be decrypted", device.user_id)
        return Outcome.UNREADABLE
    now = utcnow()
    step = matching_step(secret, code, now=now, last_used_step=device.last_used_step)
    if step is None:
        replay = matching_step(secret, code, now=now) is not None
        return Outcome.REPLAY if replay else Outcome.WRONG
    TOTPDevice = guard.models.TOTPDevice
    values: dict[str, Any] = {"last_used_step": step}
    if resealed is not None:
        values["secret_encrypted"] = resealed
    # Compare-and-set: of two requests with the same code, only one moves the step forward.
    result = guard.db.session.execute(
        sa.update(TOTPDevice)
        .where(
            TOTPDevice.id == device.id,
            sa.or_(TOTPDevice.last_used_step.is_(None), TOTPDevice.last_used_step < step),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return Outcome.REPLAY
    return Outcome.OK


def _journal_success(tx: Transaction, user_id: Any, method: str, purpose: str) -> None:
    tx.record(
        EventKind.TWOFACTOR_SUCCEEDED,
        actor="user",
        user_id=user_id,
        signal=signals.twofactor_succeeded,
        method=method,
        purpose=purpose,
    )


def _totp_attempt(guard: Guard, device: TOTPDevice, code: str, purpose: str) -> Outcome:
    """Check ``code``; a success is journalled in the transaction that spends its time step."""
    with transaction(guard.db, guard.models) as tx:
        outcome = _check_totp(guard, device, code)
        if outcome is Outcome.OK:
            _journal_success(tx, device.user_id, "totp", purpose)
    guard.db.session.expire(device)
    return outcome


def verify_totp(
    guard: Guard, user: Any, code: str, *, client: str | None, purpose: str = "login"
) -> AttemptResult:
    """Check a TOTP code for ``user``: rate limited, replay refused, journalled.

    :param client: the client's address, limited alongside the user.
    :param purpose: recorded in the journal (``login``, ``confirm``).
    """
    user_id = guard.user_id_of(user)
    device = confirmed_device_of(guard, user_id)
    if device is None:
        return AttemptResult(Outcome.NOT_ENROLLED)
    locked = begin(guard, user_id, client)
    if locked is not None:
        return locked
    outcome = _totp_attempt(guard, device, code, purpose)
    if outcome is Outcome.OK:
        succeed(guard, user_id)
        return AttemptResult(Outcome.OK)
    if outcome is Outcome.UNREADABLE:
        return AttemptResult(outcome)
    return fail(guard, user_id, client, outcome, "totp", purpose)


def use_recovery_code(
    guard: Guard, user: Any, raw: str, *, client: str | None, purpose: str = "login"
) -> AttemptResult:
    """Spend one recovery code for ``user``: single use even under concurrent requests.

    A spent code mails the user's safe verified addresses, with the number left.
    """
    user_id = guard.user_id_of(user)
    if confirmed_device_of(guard, user_id) is None:
        return AttemptResult(Outcome.NOT_ENROLLED)
    locked = begin(guard, user_id, client)
    if locked is not None:
        return locked
    RecoveryCode = guard.models.RecoveryCode
    code = normalize_recovery_code(raw)
    wanted = recovery_code_hash(user_id, code) if code is not None else ""
    db = guard.db
    unused = db.session.execute(
        sa.select(RecoveryCode.id, RecoveryCode.code_hash).where(
            RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)
        )
    ).all()
    match: int | None = None
    for row_id, digest in unused:
        # Every stored digest is compared, in constant time, whichever matches.
        if hmac.compare_digest(digest, wanted) and code is not None:
            match = row_id
    remaining = 0
    if match is not None:
        with transaction(db, guard.models) as tx:
            spent = db.session.execute(
                sa.update(RecoveryCode)
                .where(RecoveryCode.id == match, RecoveryCode.used_at.is_(None))
                .values(used_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if spent.rowcount == 1:
                remaining = remaining_recovery_codes(guard, user_id)
                _journal_success(tx, user_id, "recovery_code", purpose)
                tx.record(
                    EventKind.RECOVERY_CODE_USED,
                    actor="user",
                    user_id=user_id,
                    signal=signals.recovery_code_used,
                    remaining=remaining,
                )
            else:
                match = None  # a concurrent request spent it first
    if match is None:
        return fail(guard, user_id, client, Outcome.WRONG, "recovery_code", purpose)
    succeed(guard, user_id)
    notify(guard, user_id, "twofactor_recovery_code_used", remaining=remaining)
    return AttemptResult(Outcome.OK, remaining_recovery_codes=remaining)


def confirm_identity(
    guard: Guard, user: Any, password: str, code: str | None, *, client: str | None
) -> AttemptResult:
    """Check the password, and a TOTP code when ``code`` is given, for a security change.

    One attempt from the same budget as the 2FA step, whichever part is wrong.
    """
    user_id = guard.user_id_of(user)
    device = confirmed_device_of(guard, user_id) if code is not None else None
    if code is not None and device is None:
        return AttemptResult(Outcome.NOT_ENROLLED)
    locked = begin(guard, user_id, client)
    if locked is not None:
        return locked
    if not check_password(guard, user, password):
        return fail(guard, user_id, client, Outcome.WRONG_PASSWORD, "password", "confirm")
    if device is not None and code is not None:
        outcome = _totp_attempt(guard, device, code, "confirm")
        if outcome is Outcome.UNREADABLE:
            return AttemptResult(outcome)
        if outcome is not Outcome.OK:
            return fail(guard, user_id, client, outcome, "totp", "confirm")
    succeed(guard, user_id)
    return AttemptResult(Outcome.OK)


# -- enrolment ------------------------------------------------------------------------------


def _notify_enrolment_after_reset(guard: Guard, user_id: Any) -> bool:
    # An attacker whose reset got through enrols their own authenticator next: soon after a
    # reset, the other safe addresses get a "this wasn't me" link instead of the usual notice.
    try:
        return notify_enrolment_after_reset(guard, user_id)
    except Exception:
        log.exception("could not send the enrolment-after-reset notice")
        return False


def confirm_enrolment(guard: Guard, user: Any, code: str, *, client: str | None) -> AttemptResult:
    """Turn 2FA on once ``code`` matches the pending secret; issue the recovery codes.

    :returns: a result whose ``recovery_codes`` are shown to the user once, never stored.
    """
    user_id = guard.user_id_of(user)
    device = device_of(guard, user_id)
    if device is None or device.confirmed_at is not None:
        return AttemptResult(Outcome.NOT_ENROLLED)
    locked = begin(guard, user_id, client)
    if locked is not None:
        return locked
    codes: list[str] = []
    with transaction(guard.db, guard.models) as tx:
        outcome = _check_totp(guard, device, code)
        if outcome is Outcome.OK:
            guard.db.session.execute(
                sa.update(guard.models.TOTPDevice)
                .where(guard.models.TOTPDevice.id == device.id)
                .values(confirmed_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            codes = replace_recovery_codes(guard, user_id)
            tx.record(
                EventKind.TWOFACTOR_ENROLLED,
                actor="user",
                user_id=user_id,
                signal=signals.twofactor_enrolled,
                method="totp",
                recovery_codes=len(codes),
            )
    guard.db.session.expire(device)
    if outcome is not Outcome.OK:
        return fail(guard, user_id, client, outcome, "totp", "enrol")
    succeed(guard, user_id)
    if not _notify_enrolment_after_reset(guard, user_id):
        notify(guard, user_id, "twofactor_enrolled")
    return AttemptResult(
        Outcome.OK, recovery_codes=tuple(codes), remaining_recovery_codes=len(codes)
    )
