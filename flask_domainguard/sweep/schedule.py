"""When a domain is checked next: after a success (by its verdict), after a failure (backoff).

Pure functions of the verdict, the settings and the clock; the store writes what they give.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..verdict import Verdict, VerdictKind

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "FAILURE_BACKOFF",
    "FAILURE_BACKOFF_CAP",
    "LAPSING_RECHECK",
    "RECHECK_JITTER",
    "next_check_after_failure",
    "next_check_after_success",
]

#: Lapsing, expiring and in-grace domains (and confirmed unsafe ones) are checked daily.
LAPSING_RECHECK = timedelta(days=1)
#: First retry delay after a failed lookup; doubled per consecutive failure, capped at a day.
FAILURE_BACKOFF = timedelta(minutes=30)
FAILURE_BACKOFF_CAP = timedelta(days=1)
#: Healthy domains are rechecked after DOMAINGUARD_RECHECK_AFTER, spread by this fraction
#: either way so that a first sweep's domains do not all come due at the same moment again.
RECHECK_JITTER = 0.1


def jitter(delta: timedelta, fraction: float) -> timedelta:
    """``delta`` spread at random by ``fraction`` either way."""
    return delta * random.uniform(1 - fraction, 1 + fraction)  # noqa: S311 - load spreading


def next_check_after_failure(failures: int, retry_after: float | None = None) -> timedelta:
    """Delay before the next check after ``failures`` failed checks in a row (at least 1).

    Exponential from :data:`FAILURE_BACKOFF`, capped at :data:`FAILURE_BACKOFF_CAP`, with
    jitter; never sooner than the server's ``Retry-After``.
    """
    exponent = min(max(failures, 1) - 1, 16)
    delay = min(FAILURE_BACKOFF * (2**exponent), FAILURE_BACKOFF_CAP)
    delay = min(jitter(delay, RECHECK_JITTER), FAILURE_BACKOFF_CAP)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(timedelta(seconds=retry_after), FAILURE_BACKOFF_CAP))
    return delay


def next_check_after_success(
    verdict: Verdict, unsafe_since: datetime | None, now: datetime, settings: Settings
) -> tuple[datetime, bool]:
    """The next check after a successful one with summary ``verdict``, and whether an unsafe
    verdict is confirmed: first seen (``unsafe_since``) at least ``CONFIRM_AFTER`` ago.

    An unsafe verdict seen first is checked again after ``CONFIRM_AFTER``; a confirmed one,
    and expiring or in-grace domains, daily (and exactly when the stage ends if sooner); a
    healthy one after ``RECHECK_AFTER``, with jitter.
    """
    if verdict.unsafe:
        if unsafe_since is None:
            return now + settings.confirm_after, False
        confirm_at = unsafe_since + settings.confirm_after
        confirmed = now >= confirm_at
        return (now + LAPSING_RECHECK if confirmed else confirm_at), confirmed
    if verdict.kind is VerdictKind.OK:
        return now + jitter(settings.recheck_after, RECHECK_JITTER), False
    next_check = now + LAPSING_RECHECK
    if verdict.until is not None and now < verdict.until < next_check:
        next_check = verdict.until
    return next_check, False
