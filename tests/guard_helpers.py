"""Helpers of the verification and reset tests: the static status file, addresses, journal."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask

from flask_domainguard.journal import EventKind
from flask_domainguard.status.static import StaticBackend
from flask_domainguard.timeutil import utcnow

#: A healthy registration, as the static status file spells it.
OK = {
    "registered": True,
    "statuses": ["active"],
    "registered_at": "2001-01-01T00:00:00Z",
    "expires_at": "2031-01-01T00:00:00Z",
}
RELEASED = {"registered": False}
PENDING_DELETE = {
    "registered": True,
    "statuses": ["pending delete"],
    "registered_at": "2001-01-01T00:00:00Z",
    "expires_at": "2021-01-01T00:00:00Z",
}

_stamp = [0]


def write_status(app: Flask, data: dict[str, Any]) -> None:
    """Replace the static status file (the backend notices the new modification time)."""
    path = Path(app.config["DOMAINGUARD_STATIC_STATUS_FILE"])
    path.write_text(json.dumps(data))
    _stamp[0] += 1
    # A distinct mtime each time, however quickly the file is rewritten.
    os.utime(
        path, ns=(1_700_000_000_000_000_000 + _stamp[0], 1_700_000_000_000_000_000 + _stamp[0])
    )


def add(
    guard: Any,
    user: Any,
    address: str,
    *,
    verified_at: datetime | None = None,
    verified: bool = True,
    primary: bool = False,
) -> Any:
    """Add an address, verified (now or at ``verified_at``) unless ``verified=False``."""
    row = guard.add_address(user, address, verified=verified, primary=primary)
    if verified and verified_at is not None:
        row.verified_at = verified_at
        guard.db.session.commit()
    return row


def set_domain(
    guard: Any,
    name: str,
    *,
    checked_at: datetime | None,
    verdict: str | None = "ok",
    registered: bool | None = True,
    registered_at: datetime | None = None,
    expires_at: datetime | None = None,
    statuses: tuple[str, ...] = ("active",),
    source: str = "static",
) -> Any:
    """Put a stored observation on a Domain row (as a sweep would have left it)."""
    row = guard.db.session.get(guard.models.Domain, name)
    if row is None:
        row = guard.models.Domain(name=name, created_at=utcnow(), statuses="", failures=0)
        guard.db.session.add(row)
    row.checked_at = checked_at
    row.verdict = verdict
    row.registered = registered
    row.registered_at = registered_at
    row.expires_at = expires_at
    row.statuses = "|".join(statuses)
    row.source = source
    guard.db.session.commit()
    return row


def events(guard: Any, kind: EventKind) -> list[Any]:
    """Journal rows of one kind, oldest first."""
    Event = guard.models.Event
    return list(
        guard.db.session.scalars(
            sa.select(Event).where(Event.kind == kind.value).order_by(Event.id)
        )
    )


def unverify(guard: Any, row: Any, reason: Any) -> None:
    """Unverify an address as the sweep would."""
    from flask_domainguard.addresses.store import unverify as do_unverify
    from flask_domainguard.journal import transaction

    with transaction(guard.db, guard.models) as tx:
        do_unverify(tx, row, reason, actor="sweep")


def enrol_2fa(guard: Any, user: Any) -> None:
    """Give ``user`` a confirmed TOTP device (the secret is never used by these tests)."""
    guard.db.session.add(
        guard.models.TOTPDevice(
            user_id=guard.user_id_of(user),
            secret_encrypted="not-used",
            confirmed_at=utcnow(),
            created_at=utcnow(),
        )
    )
    guard.db.session.commit()


_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_of(html: bytes | str) -> str:
    """The CSRF token of the first form on a page."""
    text = html.decode() if isinstance(html, bytes) else html
    match = _CSRF.search(text)
    assert match, "the page has no CSRF token"
    return match.group(1)


def link_in(body: str, path: str) -> str:
    """The first URL in a mail body containing ``path``, as a path for the test client."""
    match = re.search(r"https?://[^/\s]+(/\S*" + re.escape(path) + r"\S*)", body)
    assert match, f"no {path} link in the mail"
    return match.group(1)


class CountingBackend:
    """The static backend, counting lookups by domain (``DOMAINGUARD_STATUS_BACKEND`` path)."""

    name = "static"
    calls: list[str] = []

    def __init__(self, settings: Any) -> None:
        self.inner = StaticBackend(settings.static_status_file)

    async def observe(
        self, domain: str, *, client: Any = None, timeout: float | None = None
    ) -> Any:
        CountingBackend.calls.append(domain)
        return await self.inner.observe(domain)

    def server_key(self, domain: str) -> str:
        return "static"

    async def aclose(self) -> None:
        return None


class FailingBackend:
    """A backend whose every lookup raises (a bug, a dead dependency)."""

    name = "failing"
    calls: list[str] = []

    def __init__(self, settings: Any) -> None:
        pass

    async def observe(
        self, domain: str, *, client: Any = None, timeout: float | None = None
    ) -> Any:
        FailingBackend.calls.append(domain)
        raise RuntimeError("https://status.example/?key=SECRET exploded")

    def server_key(self, domain: str) -> str:
        return "failing"

    async def aclose(self) -> None:
        return None


COUNTING = "tests.guard_helpers:CountingBackend"
FAILING = "tests.guard_helpers:FailingBackend"
