"""Test helpers for the sweep: a real Fastly-style status server on 127.0.0.1, seeding, and
an app factory the ``flask`` command can load in a subprocess.

The server speaks the Fastly domain status API (``GET /status?domain=D`` with a
``Fastly-Key`` header) from a stdlib ThreadingHTTPServer in a thread. Each domain's answer is
a flag string (``"active"``, ``"undelegated inactive"``, ...) or a fault:

- ``"500"``: HTTP 500; ``"429:<seconds>"``: HTTP 429 with ``Retry-After``;
- ``"timeout"``: answers only after :attr:`StatusServer.slow` seconds;
- ``"truncated"``: announces a longer body than it sends, then closes;
- ``"garbage"``: HTTP 200 with a body that is not JSON;
- ``"flaky:<n>:<flags>"``: HTTP 500 for the first ``n`` requests, then ``<flags>``.

It counts requests per domain (:attr:`StatusServer.hits`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa

from tests import hostapp

API_KEY = "test-fastly-key"


class StatusServer:
    """A Fastly-style status API on 127.0.0.1 with per-domain answers and faults."""

    def __init__(self) -> None:
        self.answers: dict[str, str] = {}
        self.default = "active"
        self.hits: Counter[str] = Counter()
        self.slow = 5.0
        self.delay = 0.0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if self.headers.get("Fastly-Key") != API_KEY:
                    self._send(401, b'{"msg": "bad key"}')
                    return
                domain = parse_qs(url.query).get("domain", [""])[0]
                with server.lock:
                    server.hits[domain] += 1
                    count = server.hits[domain]
                    answer = server.answers.get(domain, server.default)
                if server.delay:
                    time.sleep(server.delay)
                if answer.startswith("flaky:"):
                    _, n, flags = answer.split(":", 2)
                    answer = "500" if count <= int(n) else flags
                if answer == "500":
                    self._send(500, b'{"msg": "internal error"}')
                elif answer.startswith("429:"):
                    self._send(429, b'{"msg": "slow down"}', {"Retry-After": answer[4:]})
                elif answer == "timeout":
                    time.sleep(server.slow)
                    self._send(200, self._body(domain, "active"))
                elif answer == "truncated":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "500")
                    self.end_headers()
                    self.wfile.write(b'{"domain": "' + domain.encode())
                    self.wfile.flush()
                    self.close_connection = True
                elif answer == "garbage":
                    self._send(200, b"<html>\x00\xff not json", {"Content-Type": "text/html"})
                else:
                    self._send(200, self._body(domain, answer))

            def _body(self, domain: str, flags: str) -> bytes:
                doc = {"domain": domain, "zone": domain.rsplit(".", 1)[-1], "status": flags}
                return json.dumps(doc).encode()

            def _send(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                extra = headers or {}
                self.send_header("Content-Type", extra.pop("Content-Type", "application/json"))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/status"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> StatusServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def config(self) -> dict[str, Any]:
        """App config pointing the 'fastly' backend here."""
        return {
            "DOMAINGUARD_STATUS_BACKEND": "fastly",
            "DOMAINGUARD_FASTLY_URL": self.url,
            "DOMAINGUARD_FASTLY_API_KEY": API_KEY,
            "DOMAINGUARD_HTTP_TIMEOUT": 1.0,
            "DOMAINGUARD_SWEEP_RETRIES": 2,
        }


def seed(guard: Any, spec: dict[str, int], *, verified: bool = True) -> dict[str, list[int]]:
    """Create ``spec[domain]`` users with one verified address each; address ids by domain."""
    db = hostapp.db
    users = [hostapp.User(email=None) for count in spec.values() for _ in range(count)]
    db.session.add_all(users)
    db.session.commit()
    it = iter(users)
    ids: dict[str, list[int]] = {}
    for domain, count in spec.items():
        for n in range(count):
            user = next(it)
            row = guard.add_address(user, f"user{user.id}.{n}@{domain}", verified=verified)
            ids.setdefault(domain, []).append(row.id)
    return ids


def make_due(guard: Any, when: Any = None) -> None:
    """Make every domain due now (or at ``when``)."""
    from flask_domainguard.timeutil import utcnow

    Domain = guard.models.Domain
    hostapp.db.session.execute(sa.update(Domain).values(next_check_at=when or utcnow()))
    hostapp.db.session.commit()


def create_app() -> Any:
    """The host app for ``flask --app tests.sweep_support:create_app``; config from
    the JSON in ``SWEEP_TEST_CONFIG``."""
    config = json.loads(os.environ["SWEEP_TEST_CONFIG"])
    return hostapp.create_app(config)


def bulk_seed(
    guard: Any, domains: dict[str, int], *, first_seen: dict[str, str] | None = None
) -> None:
    """Insert users, verified addresses and due domains in bulk (fast, for many domains).

    ``first_seen`` maps domains to a verdict already seen 7 hours ago (``unsafe_since`` set),
    so that this run's check confirms it.
    """
    from flask_domainguard.timeutil import utcnow

    db = hostapp.db
    models = guard.models
    now = utcnow()
    seen = first_seen or {}
    db.session.execute(
        sa.insert(models.Domain),
        [
            {
                "name": name,
                "statuses": "",
                "failures": 0,
                "created_at": now,
                "next_check_at": now - timedelta(minutes=1),
                "verdict": seen.get(name),
                "unsafe_since": now - timedelta(hours=7) if name in seen else None,
                "checked_at": now - timedelta(hours=7) if name in seen else None,
            }
            for name in domains
        ],
    )
    total = sum(domains.values())
    start = int(db.session.scalar(sa.select(sa.func.max(hostapp.User.id))) or 0) + 1
    db.session.execute(sa.insert(hostapp.User), [{"id": start + i} for i in range(total)])
    rows = []
    user = start
    for name, count in domains.items():
        for n in range(count):
            rows.append(
                {
                    "user_id": user,
                    "address": f"u{user}.{n}@{name}",
                    "host": name,
                    "registrable": name,
                    "primary": True,
                    "verified_at": now - timedelta(days=100),
                    "created_at": now - timedelta(days=100),
                }
            )
            user += 1
    db.session.execute(sa.insert(models.EmailAddress), rows)
    db.session.commit()


def snapshot(guard: Any) -> dict[str, Any]:
    """The state a sweep is responsible for, minus the random parts (jittered schedules)."""
    db = hostapp.db
    db.session.expire_all()
    m = guard.models
    addresses = {
        a.address: (a.verified_at is not None, a.unverify_reason)
        for a in db.session.scalars(sa.select(m.EmailAddress))
    }
    domains = {
        d.name: (
            d.verdict,
            d.unsafe_since is not None,
            d.failures,
            d.lease_owner,
            d.checked_at is None,
        )
        for d in db.session.scalars(sa.select(m.Domain))
    }
    unverified_events = sorted(
        e.address
        for e in db.session.scalars(sa.select(m.Event).where(m.Event.kind == "address_unverified"))
    )
    held = sorted((h.domain, h.resolution) for h in db.session.scalars(sa.select(m.HeldAction)))
    return {
        "addresses": addresses,
        "domains": domains,
        "unverified_events": unverified_events,
        "held": held,
    }


def sweep_process(config: dict[str, Any], *args: str) -> Any:
    """Start ``flask domainguard sweep --json`` in a subprocess for ``config``."""
    return domainguard_process(config, "sweep", "--json", *args)


def domainguard_process(config: dict[str, Any], *args: str) -> Any:
    """Start ``flask domainguard ARGS`` in a subprocess for ``config``."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, SWEEP_TEST_CONFIG=json.dumps(config, default=str), PYTHONPATH=str(root))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "tests.sweep_support:create_app",
            "domainguard",
            *args,
        ],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
