"""Commands on accounts and addresses: adopt, unverify, reverify, 2fa-reset, 2fa-rotate-keys."""

from __future__ import annotations

import sys
from dataclasses import asdict
from datetime import date

import click
from flask import current_app
from flask.cli import with_appcontext

from ..addresses.reverify import reverify
from ..addresses.store import UnknownAddress
from ..adopt import AdoptError, adopt_addresses, proof_source
from ..twofactor.devices import admin_reset, rotate_keys
from .output import (
    guard_for_app,
    iso_date,
    os_user,
    print_json,
    print_table,
    progress,
    user_from_argument,
)


@click.command("adopt")
@click.option(
    "--verified/--unverified",
    "verified",
    default=None,
    help="Whether the host already verified these addresses (required: no default).",
)
@click.option(
    "--verified-since",
    metavar="DATE",
    callback=iso_date,
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


@click.command("2fa-reset")
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
    if not reason.strip():
        raise click.UsageError("--reason must say why, for the journal.")
    guard = guard_for_app()
    target = user_from_argument(guard, user)
    if target is None:
        click.echo(f"No user found for {user!r}.", err=True)
        sys.exit(1)
    who = actor or os_user()
    done = admin_reset(guard, target, actor=who, reason=reason.strip())
    user_id = guard.user_id_of(target)
    if as_json:
        print_json({"user_id": user_id, "reset": done, "actor": f"admin:{who}"})
    else:
        print_table([("user", user_id), ("2fa removed", "yes" if done else "no (had none)")])
    sys.exit(0 if done else 3)


@click.command("unverify")
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
    guard = guard_for_app()
    who = f"admin:{actor or os_user()}"
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


@click.command("2fa-rotate-keys")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@with_appcontext
def twofactor_rotate_keys_command(as_json: bool) -> None:
    """Re-encrypt every TOTP secret with the first key of DOMAINGUARD_TOTP_KEYS.

    Run it after putting a new key first; afterwards the older keys can be dropped.

    Exit codes: 0 done; 1 some secrets open under no configured key; 2 usage error.
    """
    resealed, unreadable = rotate_keys(guard_for_app())
    if as_json:
        print_json({"resealed": resealed, "unreadable": unreadable})
    else:
        print_table([("re-encrypted", resealed), ("unreadable", unreadable)])
    sys.exit(1 if unreadable else 0)


@click.command("reverify")
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
    if send and not (
        guard_for_app().settings.external_url or current_app.config.get("SERVER_NAME")
    ):
        raise click.UsageError(
            "--send builds a link outside a request: set DOMAINGUARD_EXTERNAL_URL (e.g. "
            "'https://example.com') or SERVER_NAME in the app's config."
        )
    try:
        report = reverify(guard_for_app(), address, send=send, actor=f"admin:{os_user()}")
    except UnknownAddress as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if as_json:
        print_json(asdict(report))
    else:
        print_table(report.rows())
    sys.exit(report.exit_code)
