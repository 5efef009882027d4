"""The lifecycle policy: what an observation means for an address. Pure: no I/O, no clock."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from .status.observation import Observation


class VerdictKind(str, enum.Enum):
    """Where a registrable domain stands in its lifecycle."""

    OK = "ok"
    EXPIRING_SOON = "expiring_soon"
    IN_GRACE = "in_grace"
    EXPIRED = "expired"
    RELEASED = "released"
    REREGISTERED = "reregistered"
    UNKNOWN = "unknown"


#: Kinds that make an address unfit to receive a password reset.
UNSAFE_KINDS = frozenset({VerdictKind.EXPIRED, VerdictKind.RELEASED, VerdictKind.REREGISTERED})


@dataclass(frozen=True, kw_only=True)
class Policy:
    """The tunable parts of the lifecycle policy (``DOMAINGUARD_GRACE``, ``DOMAINGUARD_WARN_WITHIN``)."""

    grace: timedelta = timedelta(days=30)
    warn_within: timedelta = timedelta(days=30)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What an observation means.

    :param kind: the lifecycle stage.
    :param unsafe: whether addresses on the domain must not receive resets.
    :param until: when ``IN_GRACE`` turns ``EXPIRED``, or when an ``EXPIRING_SOON`` domain expires.
    :param reason: one readable sentence for logs, reports and the journal.
    """

    kind: VerdictKind
    unsafe: bool
    until: datetime | None
    reason: str


def judge(
    obs: Observation,
    *,
    now: datetime,
    verified_at: datetime | None = None,
    lapse_seen_at: datetime | None = None,
    policy: Policy | None = None,
) -> Verdict:
    """Judge ``obs`` at ``now``; implemented in the status/verdict work."""
    raise NotImplementedError
