"""The third attack review, after the restructuring into packages (issue 15): the lapsed
domain's new owner, and a status server's hostile redirects, against the moved code paths:
the sweep's batched reads and writes (``sweep/store.py``, ``sweep/apply.py``), the batched
recipient query (``mail/recipients.safe_addresses_of``) and the aiohttp client
(``httpclient.py``).

Each test is an attack that must fail; mail goes through a real SMTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from flask import Flask
from freezegun import freeze_time

from flask_domainguard.lookups import make_client
from flask_domainguard.models import UnverifyReason
from flask_domainguard.status.fastly import DomainrBackend
from flask_domainguard.status.observation import Observation
from flask_domainguard.timeutil import utcnow
from tests.conftest import SMTPSink
from tests.guard_helpers import OK, RELEASED, add, set_domain, write_status
from tests.sweep_support import make_due
from tests.test_httpclient_hostile import Hostile, look_up
from tests.test_netguard import CountingTcpServer

UTC = timezone.utc
PROVED = datetime(2015, 3, 1, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def sweep(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["domainguard", "sweep"])
    assert result.exit_code == 0, result.output


def bodies_to(sink: SMTPSink, address: str) -> list[str]:
    """The text of every message delivered to ``address``."""
    return [
        str(message.get_payload())
        for message, (_, rcpts) in zip(sink.messages, sink.envelopes, strict=True)
        if address in rcpts
    ]


# -- the sweep's batches ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mail_guard",
    [
        pytest.param("all", marks=pytest.mark.settings(DOMAINGUARD_MAIL_GUARD="all")),
        # Without the Flask-Mail safety net, the recipient rule alone stands in the way.
        pytest.param("off", marks=pytest.mark.settings(DOMAINGUARD_MAIL_GUARD="off")),
    ],
)
def test_one_batch_of_many_users_tells_each_owner_at_their_own_safe_addresses_only(
    smtp_app: Flask, guard: Any, make_user: Any, smtp_sink: SMTPSink, mail_guard: str
) -> None:
    """One sweep batch holds several accounts' addresses. ``bought.com`` was registered anew
    after Ana proved her address on it; ``gone.com`` was released. ``sold-now.com``, where Bob
    keeps his backup, changes hands between the two sweeps, and its buyer verifies an address
    of their own there (their own account, in the same batch). The batched recipient query
    must judge each address against its own proof and its own domain's facts, and group rows
    by their own user: Bob's notice reaches neither his backup (first seen unsafe, not yet
    unverified) nor the buyer's mailbox."""
    now = utcnow()
    status = {
        "bought.com": {**OK, "registered_at": iso(now - timedelta(days=3))},
        "gone.com": RELEASED,
        "fine-shop.com": OK,
        "sold-now.com": OK,
    }
    write_status(smtp_app, status)
    with freeze_time(now - timedelta(hours=8)) as clock:
        ana, bob, buyer = make_user(), make_user(), make_user()
        add(guard, ana, "ana@bought.com", verified_at=PROVED, primary=True)
        add(guard, ana, "ana@fine-shop.com", verified_at=PROVED)
        add(guard, bob, "bob@gone.com", verified_at=PROVED, primary=True)
        add(guard, bob, "bob.backup@sold-now.com", verified_at=PROVED)
        add(guard, buyer, "me@gone.com", verified=False)  # the buyer's try at Bob's domain
        sweep(smtp_app)
        assert smtp_sink.envelopes == [], "a first unsafe sighting acts on nothing"
        clock.tick(timedelta(hours=7))
        status["sold-now.com"] = {**OK, "registered_at": iso(utcnow() - timedelta(hours=1))}
        write_status(smtp_app, status)
        add(guard, buyer, "me@sold-now.com")  # proved after the sale: safe for the buyer
        make_due(guard)  # sold-now.com's recheck falls in this run
        sweep(smtp_app)
    for address, reason in [
        ("ana@bought.com", UnverifyReason.DOMAIN_REREGISTERED),
        ("bob@gone.com", UnverifyReason.DOMAIN_RELEASED),
    ]:
        row = guard.find_address(address)
        assert row.verified_at is None and row.unverify_reason is reason, address
    assert guard.find_address("bob.backup@sold-now.com").verified_at is not None
    assert guard.find_address("me@sold-now.com").verified_at is not None
    # Ana hears of it at her safe address; Bob has none left; the buyer hears nothing.
    assert smtp_sink.recipients() == ["ana@fine-shop.com"]
    assert "ana@bought.com" in bodies_to(smtp_sink, "ana@fine-shop.com")[0]


@pytest.mark.settings(DOMAINGUARD_MAIL_GUARD="off")
def test_no_undo_link_reaches_a_bought_domain_when_the_safety_net_is_off(
    smtp_app: Flask, guard: Any, make_user: Any, smtp_sink: SMTPSink
) -> None:
    """With ``DOMAINGUARD_MAIL_GUARD = "off"`` the Flask-Mail hook is not installed at all, so
    the "this wasn't me" notices after a password change rest on the recipient rule alone.
    The buyer of ``bought.com`` holds the mailbox of the owner's old address there (the last
    check found the domain registered anew after its proof, not yet confirmed): a link that
    locks the account would be theirs to use."""
    now = utcnow()
    set_domain(guard, "fresh-shop.com", checked_at=now - timedelta(hours=1))
    set_domain(
        guard,
        "bought.com",
        checked_at=now - timedelta(hours=1),
        verdict="reregistered",
        registered_at=now - timedelta(days=3),
    )
    owner = make_user()
    add(guard, owner, "me@fresh-shop.com", verified_at=PROVED, primary=True)
    add(guard, owner, "old@bought.com", verified_at=PROVED)
    add(guard, owner, "me@gmail.com", verified_at=PROVED)
    owner.set_password("a new password")
    guard.db.session.commit()
    with smtp_app.test_request_context():
        guard.password_changed(owner, actor="user")
    assert sorted(smtp_sink.recipients()) == ["me@fresh-shop.com", "me@gmail.com"]
    for address in ("me@fresh-shop.com", "me@gmail.com"):
        assert "/domainguard/undo/" in bodies_to(smtp_sink, address)[0]


