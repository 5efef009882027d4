"""The enrolment rule: who must have 2FA (``DOMAINGUARD_2FA_REQUIRED_SINCE``), their grace
window, and the report of active users without it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..timeutil import utcnow
from ..users import ensure_state, state_of
from .devices import twofactor_enabled

if TYPE_CHECKING:
    from ..context import Guard


class RequirementState(str, enum.Enum):
    """Where a user stands against ``DOMAINGUARD_2FA_REQUIRED_SINCE``."""

    NOT_REQUIRED = "not_required"
    EXEMPT = "exempt"
    ENROLLED = "enrolled"
    GRACE = "grace"
    """Must enrol; may go on with a banner until ``deadline``."""
    REQUIRED = "required"
    """Must enrol before anything else."""


@dataclass(frozen=True)
class Requirement:
    """A user's standing against the 2FA rule."""

    state: RequirementState
    deadline: datetime | None = None

    @property
    def must_enrol_now(self) -> bool:
        """Whether every page but enrolment is closed to the user."""
        return self.state is RequirementState.REQUIRED


def required_threshold(since: date | None) -> datetime | None:
    """The first instant (UTC midnight) of ``DOMAINGUARD_2FA_REQUIRED_SINCE``."""
    return None if since is None else datetime.combine(since, time(), tzinfo=timezone.utc)


def is_exempt(guard: Guard, user: Any) -> bool:
    """Whether ``DOMAINGUARD_2FA_EXEMPT`` exempts the user (service accounts)."""
    callback = guard.settings.twofactor_exempt
    return bool(callback(user)) if callback is not None else False


def requirement(
    guard: Guard, user: Any, *, now: datetime | None = None, tell: bool = True
) -> Requirement:
    """Where ``user`` stands: users who logged in on or after the rule's date must enrol.

    :param tell: record now as the start of the user's grace window when it is the first
        time they are told (the gate does; reports do not).
    """
    now = now or utcnow()
    user_id = guard.user_id_of(user)
    if twofactor_enabled(guard, user_id):
        return Requirement(RequirementState.ENROLLED)
    threshold = required_threshold(guard.settings.twofactor_required_since)
    state = state_of(guard, user_id)
    if threshold is None or state is None or state.last_login_at is None:
        return Requirement(RequirementState.NOT_REQUIRED)
    if state.last_login_at < threshold:
        return Requirement(RequirementState.NOT_REQUIRED)
    if is_exempt(guard, user if isinstance(user, guard.user_model) else guard.get_user(user_id)):
        return Requirement(RequirementState.EXEMPT)
    told = state.twofactor_required_from
    if told is None:
        told = now
        if tell:
            state.twofactor_required_from = now
            guard.db.session.commit()
    deadline = told + timedelta(days=guard.settings.twofactor_grace_days)
    if now < deadline:
        return Requirement(RequirementState.GRACE, deadline)
    return Requirement(RequirementState.REQUIRED, deadline)


def record_login(guard: Guard, user: Any, *, now: datetime | None = None) -> None:
    """Store the user's last login in :class:`~flask_domainguard.models.UserState` (and
    commit): the rule applies to users who logged in on or after its date."""
    ensure_state(guard, guard.user_id_of(user)).last_login_at = now or utcnow()
    guard.db.session.commit()


@dataclass(frozen=True)
class UserWithout2FA:
    """An active user who must enrol and has not."""

    user_id: Any
    last_login_at: datetime
    required_from: datetime | None
    deadline: datetime | None


def active_users_without_2fa(guard: Guard, *, batch_size: int = 500) -> list[UserWithout2FA]:
    """Users who logged in since ``DOMAINGUARD_2FA_REQUIRED_SINCE`` without 2FA, not exempt.

    Oldest deadline first; empty when the rule is off.
    """
    threshold = required_threshold(guard.settings.twofactor_required_since)
    if threshold is None:
        return []
    UserState = guard.models.UserState
    TOTPDevice = guard.models.TOTPDevice
    enrolled = sa.select(TOTPDevice.user_id).where(TOTPDevice.confirmed_at.is_not(None))
    rows = guard.db.session.execute(
        sa.select(UserState.user_id, UserState.last_login_at, UserState.twofactor_required_from)
        .where(UserState.last_login_at >= threshold, UserState.user_id.not_in(enrolled))
        .order_by(UserState.user_id)
    ).all()
    grace = timedelta(days=guard.settings.twofactor_grace_days)
    exempt_ids: set[Any] = set()
    if guard.settings.twofactor_exempt is not None:
        pk = guard.models.user_pk
        for start in range(0, len(rows), batch_size):
            ids = [row[0] for row in rows[start : start + batch_size]]
            users = guard.db.session.scalars(sa.select(guard.user_model).where(pk.in_(ids)))
            exempt_ids.update(guard.user_id_of(u) for u in users if is_exempt(guard, u))
    result = [
        UserWithout2FA(
            user_id=user_id,
            last_login_at=last,
            required_from=told,
            deadline=told + grace if told is not None else None,
        )
        for user_id, last, told in rows
        if user_id not in exempt_ids
    ]
    far = datetime.max.replace(tzinfo=timezone.utc)
    result.sort(key=lambda u: (u.deadline or far, str(u.user_id)))
    return result
