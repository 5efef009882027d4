"""What a sweep run did: :class:`SweepReport`, its JSON form, exit code and summary table rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..verdict import VerdictKind

__all__ = ["SweepReport"]


@dataclass
class SweepReport:
    """What a run did (or, with ``dry_run``, would do)."""

    run_id: str = ""
    dry_run: bool = False
    checked: int = 0
    skipped_trusted: int = 0
    errors: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    unsafe_first_seen: int = 0
    planned: int = 0
    unverified: int = 0
    held: int = 0
    breaker_tripped: bool = False
    warnings_sent: int = 0
    notices_sent: int = 0
    lost_leases: int = 0
    leased_elsewhere: int = 0
    leased_by_dead_runs: int = 0
    planned_elsewhere: int = 0
    planned_by_dead_runs: int = 0
    errors_by_server: dict[str, int] = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)
    attempts: int = 0
    #: Where the lookups ran: ``"thread"`` or ``"process"`` (``DOMAINGUARD_SWEEP_LOOKUPS``).
    lookups_in: str = ""
    seconds: float = 0.0

    def merge(self, other: SweepReport) -> None:
        """Add the counts of ``other`` (a chunk of the same run) to this report."""
        for name in (
            "checked",
            "errors",
            "unsafe_first_seen",
            "planned",
            "unverified",
            "held",
            "warnings_sent",
            "notices_sent",
            "lost_leases",
            "attempts",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        # What other runs hold is counted by each chunk at its end: the latest count wins.
        for name in (
            "leased_elsewhere",
            "leased_by_dead_runs",
            "planned_elsewhere",
            "planned_by_dead_runs",
        ):
            setattr(self, name, max(getattr(self, name), getattr(other, name)))
        for kind, count in other.verdicts.items():
            if count:
                self.verdicts[kind] = self.verdicts.get(kind, 0) + count
        for server, count in other.errors_by_server.items():
            self.errors_by_server[server] = self.errors_by_server.get(server, 0) + count
        self.breaker_tripped = self.breaker_tripped or other.breaker_tripped
        self.not_found += [name for name in other.not_found if name not in self.not_found]
        self.seconds += other.seconds

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepReport:
        """The report :meth:`as_dict` made (from a task result); unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        report = cls(**{key: value for key, value in data.items() if key in known})
        report.verdicts = {kind: int(n) for kind, n in report.verdicts.items() if n}
        report.errors_by_server = {k: int(n) for k, n in report.errors_by_server.items()}
        return report

    @property
    def failed_lookups(self) -> int:
        """Checked domains whose lookup failed or answered "unknown"."""
        return self.verdicts.get(VerdictKind.UNKNOWN.value, 0)

    def outcome(self, failing_share: float) -> tuple[int, str]:
        """The command's exit code and its name (docs/cli.md), most urgent first.

        :param failing_share: ``DOMAINGUARD_SWEEP_FAILING_SHARE``: the share of checked
            domains with failed lookups beyond which the run counts as mostly failed.
        """
        if self.breaker_tripped:
            return 3, "breaker_tripped"
        if self.checked and self.failed_lookups > failing_share * self.checked:
            return 5, "lookups_mostly_failed"
        if self.leased_by_dead_runs or self.planned_by_dead_runs:
            return 6, "dead_run_left_work"
        if self.errors:
            return 1, "some_errors"
        if self.checked == 0 and self.leased_elsewhere:
            return 4, "leased_elsewhere"
        return 0, "ok"

    def count_verdict(self, kind: VerdictKind | str) -> None:
        key = kind.value if isinstance(kind, VerdictKind) else kind
        self.verdicts[key] = self.verdicts.get(key, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``--json``)."""
        data = asdict(self)
        data["verdicts"] = {kind.value: self.verdicts.get(kind.value, 0) for kind in VerdictKind}
        data["seconds"] = round(self.seconds, 3)
        return data

    def summary_rows(self) -> list[tuple[str, Any]]:
        """Rows for the command's summary table."""
        would = "would be " if self.dry_run else ""
        rows: list[tuple[str, Any]] = [
            ("domains checked", self.checked),
            ("trusted domains skipped", self.skipped_trusted),
            ("lookup errors", self.errors),
        ]
        rows += [(f"  {kind}", count) for kind, count in sorted(self.verdicts.items()) if count]
        rows += [
            ("unsafe, awaiting confirmation", self.unsafe_first_seen),
            (f"addresses {would}unverified", self.unverified),
            (f"addresses {would}held for review", self.held),
            ("expiry warnings sent", self.warnings_sent),
            ("notices to other addresses", self.notices_sent),
        ]
        rows.append(("due but leased by other sweeps", self.leased_elsewhere))
        if self.leased_by_dead_runs:
            rows.append(("  of them by runs that died", self.leased_by_dead_runs))
        if self.planned_elsewhere:
            rows.append(("unverifications planned by other runs", self.planned_elsewhere))
        if self.planned_by_dead_runs:
            rows.append(("  of them by runs that died (adopted later)", self.planned_by_dead_runs))
        for server, count in sorted(self.errors_by_server.items()):
            rows.append((f"  lookup errors at {server}", count))
        if self.lost_leases:
            rows.append(("results dropped (lease lost)", self.lost_leases))
        if self.not_found:
            rows.append(("unknown domains", ", ".join(self.not_found)))
        rows.append(("seconds", f"{self.seconds:.1f}"))
        return rows
