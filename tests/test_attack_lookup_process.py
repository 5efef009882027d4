"""Attacks on the sweep's lookups in a child process and on observations applied as they come
in (:mod:`flask_domainguard.lookupprocess`, :meth:`flask_domainguard.sweep.Sweep.run`), by the
new owner of a lapsed email domain, against a real status server on 127.0.0.1.

The attacker registered ``a-lapsed.com`` after it expired: its old owner's account still has a
verified address there. Each test is an attempt to get a reset mailed there, to keep the sweep
from unverifying the address, or to get the domain stored as safe; each says which defence
stops it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import pickle
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from flask import Flask

from flask_domainguard import lookupprocess
from flask_domainguard.lookupprocess import LookupProcess, LookupProcessError
from flask_domainguard.lookups import LookupLimits
from flask_domainguard.lookupthread import LookupThread
from flask_domainguard.status.fastly import FastlyBackend
from flask_domainguard.status.observation import Observation
from flask_domainguard.status.urls import Endpoint
from flask_domainguard.sweep import Sweep
from flask_domainguard.timeutil import utcnow
from tests import hostapp
from tests.sweep_support import API_KEY, StatusServer, bulk_seed, seed

pytestmark = [
    pytest.mark.use_status_server,
    pytest.mark.skipif(sys.platform != "linux", reason="the lookup process forks: Linux only"),
]

LAPSED = "a-lapsed.com"


def domain_row(guard: Any, name: str) -> Any:
    # A new transaction, so a fresh snapshot (MariaDB reads repeatably within one).
    hostapp.db.session.rollback()
    return hostapp.db.session.get(guard.models.Domain, name)


def by_domain(guard: Any, column: str) -> dict[str, Any]:
    """``column`` of each domain's (one) address."""
    Address = guard.models.EmailAddress
    # A new transaction, so a fresh snapshot (MariaDB reads repeatably within one).
    hostapp.db.session.rollback()
    query = sa.select(Address.registrable, getattr(Address, column))
    return {name: value for name, value in hostapp.db.session.execute(query)}


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
    claimed: list[str] = []
    first_claim = [0.0]
    sweep = Sweep(guard, retry_base=0.01, lookups=where)
    claim = sweep.store.claim

    def claim_after_a_reset_request(size: int, names: Any = None) -> Any:
        if LAPSED in (names or ()) and LAPSED in claimed:
            # Its second mention: a reset request looks the domain up live (it has been
            # dropped), and the claim waits until the sweep's lease has run out, so that it
            # claims the domain again (its lookup has more than two seconds to go).
            wait_for_hit(status_server, LAPSED)
            status_server.answers[LAPSED] = "undelegated inactive"
            decisions.append(guard.reset_decision(victim))
            time.sleep(max(0.0, first_claim[0] + 1.2 - time.monotonic()))
        claims = claim(size, names)
        if not claimed:
            first_claim[0] = time.monotonic()
        claimed.extend(c.name for c in claims)
        return claims

    sweep.store.claim = claim_after_a_reset_request  # type: ignore[method-assign]
    sweep.run(names=[LAPSED, *quick[:4], LAPSED, *quick[4:]])
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


@dataclass(frozen=True, kw_only=True)
class ExplainedObservation(Observation):
    """A host backend's observation that keeps the exception behind a failed lookup."""

    cause: BaseException | None = None


class ExplainingBackend:
    """A host's own backend on the status API: it keeps ``raise_for_status``'s exception.
    An :class:`httpx.HTTPStatusError` pickles, but does not unpickle (its ``request`` and
    ``response`` are keyword-only arguments of ``__init__``)."""

    name = "host"

    def __init__(self, url: str) -> None:
        self.url = url

    async def observe(
        self, domain: str, *, client: Any = None, timeout: float | None = None
    ) -> Observation:
        async with httpx.AsyncClient() as http:
            response = await http.get(
                self.url, params={"domain": domain}, headers={"Fastly-Key": API_KEY}
            )
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            return ExplainedObservation(
                domain=domain, registered=None, error=str(exc), source=self.name, cause=exc
            )
        flags = str(response.json()["status"]).split()
        return Observation(domain=domain, registered="inactive" not in flags, source=self.name)

    def server_key(self, domain: str) -> str:
        return "host"

    async def aclose(self) -> None:
        pass


