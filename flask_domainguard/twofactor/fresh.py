"""Freshness for security changes: the password and the 2FA step each confirmed recently,
and :func:`require_fresh_2fa` for the views that need both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast, overload

from flask import current_app
from flask_login import current_user

from ..context import current_guard
from ..timeutil import utcnow
from .devices import twofactor_enabled
from .gate import DONE, challenge, current_state

F = TypeVar("F", bound=Callable[..., Any])


def freshness(within: timedelta | None = None) -> tuple[bool, bool]:
    """Whether the password and the 2FA step are each fresh (within ``within``).

    A user without 2FA has nothing to prove there: their 2FA side counts as fresh.
    """
    guard = current_guard()
    within = within if within is not None else guard.settings.twofactor_fresh_within
    state = current_state(guard)
    now = utcnow().timestamp()
    limit = within.total_seconds()

    def recent(stamp: Any) -> bool:
        return isinstance(stamp, (int, float)) and 0 <= now - stamp <= limit

    user = current_user._get_current_object()
    has_2fa = twofactor_enabled(guard, user)
    return recent(state.get("pw_at")), (not has_2fa) or (
        state["mode"] == DONE and recent(state.get("tf_at"))
    )


def is_fresh(within: timedelta | None = None) -> bool:
    """Whether the current user confirmed password and 2FA within ``within``
    (default ``DOMAINGUARD_2FA_FRESH_WITHIN``)."""
    if not current_user.is_authenticated:
        return False
    password, second = freshness(within)
    return password and second


@overload
def require_fresh_2fa(view: F, *, within: timedelta | None = None) -> F: ...


@overload
def require_fresh_2fa(
    view: None = None, *, within: timedelta | None = None
) -> Callable[[F], F]: ...


def require_fresh_2fa(
    view: F | None = None, *, within: timedelta | None = None
) -> F | Callable[[F], F]:
    """Decorate a view that changes security settings (2FA, addresses, passwords).

    The user must have re-entered the password, and passed the 2FA step, within ``within``
    (default ``DOMAINGUARD_2FA_FRESH_WITHIN``); otherwise HTML clients go to the confirmation
    page and come back, JSON clients get 401 ``reauthentication_required``. Use it as
    ``@require_fresh_2fa`` or ``@require_fresh_2fa(within=timedelta(minutes=5))``, below
    the host's ``@login_required``.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]
            if not is_fresh(within):
                return challenge(
                    "domainguard.twofactor_confirm",
                    "reauthentication_required",
                    "Confirm your password and a code from your authenticator app first.",
                )
            return func(*args, **kwargs)

        return cast("F", wrapper)

    return decorate(view) if view is not None else decorate
