"""A sweep run's record (``domainguard_sweep_run``): started, alive, and how it ended, for
``flask domainguard status``."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..timeutil import utcnow
from .report import SweepReport
from .store import table_of

if TYPE_CHECKING:
    from ..context import Guard

__all__ = ["HEARTBEAT_EVERY", "RunRecord"]

log = logging.getLogger(__name__)

#: Seconds between two heartbeats of a run's record.
HEARTBEAT_EVERY = 10.0


class RunRecord:
    """The record of run ``run_id``; writes nothing with ``dry_run``."""

    def __init__(self, guard: Guard, run_id: str, *, dry_run: bool) -> None:
        self.guard = guard
        self.run_id = run_id
        self.dry_run = dry_run
        self._beat_at = 0.0

    def start(self, started_at: datetime | None = None) -> None:
        """Write the record as running; commits."""
        if self.dry_run:
            return
        SweepRun = self.guard.models.SweepRun
        db = self.guard.db
        now = utcnow()
        if db.session.get(SweepRun, self.run_id) is None:
            db.session.add(
                SweepRun(
                    run_id=self.run_id,
                    started_at=started_at or now,
                    heartbeat_at=now,
                    outcome="running",
                    report={},
                )
            )
        db.session.commit()
        self._beat_at = time.monotonic()

    def heartbeat(self) -> None:
        """Refresh ``heartbeat_at`` (at most every :data:`HEARTBEAT_EVERY` seconds); commits."""
        if self.dry_run or time.monotonic() - self._beat_at < HEARTBEAT_EVERY:
            return
        self._beat_at = time.monotonic()
        R = table_of(self.guard.models.SweepRun)
        session = self.guard.db.session
        try:
            session.execute(
                sa.update(R).where(R.c.run_id == self.run_id).values(heartbeat_at=utcnow())
            )
            session.commit()
        except Exception:
            session.rollback()
            log.warning("could not refresh the record of sweep run %s", self.run_id)

    def end(self, report: SweepReport, failing_share: float, *, crashed: bool = False) -> None:
        """Store the run's outcome, exit code and report; commits."""
        if self.dry_run:
            return
        code, outcome = report.outcome(failing_share)
        R = table_of(self.guard.models.SweepRun)
        now = utcnow()
        values: dict[str, Any] = {
            "heartbeat_at": now,
            "finished_at": now,
            "outcome": "crashed" if crashed else outcome,
            "exit_code": None if crashed else code,
            "report": report.as_dict(),
        }
        session = self.guard.db.session
        try:
            if not session.execute(
                sa.update(R).where(R.c.run_id == self.run_id).values(values)
            ).rowcount:
                session.execute(sa.insert(R).values(run_id=self.run_id, started_at=now, **values))
            session.commit()
        except Exception:
            session.rollback()
            log.warning("could not store the outcome of sweep run %s", self.run_id)