class BombServer:
    """An HTTP server on 127.0.0.1, in a thread, answering every request with a gzip bomb:
    ``size`` bytes of zeros in a small gzip body (a status server turned hostile)."""

    def __init__(self, size: int) -> None:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
        self.body = packer.compress(b"\0" * size) + packer.flush()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.requests = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    while b"\r\n\r\n" not in (head := conn.recv(65536)):
                        if not head:
                            break
                    self.requests += 1
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Encoding: gzip\r\nConnection: close\r\n"
                        + f"Content-Length: {len(self.body)}\r\n\r\n".encode()
                        + self.body
                    )
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def bomb_server() -> Iterator[BombServer]:
    server = BombServer(200 << 20)
    yield server
    server.close()


@pytest.fixture
def bombed_app(
    app_config: dict[str, Any], bomb_server: BombServer, request: pytest.FixtureRequest
) -> Flask:
    app_config.update(
        DOMAINGUARD_STATUS_BACKEND="fastly",
        DOMAINGUARD_FASTLY_URL=f"http://127.0.0.1:{bomb_server.port}/status",
        DOMAINGUARD_FASTLY_API_KEY="hostile-test-key",
        DOMAINGUARD_HTTP_TIMEOUT=5.0,
    )
    app: Flask = request.getfixturevalue("app")
    return app


def test_a_gzip_bomb_answering_a_resets_live_check_stays_small_in_memory(
    bombed_app: Flask, guard: Any, make_user: Any, bomb_server: BombServer
) -> None:
    """Anyone may ask for a reset of a stored address, and each request without recent
    evidence looks its domain up live, through httpx's own client (the sweep uses aiohttp).
    A hostile status server answers with 200 MB of zeros in 200 KB of gzip. The answer is
    refused at DOMAINGUARD_MAX_RESPONSE_BYTES, and the decompression is bounded too: the
    live check must not hold the bomb's pieces in memory, or a few requests a second take
    the web workers' memory."""
    add(guard, make_user(), "owner@victim-shop.com", verified_at=PROVED)
    tracemalloc.start()
    try:
        decision = guard.reset_decision("owner@victim-shop.com")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not decision.allowed and decision.reason == "no_evidence", decision
    assert bomb_server.requests >= 1
    assert peak < 16 << 20, f"{peak / 1e6:.0f} MB"


# -- the sweep's HTTP client ----------------------------------------------------------------------


@pytest.fixture
def tcp_server() -> Iterator[CountingTcpServer]:
    server = CountingTcpServer()
    yield server
    server.close()


@pytest.mark.parametrize(
    "host",
    [
        # IPv4 spellings that httpx reads as names and a C resolver as 127.0.0.1.
        "2130706433",
        "0x7f000001",
        "0x7f.0.0.1",
        "017700000001",
        "127.1",
        "127.0.0.1.",
        "LOCALHOST",
        # IPv6 literals that carry a loopback IPv4 address (mapped, SIIT, compatible, NAT64,
        # 6to4) or are loopback themselves.
        "[0:0:0:0:0:ffff:127.0.0.1]",
        "[::ffff:0:7f00:1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::1]",
        "[0:0:0:0:0:0:0:1]",
    ],
)
def test_no_spelling_of_loopback_in_a_redirect_reaches_a_local_service(
    host: str, tcp_server: CountingTcpServer
) -> None:
    """A status server redirects the sweep's client (aiohttp under httpx) to a local service,
    spelling its address so that the URL check (httpx's parser) and the connection
    (yarl, aiohttp, the C resolver) might read it differently. Nothing connects."""

    async def away(h: Hostile, writer: asyncio.StreamWriter) -> None:
        location = f"https://{host}:{tcp_server.port}/rdap"
        head = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        await h.send(writer, head.encode())

    obs, hostile, _, _ = look_up(away)
    assert obs.registered is None and obs.error, obs
    assert hostile.requests == 1, "the redirect is the last thing the client asked for"
    time.sleep(0.3)  # a connection would have been accepted by now (the server polls 0.1 s)
    assert tcp_server.connections == 0, obs.error


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_a_malformed_answer_does_not_write_the_api_key_into_the_error(answer: bytes) -> None:
    """The legacy Domainr API takes its key in the query string. aiohttp's parser errors quote
    the request's URL, and with it the key, percent-encoded; the error text is stored
    (``Domain.last_error``), logged and shown by ``check`` and ``report``. A status server
    that answers malformed framing must not get the key written there, in any spelling."""
    key = "s3cr3t+key/with=chars"
    hostile = Hostile(lambda h, writer: h.send(writer, answer))

    async def go() -> Observation:
        server = await asyncio.start_server(hostile._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        backend = DomainrBackend(
            client_id=key, url=f"http://127.0.0.1:{port}/v2/status", timeout=2.0
        )
        try:
            async with make_client(2) as client:
                return await backend.observe("victim.com", client=client)
        finally:
            server.close()

    obs = asyncio.run(go())
    assert obs.registered is None and obs.error, obs
    for spelling in (key, quote_plus(key), quote(key, safe=""), quote(key)):
        assert spelling not in obs.error, obs.error
