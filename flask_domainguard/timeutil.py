"""The one clock of the package: aware UTC datetimes everywhere, and one bound on awaits."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from datetime import datetime, timezone
from typing import TypeVar

T = TypeVar("T")


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime (freezegun moves it in tests)."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    """Await ``awaitable`` for at most ``seconds``; :class:`asyncio.TimeoutError` after.

    :func:`asyncio.wait_for` before Python 3.12 runs the awaitable in a task of its own
    (about 20 µs of CPU, and the sweep bounds every lookup); :func:`asyncio.timeout` (3.11+)
    bounds it in the caller's task.
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)