def test_an_observation_that_cannot_be_unpickled_fails_its_lookup_and_hangs_nothing(
    status_server: StatusServer,
) -> None:
    # The attacker makes its domain's lookups fail (HTTP 500); the host's backend keeps the
    # exception in its observation. It pickles in the child but does not unpickle in the
    # parent: the reader thread must not die of it, leaving the sweep waiting for ever.
    # Defence: the child checks that what it sends can be read (lookupprocess._portable).
    status_server.answers[LAPSED] = "500"
    with LookupProcess(ExplainingBackend(status_server.url), LookupLimits(retries=0)) as lookups:
        future = lookups.submit([LAPSED, "fine.com"])
        observations = future.result(timeout=30)
        assert observations["fine.com"].registered is True
        lapsed = observations[LAPSED]
        assert lapsed.registered is None, "never an answer"
        assert "could not be passed between processes" in (lapsed.error or "")
        # The process still serves: the next lookups come back.
        assert lookups.submit(["other.com"]).result(timeout=30)["other.com"].registered is True


@pytest.mark.settings(DOMAINGUARD_SWEEP_RETRIES=0)
def test_a_sweep_whose_observation_cannot_be_unpickled_finishes(
    app: Flask, guard: Any, status_server: StatusServer
) -> None:
    status_server.answers[LAPSED] = "500"
    seed(guard, {LAPSED: 1, "fine.com": 1})
    outcome: list[Any] = []

    def sweep() -> None:
        with app.app_context():
            try:
                backend = ExplainingBackend(status_server.url)
                outcome.append(Sweep(guard, backend=backend, lookups="process").run())
            except BaseException as exc:
                outcome.append(exc)
            finally:
                hostapp.db.session.remove()

    worker = threading.Thread(target=sweep, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the sweep hangs"
    report = outcome[0]
    assert not isinstance(report, BaseException), report
    assert report.checked == 2 and report.errors == 1
    row = domain_row(guard, LAPSED)
    assert row.verdict is None and row.failures == 1 and row.lease_owner is None
    assert domain_row(guard, "fine.com").verdict == "ok"


class _NoReadBack:
    """``pickle`` as the child uses it, minus the check that what it sends can be read."""

    dumps = staticmethod(pickle.dumps)

    @staticmethod
    def loads(data: bytes) -> Any:
        return None


def test_a_message_the_parent_cannot_read_stops_the_lookups_instead_of_hanging(
    status_server: StatusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should an unreadable message reach the parent all the same (the child's check
    # switched off here), the batch fails (the sweep stops and gives its leases back).
    # Defence: LookupProcess._read's catch-all around conn.recv().
    monkeypatch.setattr(lookupprocess, "pickle", _NoReadBack)
    status_server.answers[LAPSED] = "500"
    with LookupProcess(ExplainingBackend(status_server.url), LookupLimits(retries=0)) as lookups:
        future = lookups.submit([LAPSED])
        with pytest.raises(LookupProcessError, match="unreadable"):
            future.result(timeout=30)


HOSTILE = [
    "a.com&domain=b.com",
    "a.com#frag",
    "a.com/../../admin",
    "a.com?key=x",
    "a.com\r\nX-Injected: 1",
    "@127.0.0.2",
    "..",
    "a.com%2f..",
]


def test_a_domain_name_never_changes_a_lookup_urls_origin_path_or_query() -> None:
    # A registrable domain comes from an address anyone can type. Backends refuse what is not
    # an LDH name (to_alabel), and the URL builder escapes what it adds whole, as the last
    # line: whatever the name, one query value or one path segment, on the endpoint's origin.
    # Defence: status/urls.py Endpoint.with_query (urlencode) and with_path (quote(..., safe="")).
    api = Endpoint("http://127.0.0.1:9/v1/status?key=secret")
    rdap = Endpoint("http://127.0.0.1:9/rdap/")
    for name in HOSTILE:
        url = api.with_query({"domain": name}).url
        assert (url.host, url.port, url.path) == ("127.0.0.1", 9, "/v1/status"), name
        assert url.params.multi_items() == [("key", "secret"), ("domain", name)], name
        assert not url.fragment, name
        if name in ("", ".", ".."):
            with pytest.raises(ValueError):
                rdap.with_path("domain", name)
            continue
        target = rdap.with_path("domain", name).url
        assert (target.host, target.port, target.query) == ("127.0.0.1", 9, b""), name
        assert target.raw_path.count(b"/") == 3 and target.raw_path.startswith(b"/rdap/domain/")


@pytest.mark.parametrize("where", ["thread", "process"])
def test_hostile_names_are_not_looked_up_and_idn_names_keep_their_own_answers(
    guard: Any, status_server: StatusServer, where: str
) -> None:
    # Names a sweep is given (say by `flask domainguard sweep --domain`) that are no domain
    # send nothing; the attacker's IDN name and its look-alikes each get their own answer.
    # Defence: to_alabel in FastlyBackend.observe; the pipe carries each name beside its
    # observation (lookupprocess._Outbox.add).
    idn = "xn--bcher-lapsed-0ob.com"  # bücher-lapsed.com
    status_server.answers[idn] = "undelegated inactive"
    seed(guard, {idn: 1, "bucher-lapsed.com": 1, "xn--bcher-lapsed-0ob.net": 1})
    worker = LookupProcess if where == "process" else LookupThread
    with worker(FastlyBackend(guard.settings), LookupLimits(retries=0)) as lookups:
        refused = lookups.submit(HOSTILE).result(timeout=30)
    assert set(refused) == set(HOSTILE)
    assert all(obs.registered is None and obs.error for obs in refused.values())
    assert not status_server.hits, "nothing was sent for a name that is no domain"
    report = Sweep(guard, retry_base=0.01, lookups=where).run()
    assert report.checked == 3
    assert domain_row(guard, idn).verdict == "released"
    assert domain_row(guard, "bucher-lapsed.com").verdict == "ok"
    assert domain_row(guard, "xn--bcher-lapsed-0ob.net").verdict == "ok"


class RateLimitedFor:
    """The status API, which answers HTTP 429 with ``Retry-After`` for ``limited`` and
    ``active`` for every other domain."""

    name = "limited"

    def __init__(self, limited: set[str], retry_after: float) -> None:
        self.limited = limited
        self.retry_after = retry_after

    async def observe(
        self, domain: str, *, client: Any = None, timeout: float | None = None
    ) -> Observation:
        if domain in self.limited:
            return Observation.failed(
                domain, "rate limited (HTTP 429)", source=self.name, retry_after=self.retry_after
            )
        return Observation(domain=domain, registered=True, statuses=frozenset({"active"}))

    def server_key(self, domain: str) -> str:
        return "api"

    async def aclose(self) -> None:
        pass


def test_lookups_rate_limited_in_turn_do_not_pass_for_a_hung_lookup_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The attacker makes the lookups of two of its domains answer 429 with a Retry-After
    # (within the limit the sweep waits out). A 429 pauses every lookup to that server, so each
    # one's retry first waits out the other's pause: each takes up to twice what the
    # watchdog allows a lookup. With nothing else left in the run, the healthy child was
    # killed as hung, and the run stopped before finishing (no planned unverification was
    # applied, and the next run, finding the same two domains due, stopped the same way).
    # Defence: LookupLimits.worst_case counts a server's pause before every attempt.
    monkeypatch.setattr(lookupprocess, "_SILENCE_MARGIN", 0.3)
    limits = LookupLimits(timeout=0.2, retries=2, retry_base=0.01, max_retry_after=5.0)
    backend = RateLimitedFor({"a-lapsed.com", "b-lapsed.com"}, retry_after=5.0)
    got: dict[str, Observation] = {}
    with LookupProcess(backend, limits) as lookups:
        lookups.stream(["a-lapsed.com"])
        time.sleep(2.5)  # the second one's lookups fall between the first one's
        lookups.stream(["b-lapsed.com"])
        while len(got) < 2:
            got.update(lookups.take(timeout=0.5))
    assert all(obs.registered is None and obs.retry_after == 5.0 for obs in got.values())
    assert lookups.attempts == 6


class DiesLater:
    """Answers at once for ``confirmed.com`` (released) and ``warn.com`` (expiring in ten
    days); ``never.com`` would answer "expiring" after 3 s, but the process dies at 1.5 s."""

    name = "dies-later"

    async def observe(
        self, domain: str, *, client: Any = None, timeout: float | None = None
    ) -> Observation:
        if domain == "die.com":
            await asyncio.sleep(1.5)
            os._exit(9)
        if domain == "never.com":
            await asyncio.sleep(3.0)
        if domain == "confirmed.com":
            return Observation(domain=domain, registered=False, source=self.name)
        expires = utcnow() + timedelta(days=10)
        return Observation(domain=domain, registered=True, expires_at=expires, source=self.name)

    def server_key(self, domain: str) -> str:
        return "dies-later"

    async def aclose(self) -> None:
        pass


@pytest.mark.settings(DOMAINGUARD_SWEEP_LEASE=1, DOMAINGUARD_SWEEP_RETRIES=0)
def test_a_child_dying_after_part_of_a_run_was_applied_leaves_nothing_unjudged_acted_on(
    guard: Any,
) -> None:
    # The attacker times the child's death (say, a lookup that crashes it) after some of the
    # run's observations are applied and before others are: what was judged stands, what was
    # not judged has no effect (no warning, no lease kept), and the unverification the run
    # planned is not lost with it: the next run applies it.
    # Defence: Sweep.run releases every claimed-but-unapplied domain on any failure; planned
    # actions of a run that stopped are adopted (sweep/breaker.py).
    bulk_seed(
        guard,
        {"confirmed.com": 1, "warn.com": 1, "never.com": 1, "die.com": 1},
        first_seen={"confirmed.com": "released"},
    )
    with pytest.raises(LookupProcessError, match="exit code 9"):
        Sweep(guard, backend=DiesLater(), lookups="process").run()
    rows = {name: domain_row(guard, name) for name in ("confirmed.com", "warn.com", "never.com")}
    assert (
        rows["confirmed.com"].verdict == "released" and rows["warn.com"].verdict == "expiring_soon"
    )
    assert rows["never.com"].checked_at is None and rows["never.com"].verdict is None
    assert all(row.lease_owner is None for row in rows.values())
    assert domain_row(guard, "die.com").lease_owner is None
    Address = guard.models.EmailAddress
    warned = dict(
        hostapp.db.session.execute(sa.select(Address.registrable, Address.expiry_warned_for)).all()
    )
    assert warned["warn.com"] is not None, "judged, so warned"
    assert warned["never.com"] is None, "never judged, never warned"
    verified = dict(
        hostapp.db.session.execute(sa.select(Address.registrable, Address.verified_at)).all()
    )
    assert verified["confirmed.com"] is not None, "planned, not applied by the stopped run"
    time.sleep(1.2)  # the stopped run's plan is adopted after a lease period without heartbeat
    Sweep(guard, backend=DiesLater(), lookups="thread").run(names=["warn.com"])
    # A new transaction, so a fresh snapshot (MariaDB reads repeatably within one).
    hostapp.db.session.rollback()
    verified = dict(
        hostapp.db.session.execute(sa.select(Address.registrable, Address.verified_at)).all()
    )
    assert verified["confirmed.com"] is None, "the next run applied the plan"


def traced(observe: Any) -> Any:
    """A host's decorator around a backend's ``observe`` (tracing, metrics), written the
    usual way, with :func:`functools.wraps`; it awaits something of its own first."""

    @functools.wraps(observe)
    async def wrapper(self: Any, domain: str, **options: Any) -> Observation:
        await self.before(domain)
        result: Observation = await observe(self, domain, **options)
        return result

    return wrapper


class TracedFastly(FastlyBackend):
    """A host's FastlyBackend that asks something about each domain before looking it up
    (here: a query the attacker's own name server answers after 20 s)."""

    observe = traced(FastlyBackend.observe)

    async def before(self, domain: str) -> None:
        if domain == LAPSED:
            await asyncio.sleep(20)


@pytest.mark.parametrize("where", ["thread", "process"])
@pytest.mark.settings(DOMAINGUARD_HTTP_TIMEOUT=1.0, DOMAINGUARD_SWEEP_RETRIES=0)
def test_a_host_wrapping_a_marked_observe_keeps_the_outer_timeout(
    guard: Any, status_server: StatusServer, where: str
) -> None:
    # keeps_its_timeout lets Lookups skip its own clock for a backend whose observe bounds
    # itself. functools.wraps copies a function's __dict__, so a host's wrapper used to
    # inherit the mark with awaits the mark knows nothing about: the attacker's slow name
    # server held the lookup (and, with it, the run) for as long as it liked.
    # Defence: the mark names the marked function itself (status/base.py bounds_itself).
    seed(guard, {LAPSED: 1, "fine.com": 1})
    started = time.monotonic()
    report = Sweep(guard, backend=TracedFastly(guard.settings), lookups=where).run()
    took = time.monotonic() - started
    assert took < 10, f"the sweep waited {took:.1f} s for one lookup"
    assert report.checked == 2 and report.errors == 1
    row = domain_row(guard, LAPSED)
    assert row.checked_at is None and "timed out" in (row.last_error or "")
    assert domain_row(guard, "fine.com").verdict == "ok"
