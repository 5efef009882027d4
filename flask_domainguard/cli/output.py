"""What every command shares: the guard, progress bars, tables, JSON, argument parsing."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import click

from ..context import current_guard
from ..users import user_key


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


def iso_date(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date such as 2021-03-01 (a day, no time: it means "
            "00:00 UTC that day)."
        ) from None


def user_from_argument(guard: Any, text: str) -> Any:
    """The host user named by ``text``: one of their addresses, or their primary key."""
    if "@" in text:
        row = guard.find_address(text)
        return None if row is None else guard.get_user(row.user_id)
    try:
        key = user_key(guard, text)
    except ValueError:
        return None
    return guard.get_user(key)


def os_user() -> str:

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"
