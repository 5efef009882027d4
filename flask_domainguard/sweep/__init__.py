"""The sweep: look up every registrable domain that is due, judge it, act on the verdicts.

By concern: :mod:`.engine` (the run loop and its lookups), :mod:`.store` (the SQL of due
domains, leases and a batch's writes), :mod:`.apply` (judging a looked-up batch),
:mod:`.schedule` (when a domain is checked next), :mod:`.notices` (expiry warnings and
unverify notices), :mod:`.breaker` (the circuit breaker), :mod:`.held` (held actions),
:mod:`.runs` (the run's record) and :mod:`.report` (what a run did).
"""

from __future__ import annotations

from .engine import Sweep
from .held import apply_held, dismiss_held
from .report import SweepReport
from .schedule import next_check_after_failure
from .store import PLANNED

__all__ = [
    "PLANNED",
    "Sweep",
    "SweepReport",
    "apply_held",
    "dismiss_held",
    "next_check_after_failure",
]
