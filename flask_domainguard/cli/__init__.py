"""``flask domainguard ...``: the commands operators run.

Conventions for every command: results (tables, or one JSON object with ``--json``) on stdout;
progress bars, warnings and errors on stderr; exit codes documented in each command's help
and in docs/cli.md. Exit code 2 is always a usage error (click's own).
"""

from __future__ import annotations

import click

from .accounts import (
    adopt_command,
    reverify_command,
    twofactor_reset_command,
    twofactor_rotate_keys_command,
    unverify_command,
)
from .operations import (
    check_command,
    jobs_command,
    report_command,
    status_command,
    sweep_command,
)

__all__ = ["domainguard_cli"]


@click.group("domainguard")
def domainguard_cli() -> None:
    """Guard password resets against resurrected email domains."""


for _command in (
    sweep_command,
    check_command,
    report_command,
    status_command,
    jobs_command,
    adopt_command,
    unverify_command,
    reverify_command,
    twofactor_reset_command,
    twofactor_rotate_keys_command,
):
    domainguard_cli.add_command(_command)
