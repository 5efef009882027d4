"""Acting on a looked-up batch: judge every verified address of each domain, store the
domains' new states and schedules, journal verdict changes, plan unverifications and queue
expiry warnings, in one transaction per batch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import signals
from ..domainstate import (
    DomainState,
    advance,
    depends_on_proof,
    dns_row_values,
    evidence_source_ok,
    first_seen_baseline,
    first_seen_params,
    policy_of,
    row_values,
    verdict_for,
)
from ..journal import EventKind, transaction
from ..status.observation import Observation
from ..timeutil import utcnow
from ..verdict import SEVERITY, Verdict, VerdictKind, judge
from .notices import ExpiryWarning, deliver, queue_warnings, warnings_for
from .report import SweepReport
from .schedule import next_check_after_failure, next_check_after_success
from .store import AddressRow, Claim, SweepStore

if TYPE_CHECKING:
    from ..status.base import StatusBackend

__all__ = ["BatchApplier"]

log = logging.getLogger(__name__)


class BatchApplier:
    """Applies looked-up batches of one run to the database (:meth:`apply`).

    :param store: the run's SQL.
    :param report: the run's report, counted into.
    :param backend: the status backend the lookups went to (names its servers).
    """

    def __init__(self, store: SweepStore, report: SweepReport, backend: StatusBackend) -> None:
        self.store = store
        self.report = report
        self.backend = backend
        self.settings = store.settings
        self.policy = policy_of(store.settings)

    def _server_of(self, name: str) -> str:
        try:
            return str(self.backend.server_key(name))
        except Exception:
            return "unknown"

    def apply(self, claims: Sequence[Claim], observations: dict[str, Observation]) -> None:
        """Judge, store and schedule a batch of looked-up domains; plan unverifications.

        One transaction for the batch; verdict-change signals after its commit, expiry
        warnings mailed after that. Results for domains whose lease this run lost are
        dropped (the other sweeper acts on its own lookup), and so are results for domains a
        live check observed after the claim: older facts never overwrite newer ones (the next
        run looks again). Each domain's state moves through
        :mod:`..domainstate`, the same path as the live check's, and every verified address is
        judged by its own proof date.
        """
        if not claims:
            return
        guard, db, report = self.store.guard, self.store.guard.db, self.report
        now = utcnow()
        names = [claim.name for claim in claims]
        warnings: list[ExpiryWarning] = []
        first_seen: list[dict[str, Any]] = []
        with transaction(db, guard.models) as tx:
            ours = set(names) if self.store.dry_run else self.store.confirm_leases(names, now)
            report.lost_leases += len(names) - len(ours)
            states = self.store.load_states(ours)
            work: list[tuple[Claim, Observation, DomainState, Verdict, str | None]] = []
            superseded: list[dict[str, Any]] = []
            for claim in claims:
                if claim.name not in ours:
                    continue
                obs = observations.get(claim.name) or Observation.failed(
                    claim.name, "no lookup result", source=getattr(self.backend, "name", "")
                )
                state = states.get(claim.name) or DomainState(name=claim.name)
                if claim.superseded_by(state):
                    superseded.append({"b_name": claim.name})  # only the lease is given back
                    continue
                try:
                    new = advance(state, obs, now)
                    # A check succeeds when the lookup that speaks for the domain did: the
                    # DNS where no status server covers it, the status source elsewhere.
                    base = (
                        verdict_for(new, None, now, self.policy)
                        if evidence_source_ok(obs)
                        else judge(obs, now=now, policy=self.policy)
                    )
                except Exception:
                    log.exception("judging %s failed", claim.name)
                    obs = Observation.failed(
                        claim.name, "internal error judging the answer", source=obs.source
                    )
                    new, base = state, judge(obs, now=now, policy=self.policy)
                work.append((claim, obs, new, base, state.verdict))
            need = [
                claim.name
                for claim, _, new, base, _ in work
                if base.kind is not VerdictKind.UNKNOWN
                and (base.kind is not VerdictKind.OK or depends_on_proof(new))
            ]
            addresses = self.store.load_addresses(need)
            done: list[dict[str, Any]] = []
            failed: list[dict[str, Any]] = []
            planned: list[tuple[AddressRow, Verdict]] = []
            for claim, obs, new, base, previous in work:
                report.checked += 1
                if base.kind is VerdictKind.UNKNOWN:
                    report.errors += 1
                    report.count_verdict(VerdictKind.UNKNOWN)
                    server = self._server_of(claim.name)
                    report.errors_by_server[server] = report.errors_by_server.get(server, 0) + 1
                    failed.append(self._failure_values(claim, obs, base, now, new))
                    continue
                rows = addresses.get(claim.name, [])
                # An address without a baseline takes this sighting as its first (judged so
                # below: no baseline reads as "the current DNS is its first").
                baseline = first_seen_baseline(obs, now)
                if baseline is not None and any(r.baseline is None for r in rows):
                    first_seen.append(first_seen_params(claim.name, baseline))
                judged = [
                    (row, verdict_for(new, row.verified_at, now, self.policy, row.baseline))
                    for row in rows
                ]
                # The summary is the earliest proof's verdict, the most severe one.
                verdict = max([v for _, v in judged] or [base], key=lambda v: SEVERITY[v.kind])
                report.count_verdict(verdict.kind)
                values, confirmed = self._success_values(new, verdict, now)
                done.append(values)
                if confirmed:
                    planned.extend((row, v) for row, v in judged if v.unsafe)
                warnings.extend(warnings_for(claim.name, judged))
                if (
                    not self.store.dry_run
                    and previous != verdict.kind.value
                    and not (previous is None and verdict.kind is VerdictKind.OK)
                ):
                    # The first "ok" of a new domain is not news; every other change is.
                    tx.record(
                        EventKind.DOMAIN_VERDICT,
                        actor="sweep",
                        signal=signals.domain_verdict_changed,
                        domain=claim.name,
                        verdict=verdict.kind.value,
                        previous=previous,
                        reason=verdict.reason,
                    )
            if self.store.dry_run:
                report.planned += len(planned)
                report.warnings_sent += len(warnings)
                db.session.rollback()
                return
            self.store.write_first_seen(first_seen)
            self.store.write_domains(done, failed, superseded)
            report.planned += self.store.plan(planned, now)
            warning_jobs = queue_warnings(self.store, tx, warnings)
        report.warnings_sent += deliver(guard, warning_jobs, report)

    def _failure_values(
        self, claim: Claim, obs: Observation, base: Verdict, now: datetime, state: DomainState
    ) -> dict[str, Any]:
        # The verdict, observation and unsafe_since stay as they were: failing proves nothing.
        # A DNS sighting beside a failed status lookup is kept (it moved `state` on).
        failures = claim.failures + 1
        error = obs.error or base.reason
        if obs.dns is not None and obs.dns.evidence and obs.dns.error:
            error = obs.dns.error
        return {
            **dns_row_values(state),
            "b_name": claim.name,
            "failures": failures,
            "last_error": error[:500],
            "next_check_at": now + next_check_after_failure(failures, obs.retry_after),
        }

    def _success_values(
        self, state: DomainState, verdict: Verdict, now: datetime
    ) -> tuple[dict[str, Any], bool]:
        """The row's new values (the engine's columns and the schedule), and whether an
        unsafe verdict is confirmed: first seen at least ``CONFIRM_AFTER`` ago."""
        next_check, confirmed = next_check_after_success(
            verdict, state.unsafe_since, now, self.settings
        )
        if verdict.unsafe and state.unsafe_since is None:
            self.report.unsafe_first_seen += 1
        values = {
            "b_name": state.name,
            **row_values(state, verdict, now),
            "next_check_at": next_check,
            "failures": 0,
            "last_error": None,
        }
        return values, confirmed
