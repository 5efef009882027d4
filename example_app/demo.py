"""Demo only: seeded users on demo domains, a status file covering every verdict, a mailbox page.

Nothing here belongs in a real app; it lets a person try every path offline.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
from flask import Blueprint, Flask, abort, current_app, render_template
from flask.cli import with_appcontext
from flask_mail import Message, email_dispatched

from . import guard
from .models import SentMail, User, db

bp = Blueprint("demo", __name__)

DEMO_PASSWORD = "demo-password-1"  # noqa: S105 - the published demo password

#: user name -> (address, what the demo status source says of its domain)
DEMO_USERS: dict[str, tuple[str, str]] = {
    "alice": ("alice@healthy-corp.example", "healthy: registered, renewed for years"),
    "bob": ("bob@renew-soon.example", "expiring soon: expires in 12 days"),
    "carol": ("carol@lapsing.example", "in grace: expired 10 days ago, in redemption"),
    "dave": ("dave@long-gone.example", "expired: pending delete, past grace"),
    "erin": ("erin@released.example", "released: no longer registered"),
    "frank": ("frank@resurrected.example", "re-registered: created again 2 days ago"),
    "grace": ("grace@mystery.example", "unknown: the status source cannot tell"),
    "heidi": ("heidi@gmail.com", "trusted provider: never looked up"),
}

#: user name -> a second verified address: where notices about the unsafe one go.
DEMO_OTHER_ADDRESSES: dict[str, str] = {"frank": "frank@outlook.com"}


def demo_statuses(now: datetime) -> dict[str, Any]:
    """The static status file's content, with dates relative to ``now``."""

    def iso(delta: timedelta) -> str:
        return (now + delta).strftime("%Y-%m-%dT%H:%M:%SZ")

    long_ago = iso(timedelta(days=-4000))
    return {
        "healthy-corp.example": {
            "registered": True,
            "statuses": ["active"],
            "registered_at": long_ago,
            "expires_at": iso(timedelta(days=700)),
        },
        "renew-soon.example": {
            "registered": True,
            "statuses": ["active"],
            "registered_at": long_ago,
            "expires_at": iso(timedelta(days=12)),
        },
        "lapsing.example": {
            "registered": True,
            "statuses": ["redemption period", "pending delete"],
            "registered_at": long_ago,
            "expires_at": iso(timedelta(days=-10)),
        },
        "long-gone.example": {
            "registered": True,
            "statuses": ["pending delete"],
            "registered_at": long_ago,
            "expires_at": iso(timedelta(days=-75)),
        },
        "released.example": {"registered": False},
        "resurrected.example": {
            "registered": True,
            "statuses": ["active"],
            "registered_at": iso(timedelta(days=-2)),
            "expires_at": iso(timedelta(days=363)),
        },
        "example-app.test": {
            "registered": True,
            "statuses": ["active"],
            "registered_at": long_ago,
            "expires_at": iso(timedelta(days=3000)),
        },
    }


@bp.route("/mailbox")
def mailbox() -> str:
    """Every mail the demo sent, newest first, so links and codes can be followed."""
    if not current_app.config.get("EXAMPLE_MAILBOX", True):
        abort(404)
    mails = db.session.query(SentMail).order_by(SentMail.id.desc()).limit(100).all()
    return render_template("mailbox.html", mails=mails)


def _keep_mail(app: Flask, message: Message, **_: Any) -> None:
    if "demo" not in app.blueprints:  # another app in the same process (tests)
        return
    db.session.add(
        SentMail(
            recipients=", ".join(str(r) for r in message.recipients),
            subject=message.subject or "",
            body=message.body or "",
        )
    )
    db.session.commit()


@click.command("seed")
@click.option("--fresh", is_flag=True, help="Delete the demo database first.")
@with_appcontext
def seed_command(fresh: bool) -> None:
    """Create the demo users and the demo status file (dates relative to today)."""
    if fresh:
        db.drop_all()
        db.create_all()
    now = datetime.now(timezone.utc)
    status_file = Path(current_app.config["DOMAINGUARD_STATIC_STATUS_FILE"])
    status_file.write_text(json.dumps(demo_statuses(now), indent=2))
    verified_long_ago = now - timedelta(days=400)
    created = 0
    for name, (address, _) in DEMO_USERS.items():
        if db.session.query(User).filter_by(email=address).first() is not None:
            continue
        user = User(email=address, name=name.title(), is_admin=name == "alice")
        user.set_password(DEMO_PASSWORD)
        db.session.add(user)
        db.session.commit()
        rows = [guard.add_address(user, address, primary=True, verified=True)]
        if name in DEMO_OTHER_ADDRESSES:
            rows.append(guard.add_address(user, DEMO_OTHER_ADDRESSES[name], verified=True))
        for row in rows:
            row.verified_at = verified_long_ago  # they proved their addresses a year ago
        db.session.commit()
        created += 1
    click.echo(f"Seeded {created} demo user(s); password for all: {DEMO_PASSWORD}")
    click.echo(f"Demo status source: {status_file}")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.cli.add_command(seed_command)
    email_dispatched.connect(_keep_mail)
    app.jinja_env.globals["demo_users"] = DEMO_USERS
    app.jinja_env.globals["demo_other_addresses"] = DEMO_OTHER_ADDRESSES
    app.jinja_env.globals["demo_password"] = DEMO_PASSWORD
