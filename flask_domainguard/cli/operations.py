"""Commands that run and watch the machinery: sweep, jobs, status, report, check."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import sqlalchemy as sa
from flask.cli import with_appcontext

from .. import jobs
from ..check import check_target
from ..emails import registrable_domain
from ..overview import job_rows, overview, summary_rows
from ..owners import new_run_id
from ..report import build_report, render_text
from ..sweep import Sweep
from ..sweep import apply_held as apply_held_actions
from ..sweep import dismiss_held as dismiss_actions
from .output import guard_for_app, print_json, print_table, progress


@click.command("sweep")
@click.option("--dry-run", is_flag=True, help="Look up and report; change nothing.")
@click.option("--limit", type=click.IntRange(1), help="Check at most this many domains.")
@click.option("--domain", "domains", multiple=True, help="Check this domain now (repeatable).")
@click.option("--backend", help="Status backend to use instead of DOMAINGUARD_STATUS_BACKEND.")
@click.option("--concurrency", type=click.IntRange(1, 1024), help="Lookups in flight at once.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option("--apply-held", is_flag=True, help="Re-check and apply held unverifications.")
@click.option("--dismiss-held", is_flag=True, help="Dismiss every held unverification.")
@with_appcontext
def sweep_command(
    dry_run: bool,
    limit: int | None,
    domains: tuple[str, ...],
    backend: str | None,
    concurrency: int | None,
    as_json: bool,
    apply_held: bool,
    dismiss_held: bool,
) -> None:
    """Check every due registrable domain and unverify addresses on unsafe ones.

    Run it from cron (hourly is fine: only due domains are looked up). Several sweeps may
    run at once, on several machines: they share the work through leases.

    The exit code is the most urgent that applies, in this order. Exit codes: 3 the circuit
    breaker held the unverifications for review (more than DOMAINGUARD_MAX_UNVERIFY; see
    `flask domainguard report --held`);
    5 most lookups failed (more than DOMAINGUARD_SWEEP_FAILING_SHARE of the domains checked:
    a source or network problem); 6 a run that died left work behind (domains it still
    leases, unverifications it planned, waiting for adoption); 1 done, but some lookups or
    mails failed (retried later); 4 nothing checked, because other sweeps hold the leases of
    every due domain; 0 done; 2 usage error.
    """
    guard = guard_for_app()
    if apply_held and dismiss_held:
        raise click.UsageError("Use --apply-held or --dismiss-held, not both.")
    if apply_held or dismiss_held:
        if apply_held:
            outcome = apply_held_actions(guard, backend_name=backend)
        else:
            outcome = dismiss_actions(guard)
        if as_json:
            print_json(outcome.as_dict())
        else:
            print_table((name.replace("_", " "), n) for name, n in outcome.as_dict().items())
        sys.exit(1 if outcome.errors else 0)
    names: list[str] | None = None
    unknown: list[str] = []
    if domains:
        names = []
        for raw in domains:
            name = registrable_domain(raw.strip())
            if name is None:
                raise click.BadParameter(
                    f"{raw!r} is not a registrable domain", param_hint="--domain"
                )
            names.append(name)
        Domain = guard.models.Domain
        known = set(guard.db.session.scalars(sa.select(Domain.name).where(Domain.name.in_(names))))
        unknown = [n for n in names if n not in known]
        names = [n for n in dict.fromkeys(names) if n in known]
    sweeper = Sweep(guard, backend_name=backend, dry_run=dry_run, concurrency=concurrency)
    total = len(names) if names is not None else sweeper.count_due()
    if limit is not None:
        total = min(total, limit)
    with progress(total, "Checking domains") as bar:
        report = sweeper.run(limit=limit, names=names, on_progress=bar.update)
    report.not_found = unknown
    if as_json:
        print_json(report.as_dict())
    else:
        if dry_run:
            click.echo("Dry run: nothing was changed.")
        print_table(report.summary_rows())
    code, _ = report.outcome(guard.settings.sweep_failing_share)
    if report.breaker_tripped:
        click.echo(
            f"Circuit breaker: {report.held} unverifications exceed DOMAINGUARD_MAX_UNVERIFY "
            f"({guard.settings.max_unverify}){'' if dry_run else ' and are held'}. "
            "Review them with "
            "`flask domainguard report --held`, then apply them with "
            "`flask domainguard sweep --apply-held` or drop them with "
            "`flask domainguard sweep --dismiss-held`.",
            err=True,
        )
    if code == 5:
        click.echo(
            f"{report.failed_lookups} of {report.checked} lookups failed (more than "
            f"{guard.settings.sweep_failing_share:.0%}): check the status source and the "
            "network; the failed domains are retried with backoff.",
            err=True,
        )
    if report.leased_by_dead_runs or report.planned_by_dead_runs:
        click.echo(
            f"A sweep run that died left {report.leased_by_dead_runs} domains leased and "
            f"{report.planned_by_dead_runs} unverifications planned: the leases expire and the "
            "plans are adopted by a run after DOMAINGUARD_SWEEP_LEASE "
            f"({guard.settings.sweep_lease}).",
            err=True,
        )
    if code == 4:
        click.echo(
            f"{report.leased_elsewhere} due domains are leased by another sweep; nothing to do.",
            err=True,
        )
    sys.exit(code)


@click.command("jobs")
@click.option("--retry", is_flag=True, help="Put every failed job back in the queue.")
@click.option("--drain", is_flag=True, help="Run every due job in this process, then exit.")
@click.option("--kind", "kinds", multiple=True, help="With --drain: only jobs of this kind.")
@click.option(
    "--max-seconds", type=click.FloatRange(min=0.1), help="With --drain: stop after this long."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@with_appcontext
def jobs_command(
    retry: bool, drain: bool, kinds: tuple[str, ...], max_seconds: float | None, as_json: bool
) -> None:
    """Show the job table (reset requests and mail waiting to be done); retry or drain it.

    Without options it shows the queue: pending jobs by kind, the oldest one's age, jobs
    running and their owners, failed and shed jobs. --retry puts failed jobs back; --drain
    runs every due job here (shedding load as the workers do), for cron or after an outage.

    Exit codes: 0 done (with --drain: every job ran); 1 with --drain: some jobs failed and
    wait for a retry; 3 failed jobs are in the table (without --retry or --drain); 2 usage
    error.
    """
    unknown = sorted(set(kinds) - set(jobs.KINDS))
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: the kinds are {', '.join(jobs.KINDS)}", param_hint="--kind"
        )
    guard = guard_for_app()
    result: dict[str, Any] = {}
    if retry:
        result["retried"] = jobs.retry_failed(guard)
    drained = None
    if drain:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        drained = jobs.drain(guard, new_run_id(), kinds=kinds or None, deadline=deadline)
        result["drained"] = drained.as_dict()
    stats = jobs.job_stats(guard)
    result["queue"] = stats
    if as_json:
        print_json(result)
    else:
        rows: list[tuple[str, Any]] = []
        if "retried" in result:
            rows.append(("failed jobs put back", result["retried"]))
        if drained is not None:
            rows += [
                ("jobs run", drained.done),
                ("jobs failed (retried later)", drained.failed),
                (
                    "requests shed (unknown / known)",
                    f"{drained.shed_unknown} / {drained.shed_known}",
                ),
            ]

        print_table(rows + job_rows(stats))
    if drained is not None:
        sys.exit(1 if drained.failed else 0)
    sys.exit(3 if stats["failed"] and not retry else 0)


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@with_appcontext
def status_command(as_json: bool) -> None:
    """What runs and what waits: the job queue (depth, oldest pending, running, failed and
    shed jobs), domain leases and who holds them (alive or dead), unverifications planned
    by sweep runs, the last sweep run's start, end and outcome, and the domains whose
    lookups fail, per status server. Reads the database only.

    Exit codes: 0 always (the figures are the result); 2 usage error.
    """
    data = overview(guard_for_app())
    if as_json:
        print_json(data)
    else:
        print_table(summary_rows(data))


@click.command("report")
@click.option("--held", "held_only", is_flag=True, help="Only the held unverifications.")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1), help="Rows per section."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@with_appcontext
def report_command(held_only: bool, limit: int, as_json: bool) -> None:
    """What needs a person's attention, most urgent first. Sections (their --json keys):

    \b
      at_risk      accounts whose every verified address is on a custom domain
                   and that have no 2FA (soonest expiring domain first)
      custom_only  accounts whose verified addresses are all on custom domains
      expiring     domains expiring within DOMAINGUARD_WARN_WITHIN
      in_grace     lapsing domains, and when they count as expired
      held         unverifications the circuit breaker held for review
      failing      domains whose lookups failed 3 or more times in a row
      without_2fa  active users who must enrol in 2FA and have not

    Each gives a full count and its first --limit rows. Reads stored results only.

    Exit codes: 0 always (the report itself is the result); 2 usage error.
    """
    report = build_report(guard_for_app(), only=["held"] if held_only else None, limit=limit)
    if as_json:
        print_json(report.as_dict())
    else:
        for line in render_text(report):
            click.echo(line)


@click.command("check")
@click.argument("target")
@click.option("--backend", help="Status backend to use instead of DOMAINGUARD_STATUS_BACKEND.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@with_appcontext
def check_command(target: str, backend: str | None, as_json: bool) -> None:
    """Look one domain (or an address's domain) up now and show the verdict; writes nothing.

    Exit codes: 0 safe (ok, expiring soon, in grace); 3 unsafe (released, expired,
    re-registered); 4 could not tell (the lookup failed); 2 usage error.
    """
    try:
        result = check_target(guard_for_app(), target, backend_name=backend)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="TARGET") from None
    if as_json:
        print_json(result.as_dict())
    else:
        print_table(result.rows())
    sys.exit(result.exit_code)
