"""Attacks on the sweep's lookups in a child process and on observations applied as they come
in (:mod:`flask_domainguard.lookupprocess`, :meth:`flask_domainguard.sweep.Sweep.run`), by the
new owner of a lapsed email domain, against a real status server on 127.0.0.1.

The attacker registered ``a-lapsed.com`` after it expired: its old owner's account still has a
verified address there. Each test is an attempt to get a reset mailed there, to keep the sweep
from unverifying the address, or to get the domain stored as safe; each says which defence
stops it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from flask_domainguard.status.fastly import FastlyBackend
from flask_domainguard.sweep import Sweep
from tests import hostapp
from tests.sweep_support import StatusServer, seed

pytestmark = [
    pytest.mark.use_status_server,
    pytest.mark.skipif(sys.platform != "linux", reason="the lookup process forks: Linux only"),
]

LAPSED = "a-lapsed.com"


def domain_row(guard: Any, name: str) -> Any:
    hostapp.db.session.expire_all()
    return hostapp.db.session.get(guard.models.Domain, name)


def wait_for_hit(server: StatusServer, name: str, seconds: float = 5.0) -> None:
    """Wait until ``name``'s lookup has reached the server (its answer is chosen then)."""
    deadline = time.monotonic() + seconds
    while server.hits[name] < 1:
        assert time.monotonic() < deadline, f"no lookup of {name} reached the server"
        time.sleep(0.01)


@pytest.mark.parametrize("where", ["thread", "process"])
@pytest.mark.settings(
    DOMAINGUARD_SWEEP_BATCH_SIZE=2,
    DOMAINGUARD_SWEEP_CONCURRENCY=2,
    DOMAINGUARD_SWEEP_PER_SERVER=2,
    DOMAINGUARD_HTTP_TIMEOUT=6,
)
def test_a_slow_stale_sweep_answer_never_overwrites_the_reset_time_check(
    guard: Any, status_server: StatusServer, where: str
) -> None:
    # The attacker makes the sweep's lookup of the domain slow: the registry's answer is
    # read ("active", from before the drop) and arrives 2.5 s later. Meanwhile a reset request
    # looks the domain up live and sees it released. If the sweep's older answer were applied
    # over the live check, the domain would be stored "ok", checked just now: the next reset
    # request would take that as evidence and mail the attacker.
    # Defence: Claim.superseded_by (sweep/apply.py drops a result older than a live check).
    status_server.slow = 2.5
    status_server.delay = 0.05
    status_server.answers[LAPSED] = "timeout"
    seed(guard, {LAPSED: 1})
    seed(guard, {f"q{i:02d}.com": 1 for i in range(8)})
    victim = hostapp.db.session.scalars(
        sa.select(guard.models.EmailAddress.address).where(
            guard.models.EmailAddress.registrable == LAPSED
        )
    ).one()
    decisions: list[Any] = []

    def reset_requested_meanwhile(count: int) -> None:
        if decisions:
            return
        wait_for_hit(status_server, LAPSED)  # the sweep's (stale) answer is chosen
        status_server.answers[LAPSED] = "undelegated inactive"  # dropped: anyone can buy it
        decisions.append(guard.reset_decision(victim))

    report = Sweep(guard, retry_base=0.01, lookups=where).run(
        names=[LAPSED, *(f"q{i:02d}.com" for i in range(8))],
        on_progress=reset_requested_meanwhile,
    )
    assert decisions and decisions[0].allowed is False
    assert status_server.hits[LAPSED] == 2, "the sweep's lookup and the live one"
    row = domain_row(guard, LAPSED)
    assert "inactive" in (row.statuses or ""), "the live check's facts stand"
    assert row.verdict == "released"
    assert row.lease_owner is None
    assert guard.reset_decision(victim).allowed is False
    assert report.checked == 8, "the superseded answer is not counted as a check"


