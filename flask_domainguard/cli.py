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
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from .adopt import adopt_addresses


@click.group("domainguard")
def domainguard_cli() -> None:
    """Guard password resets against resurrected email domains."""


def guard_for_app() -> Any:
    """The current app's :class:`~flask_domainguard.DomainGuard`."""
    from .extension import DomainGuard

    return DomainGuard._state().guard


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


@domainguard_cli.command("adopt")
@click.option(
    "--verified/--unverified",
    "verified",
    default=None,
    help="Whether the host already verified these addresses (required: no default).",
)
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@with_appcontext
def adopt_command(verified: bool | None, batch_size: int, as_json: bool) -> None:
    """Import the host's existing user addresses as primary addresses.

    Reads ``DOMAINGUARD_USER_EMAIL_ATTR`` (default ``email``) of every user, in batches.
    Idempotent: addresses already stored are left alone. Invalid addresses are listed, never
    lost: fix them in the host's table and run again.

    Exit codes: 0 done; 1 done, but some addresses were invalid or taken; 2 usage error.
    """
    if verified is None:
        raise click.UsageError(
            "Say how to treat the imported addresses: --verified if your app already confirmed "
            "them by mail, --unverified if not (their owners then verify before a reset)."
        )
    guard = guard_for_app()
    total = guard.db.session.query(guard.user_model).count()
    with progress(total, "Adopting addresses") as bar:
        report = adopt_addresses(
            guard, verified=verified, batch_size=batch_size, on_batch=bar.update
        )
    if as_json:
        print_json(asdict(report))
    else:
        print_table(report.summary_rows())
        for problem in report.problems:
            click.echo(f"  user {problem.user_id}: {problem.address!r}: {problem.error}")
        if report.problems:
            click.echo(
                f"Column {current_app.config['DOMAINGUARD_USER_EMAIL_ATTR']!r} of the listed "
                "users needs fixing; run adopt again afterwards.",
                err=True,
            )
    sys.exit(1 if report.problems else 0)
