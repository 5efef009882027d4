"""``flask domainguard ...``: the commands operators run.

Conventions for every command: results (tables, or one JSON object with ``--json``) on stdout;
progress bars, warnings and errors on stderr; exit codes documented in each command's help
and in docs/cli.md. Exit code 2 is always a usage error (click's own).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import date
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from .adopt import adopt_addresses
from .context import current_guard


@click.group("domainguard")
def domainguard_cli() -> None:
    """Guard password resets against resurrected email domains."""


def guard_for_app() -> Any:
    """The current app's :class:`~flask_domainguard.DomainGuard`."""
    return current_guard()


@contextmanager
def progress(total: int | None, label: str) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal, silent otherwise (cron, CI, pipes)."""
    if sys.stderr.isatty():
        bar: Any
        with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
            yield bar
    else:

        class _Silent:
            def update(self, n: int) -> None:
                pass

        yield _Silent()


def print_table(rows: Iterable[tuple[str, Any]]) -> None:
    """Print ``name  value`` rows aligned, on stdout."""
    rows = list(rows)
    width = max((len(name) for name, _ in rows), default=0)
    for name, value in rows:
        click.echo(f"{name.ljust(width)}  {value}")


def print_json(data: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _iso_date(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date such as 2021-03-01 (a day, no time: it means "
            "00:00 UTC that day)."
        ) from None


@domainguard_cli.command("adopt")
@click.option(
    "--verified/--unverified",
    "verified",
    default=None,
    help="Whether the host already verified these addresses (required: no default).",
)
@click.option(
    "--verified-since",
    metavar="DATE",
    callback=_iso_date,
    help="With --verified: the date (ISO, 00:00 UTC) your app proved these addresses; no "
    "later than the first confirmation it could have sent. Wins over "
    "DOMAINGUARD_USER_CREATED_ATTR.",
)
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@with_appcontext
def adopt_command(
    verified: bool | None, verified_since: date | None, batch_size: int, as_json: bool
) -> None:
    """Import the host's existing user addresses as primary addresses.

    Reads ``DOMAINGUARD_USER_EMAIL_ATTR`` (default ``email``) of every user, in batches.
    Idempotent: addresses already stored are left alone. Invalid addresses are listed, never
    lost: fix them in the host's table and run again.

    --verified needs a proof date, never "now": --verified-since DATE for everybody, or each
    user's DOMAINGUARD_USER_CREATED_ATTR (users without a plausible one are listed, not
    adopted). --verified-since wins when both are given.

    Exit codes: 0 done; 1 done, but some addresses were invalid, taken or undated (listed);
    2 usage error.
    """
    from .adopt import AdoptError, proof_source

    if verified is None:
        raise click.UsageError(
            "Say how to treat the imported addresses: --verified if your app already confirmed "
            "them by mail, --unverified if not (their owners then verify before a reset)."
        )
    guard = guard_for_app()
    try:
        proof_source(guard, verified=verified, verified_since=verified_since)
    except AdoptError as exc:
        raise click.UsageError(str(exc)) from None
    if verified and verified_since is not None and guard.settings.user_created_attr:
        click.echo(
            f"--verified-since {verified_since.isoformat()} dates every address; "
            f"DOMAINGUARD_USER_CREATED_ATTR ({guard.settings.user_created_attr!r}) is not used "
            "in this run.",
            err=True,
        )
    total = guard.db.session.query(guard.user_model).count()
    with progress(total, "Adopting addresses") as bar:
        report = adopt_addresses(
            guard,
            verified=verified,
            verified_since=verified_since,
            batch_size=batch_size,
            on_batch=bar.update,
        )
    if as_json:
        print_json(asdict(report))
    else:
        print_table(report.summary_rows())
        for problem in report.problems:
            click.echo(f"  user {problem.user_id}: {problem.address!r}: {problem.error}")
        if report.problems:
            columns = [current_app.config["DOMAINGUARD_USER_EMAIL_ATTR"]]
            if verified and verified_since is None:
                columns.append(guard.settings.user_created_attr)
            click.echo(
                f"Column {' or '.join(repr(c) for c in columns)} of the listed users needs "
                "fixing; run adopt again afterwards.",
                err=True,
            )
    sys.exit(1 if report.problems else 0)


def _user_from_argument(guard: Any, text: str) -> Any:
    """The host user named by ``text``: one of their addresses, or their primary key."""
    if "@" in text:
        row = guard.find_address(text)
        return None if row is None else guard.get_user(row.user_id)
    try:
        python_type = guard.models.user_pk.type.python_type
    except NotImplementedError:  # pragma: no cover - exotic key types
        python_type = str
    try:
        key = python_type(text)
    except (TypeError, ValueError):
        return None
    return guard.get_user(key)


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


@domainguard_cli.command("2fa-reset")
@click.argument("user")
@click.option("--reason", required=True, help="Why: kept in the journal (ticket, check done).")
@click.option("--actor", default=None, help="Who does it; default the OS user name.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@with_appcontext
def twofactor_reset_command(user: str, reason: str, actor: str | None, as_json: bool) -> None:
    """Remove USER's two-factor authentication for account recovery.

    USER is a user id or one of the user's addresses. The TOTP device and recovery codes are
    deleted, the journal records ``admin:<actor>`` and the reason, and the user's safe
    addresses are told. The user must enrol again at the next login when 2FA is required.

    Exit codes: 0 reset done; 1 no such user; 2 usage error; 3 the user had no 2FA.
    """
    from .twofactor import admin_reset

    if not reason.strip():
        raise click.UsageError("--reason must say why, for the journal.")
    guard = guard_for_app()
    target = _user_from_argument(guard, user)
    if target is None:
        click.echo(f"No user found for {user!r}.", err=True)
        sys.exit(1)
    who = actor or _os_user()
    done = admin_reset(guard, target, actor=who, reason=reason.strip())
    user_id = guard.user_id_of(target)
    if as_json:
        print_json({"user_id": user_id, "reset": done, "actor": f"admin:{who}"})
    else:
        print_table([("user", user_id), ("2fa removed", "yes" if done else "no (had none)")])
    sys.exit(0 if done else 3)


@domainguard_cli.command("unverify")
@click.argument("address")
@click.option(
    "--reason",
    required=True,
    type=click.Choice(["bounce", "manual"]),
    help="bounce: mail to it bounces for good; manual: an administrator's decision.",
)
@click.option("--actor", default=None, help="Who does it; default the OS user name.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@with_appcontext
def unverify_command(address: str, reason: str, actor: str | None, as_json: bool) -> None:
    """Unverify ADDRESS: no resets or account mail go there until its owner verifies it again.

    For an address whose mail bounces for good, or one an administrator no longer trusts.
    Journalled as ``admin:<actor>`` with the reason, and sent as the ``address_unverified``
    signal. The owner verifies it again with a new link (``/domainguard/verify/``).

    Exit codes: 0 unverified; 1 no such address; 2 usage error; 3 it was not verified,
    nothing changed.
    """
    from .addresses import UnknownAddress

    guard = guard_for_app()
    who = f"admin:{actor or _os_user()}"
    try:
        changed = guard.unverify(address, reason=reason, actor=who)
    except UnknownAddress as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    row = guard.find_address(address)
    if as_json:
        print_json({"address": row.address, "unverified": changed, "reason": reason, "actor": who})
    else:
        print_table(
            [
                ("address", row.address),
                ("unverified", "yes" if changed else "no (it was not verified)"),
                ("reason", reason),
            ]
        )
    sys.exit(0 if changed else 3)


@domainguard_cli.command("2fa-rotate-keys")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@with_appcontext
def twofactor_rotate_keys_command(as_json: bool) -> None:
    """Re-encrypt every TOTP secret with the first key of DOMAINGUARD_TOTP_KEYS.

    Run it after putting a new key first; afterwards the older keys can be dropped.

    Exit codes: 0 done; 1 some secrets open under no configured key; 2 usage error.
    """
    from .twofactor import rotate_keys

    resealed, unreadable = rotate_keys(guard_for_app())
    if as_json:
        print_json({"resealed": resealed, "unreadable": unreadable})
    else:
        print_table([("re-encrypted", resealed), ("unreadable", unreadable)])
    sys.exit(1 if unreadable else 0)


@domainguard_cli.command("sweep")
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
    import sqlalchemy as sa

    from .emails import registrable_domain
    from .sweep import Sweep
    from .sweep import apply_held as apply_held_actions
    from .sweep import dismiss_held as dismiss_actions

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


@domainguard_cli.command("jobs")
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
    import time

    from . import jobs
    from .runid import new_run_id

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
        from .overview import job_rows

        print_table(rows + job_rows(stats))
    if drained is not None:
        sys.exit(1 if drained.failed else 0)
    sys.exit(3 if stats["failed"] and not retry else 0)


@domainguard_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@with_appcontext
def status_command(as_json: bool) -> None:
    """What runs and what waits: the job queue (depth, oldest pending, running, failed and
    shed jobs), domain leases and who holds them (alive or dead), unverifications planned
    by sweep runs, the last sweep run's start, end and outcome, and the domains whose
    lookups fail, per status server. Reads the database only.

    Exit codes: 0 always (the figures are the result); 2 usage error.
    """
    from .overview import overview, summary_rows

    data = overview(guard_for_app())
    if as_json:
        print_json(data)
    else:
        print_table(summary_rows(data))


@domainguard_cli.command("report")
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
    from .report import build_report, render_text

    report = build_report(guard_for_app(), only=["held"] if held_only else None, limit=limit)
    if as_json:
        print_json(report.as_dict())
    else:
        for line in render_text(report):
            click.echo(line)


@domainguard_cli.command("check")
@click.argument("target")
@click.option("--backend", help="Status backend to use instead of DOMAINGUARD_STATUS_BACKEND.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@with_appcontext
def check_command(target: str, backend: str | None, as_json: bool) -> None:
    """Look one domain (or an address's domain) up now and show the verdict; writes nothing.

    Exit codes: 0 safe (ok, expiring soon, in grace); 3 unsafe (released, expired,
    re-registered); 4 could not tell (the lookup failed); 2 usage error.
    """
    from .check import check_target

    try:
        result = check_target(guard_for_app(), target, backend_name=backend)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="TARGET") from None
    if as_json:
        print_json(result.as_dict())
    else:
        print_table(result.rows())
    sys.exit(result.exit_code)


@domainguard_cli.command("reverify")
@click.argument("address")
@click.option("--send", is_flag=True, help="Mail a new verification link if the domain is safe.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@with_appcontext
def reverify_command(address: str, send: bool, as_json: bool) -> None:
    """Look ADDRESS's domain up live, show the verdict, and with --send mail a new link.

    The link goes out only when the domain is safe for a new verification, and is journalled
    as sent by ``admin:<your login name>``. An address that lost its verification to its
    domain still needs its owner logged in (with 2FA) to confirm the link. Mailing needs
    DOMAINGUARD_EXTERNAL_URL (or SERVER_NAME), to build the link outside a request.

    Exit codes: 0 the domain is safe (the link was sent with --send, unless the address is
    already verified); 1 no such address; 3 unsafe, nothing sent; 4 the lookup failed,
    nothing sent; 2 usage error.
    """
    import getpass

    from .addresses import UnknownAddress
    from .verification import reverify

    if send and not (
        guard_for_app().settings.external_url or current_app.config.get("SERVER_NAME")
    ):
        raise click.UsageError(
            "--send builds a link outside a request: set DOMAINGUARD_EXTERNAL_URL (e.g. "
            "'https://example.com') or SERVER_NAME in the app's config."
        )
    try:
        login = getpass.getuser()
    except Exception:  # no login name in some containers
        login = "cli"
    try:
        report = reverify(guard_for_app(), address, send=send, actor=f"admin:{login}")
    except UnknownAddress as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if as_json:
        print_json(asdict(report))
    else:
        print_table(report.rows())
    sys.exit(report.exit_code)