@pytest.mark.parametrize("where", ["thread", "process"])
@pytest.mark.settings(
    DOMAINGUARD_SWEEP_LEASE=1,
    DOMAINGUARD_SWEEP_BATCH_SIZE=2,
    DOMAINGUARD_SWEEP_CONCURRENCY=2,
    DOMAINGUARD_SWEEP_PER_SERVER=2,
    DOMAINGUARD_HTTP_TIMEOUT=6,
)
def test_a_domain_claimed_again_after_a_live_check_keeps_its_first_claim(
    guard: Any, status_server: StatusServer, where: str
) -> None:
    # As above, and the sweep's 1 s lease on the domain runs out while its slow lookup runs:
    # the run claims it again (it is named twice), *after* the live check. Judged by the second
    # claim's time, the live check would look older than the sweep's answer, and the stale
    # "active" would be stored over "released".
    # Defence: Sweep.run keeps a domain's first claim (sweep/engine.py, `fresh`).
    status_server.slow = 4.0
    status_server.delay = 0.06
    status_server.answers[LAPSED] = "timeout"
    quick = [f"q{i:02d}.com" for i in range(24)]
    seed(guard, {LAPSED: 1})
    seed(guard, dict.fromkeys(quick, 1))
    victim = hostapp.db.session.scalars(
        sa.select(guard.models.EmailAddress.address).where(
            guard.models.EmailAddress.registrable == LAPSED
        )
    ).one()
    decisions: list[Any] = []

    def reset_requested_meanwhile(count: int) -> None:
        if not decisions:
            wait_for_hit(status_server, LAPSED)
            status_server.answers[LAPSED] = "undelegated inactive"
            decisions.append(guard.reset_decision(victim))

    sweep = Sweep(guard, retry_base=0.01, lookups=where)
    claimed: list[str] = []
    claim = sweep.store.claim

    def noting_claims(size: int, names: Any = None) -> Any:
        claims = claim(size, names)
        claimed.extend(c.name for c in claims)
        return claims

    sweep.store.claim = noting_claims  # type: ignore[method-assign]
    sweep.run(
        names=[LAPSED, *quick[:20], LAPSED, *quick[20:]], on_progress=reset_requested_meanwhile
    )
    assert claimed.count(LAPSED) == 2, "claimed again"
    assert status_server.hits[LAPSED] == 2, "while its lookup ran: no second lookup"
    assert decisions and decisions[0].allowed is False
    row = domain_row(guard, LAPSED)
    assert "inactive" in (row.statuses or ""), "the live check's facts stand"
    assert row.verdict == "released"
    assert row.lease_owner is None
    assert guard.reset_decision(victim).allowed is False


class DripServer:
    """A Fastly-style API on 127.0.0.1 that answers ``active`` at once, except for ``drip``:
    a 200 whose body comes one byte every 0.2 s for 30 s (it never trips a read timeout)."""

    def __init__(self, drip: str) -> None:
        self.drip = drip
        self.stop_dripping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                domain = parse_qs(urlsplit(self.path).query).get("domain", [""])[0]
                body = json.dumps({"domain": domain, "zone": "com", "status": "active"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if domain != server.drip:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_header("Content-Length", "100000")
                self.end_headers()
                deadline = time.monotonic() + 30
                try:
                    while time.monotonic() < deadline and not server.stop_dripping.is_set():
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass  # the client gave up
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/status"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop_dripping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("where", ["thread", "process"])
@pytest.mark.settings(DOMAINGUARD_HTTP_TIMEOUT=1.0, DOMAINGUARD_SWEEP_RETRIES=1)
def test_a_status_answer_dripped_forever_fails_within_the_timeout(guard: Any, where: str) -> None:
    # The attacker makes the answer for its domain arrive one byte at a time: no read ever
    # times out, so only a clock around the whole exchange ends it. The Fastly backend is
    # marked keeps_its_timeout, so Lookups puts no clock of its own around it: the sweep
    # would wait as long as the attacker likes (and, in a child process, be killed by the
    # watchdog and stop, applying nothing).
    # Defence: fetch_json's own bound (status/http.py, within(_fetch(...), timeout)).
    drip = DripServer(LAPSED)
    try:
        backend = FastlyBackend(guard.settings, url=drip.url)
        seed(guard, {LAPSED: 1, "fine.com": 1})
        started = time.monotonic()
        report = Sweep(guard, backend=backend, retry_base=0.01, lookups=where).run()
        took = time.monotonic() - started
    finally:
        drip.close()
    assert took < 10, f"the sweep waited {took:.1f} s for a dripping answer"
    assert report.checked == 2 and report.errors == 1
    row = domain_row(guard, LAPSED)
    assert row.verdict is None and row.checked_at is None, "a failed lookup, not an answer"
    assert row.failures == 1 and "timed out" in (row.last_error or "")
    assert domain_row(guard, "fine.com").verdict == "ok"
