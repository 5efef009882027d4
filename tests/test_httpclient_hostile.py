"""The sweep's HTTP client (:mod:`flask_domainguard.httpclient`) against hostile servers.

A status server is a third party. Each test runs a real server on 127.0.0.1 that misbehaves
on purpose and looks a domain up through the Fastly backend with the sweep's client
(:func:`~flask_domainguard.lookups.make_client`). Every lookup must end as a failed
Observation ("cannot tell", never acted on), within its timeout and with bounded memory: a
hang, an unbounded read or a followed hop to a private address fails the test.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import ssl
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flask_domainguard.httpclient import AiohttpClient
from flask_domainguard.lookups import make_client
from flask_domainguard.netguard import AddressRefused, PeerGuard
from flask_domainguard.status.fastly import FastlyBackend
from flask_domainguard.status.http import fetch_json
from flask_domainguard.status.observation import Observation
from tests.test_netguard import CountingTcpServer

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

CAP = 1 << 20  # DOMAINGUARD_MAX_RESPONSE_BYTES for these lookups
TIMEOUT = 1.0
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


class Hostile:
    """A server on 127.0.0.1 running ``handler`` per connection; counts bytes it sent."""

    def __init__(self, handler: Callable[[Hostile, asyncio.StreamWriter], Awaitable[None]]):
        self.handler = handler
        self.sent = 0
        self.requests = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                await self.handler(self, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)


def look_up(
    handler: Callable[[Hostile, asyncio.StreamWriter], Awaitable[None]],
    *,
    allow_private: bool = False,
) -> tuple[Observation, Hostile, float, int]:
    """One Fastly lookup through the sweep's client against ``handler``'s server; the
    Observation, the server, the wall seconds and the peak of traced memory in bytes."""
    hostile = Hostile(handler)

    async def go() -> Observation:
        server = await asyncio.start_server(hostile._serve, "127.0.0.1", 0)
        hostile.port = server.sockets[0].getsockname()[1]
        backend = FastlyBackend(
            api_key="hostile-test-key",
            url=f"http://127.0.0.1:{hostile.port}/status",
            timeout=TIMEOUT,
            max_response_bytes=CAP,
        )
        backend.allow_private = allow_private
        try:
            async with make_client(4) as client:
                assert isinstance(client, AiohttpClient)
                # The outer bound is the test's: the lookup's own must come first.
                return await asyncio.wait_for(backend.observe("victim.com", client=client), 30)
        finally:
            server.close()

    tracemalloc.start()
    started = time.monotonic()
    try:
        obs = asyncio.run(go())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return obs, hostile, time.monotonic() - started, peak


def assert_failed(obs: Observation, *words: str) -> None:
    assert obs.registered is None, obs
    assert obs.error is not None
    for word in words:
        assert word in obs.error, obs.error


# -- time -----------------------------------------------------------------------------------


def test_a_slow_drip_body_is_cut_at_the_timeout() -> None:
    """Each byte arrives well within any per-read timeout; the whole exchange does not."""

    async def drip(h: Hostile, writer: asyncio.StreamWriter) -> None:
        await h.send(writer, HEAD + b"Content-Length: 1000\r\n\r\n")
        for _ in range(1000):
            await h.send(writer, b" ")
            await asyncio.sleep(0.05)

    obs, hostile, wall, _ = look_up(drip)
    assert_failed(obs, "timed out")
    assert wall < TIMEOUT + 1.5, wall
    assert hostile.sent < 200


def test_a_slow_drip_head_is_cut_at_the_timeout() -> None:
    async def drip(h: Hostile, writer: asyncio.StreamWriter) -> None:
        await h.send(writer, HEAD)
        for i in range(1000):
            await h.send(writer, f"X-Drip-{i}: 1\r\n".encode())
            await asyncio.sleep(0.05)

    obs, _, wall, _ = look_up(drip)
    assert_failed(obs, "timed out")
    assert wall < TIMEOUT + 1.5, wall


def test_a_server_that_never_answers_is_cut_at_the_timeout() -> None:
    async def silent(h: Hostile, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(60)

    obs, _, wall, _ = look_up(silent)
    assert_failed(obs, "timed out")
    assert wall < TIMEOUT + 1.5, wall


# -- size -----------------------------------------------------------------------------------


async def _stream(h: Hostile, writer: asyncio.StreamWriter, total: int) -> None:
    piece = b"x" * 65536
    while total > 0:
        await h.send(writer, piece)
        total -= len(piece)


def test_a_body_announced_over_the_cap_is_not_read() -> None:
    async def huge(h: Hostile, writer: asyncio.StreamWriter) -> None:
        await h.send(writer, HEAD + f"Content-Length: {256 << 20}\r\n\r\n".encode())
        await _stream(h, writer, 256 << 20)

    obs, hostile, _, peak = look_up(huge)
    assert_failed(obs, "larger than")
    assert hostile.sent < 64 << 20, "the client stopped soon after the head"
    assert peak < 16 << 20, peak


def test_a_huge_body_without_content_length_is_cut_at_the_cap() -> None:
    """Read-to-close framing (HTTP/1.0 style): no length to refuse up front."""

    async def huge(h: Hostile, writer: asyncio.StreamWriter) -> None:
        await h.send(writer, HEAD.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n")
        await _stream(h, writer, 256 << 20)
        writer.close()

    obs, hostile, _, peak = look_up(huge)
    assert_failed(obs, "larger than")
    assert hostile.sent < 64 << 20
    assert peak < 16 << 20, peak


def test_a_huge_body_under_a_false_content_length_is_cut_at_the_cap() -> None:
    """A small announced length and a huge body: only the announced bytes are the answer."""

    async def liar(h: Hostile, writer: asyncio.StreamWriter) -> None:
        await h.send(writer, HEAD + b"Content-Length: 5\r\n\r\n")
        await _stream(h, writer, 64 << 20)

    obs, _, _, peak = look_up(liar)
    assert_failed(obs)  # "xxxxx" is not JSON, and the rest is no HTTP answer
    assert len(obs.error or "") < 500, "a hostile server does not write long errors"
    assert peak < 16 << 20, peak


def test_a_gzip_bomb_is_cut_at_the_cap() -> None:
    """500 MB of zeros in about 500 KB of gzip: the decompressed size is what counts."""
    bomb = gzip.compress(b"\0" * (500 << 20), compresslevel=9)

    async def gz(h: Hostile, writer: asyncio.StreamWriter) -> None:
        head = HEAD + f"Content-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n".encode()
        await h.send(writer, head + bomb)

    obs, _, _, peak = look_up(gz)
    assert_failed(obs, "larger than")
    assert peak < 16 << 20, peak


def test_a_gzip_answer_is_read_and_an_unoffered_encoding_refused() -> None:
    """Compression the client offered (gzip, deflate) is decoded; any other fails closed."""
    body = b'{"domain": "victim.com", "status": "active", "zone": "com", "tags": ""}'

    def answer(encoding: str, data: bytes) -> Any:
        async def send(h: Hostile, writer: asyncio.StreamWriter) -> None:
            head = f"Content-Encoding: {encoding}\r\nContent-Length: {len(data)}\r\n\r\n"
            await h.send(writer, HEAD + head.encode() + data)

        return send

    obs, _, _, _ = look_up(answer("gzip", gzip.compress(body)))
    assert obs.registered is True and obs.error is None, obs
    obs, _, _, _ = look_up(answer("deflate", zlib.compress(body)))
    assert obs.registered is True and obs.error is None, obs
    obs, _, _, _ = look_up(answer("br", body))
    assert_failed(obs, "content encoding")
    obs, _, _, _ = look_up(answer("gzip", b"not gzip at all"))
    assert_failed(obs, "compressed")


def test_a_huge_head_is_refused() -> None:
    async def big_head(h: Hostile, writer: asyncio.StreamWriter) -> None:
        await h.send(writer, HEAD + b"X-Big: " + b"a" * (1 << 20) + b"\r\n\r\n{}")

    obs, _, _, peak = look_up(big_head)
    assert_failed(obs)
    assert peak < 16 << 20, peak


# -- framing ----------------------------------------------------------------------------------

BAD_CHUNKING = {
    "size-not-hex": b"zz\r\n{}\r\n0\r\n\r\n",
    "size-negative": b"-2\r\n{}\r\n0\r\n\r\n",
    "data-longer-than-size": b'2\r\n{"a": 1}\r\n0\r\n\r\n',
    "closed-inside-a-chunk": b'ff\r\n{"a": 1}',
    "size-overflow": b"1" + b"0" * 40 + b"\r\n{}\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(BAD_CHUNKING))
def test_bad_chunking_is_a_failed_lookup(case: str) -> None:
    async def chunked(h: Hostile, writer: asyncio.StreamWriter) -> None:
        await h.send(writer, HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + BAD_CHUNKING[case])
        writer.close()

    obs, _, wall, _ = look_up(chunked)
    assert_failed(obs)
    assert wall < TIMEOUT + 1.5, wall


def test_a_body_with_both_lengths_is_refused() -> None:
    """Content-Length beside chunked: where request smuggling starts."""

    async def both(h: Hostile, writer: asyncio.StreamWriter) -> None:
        body = b'9\r\n{"a": 1}\r\n0\r\n\r\n'
        await h.send(
            writer,
            HEAD + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" + body,
        )
        writer.close()

    obs, _, _, _ = look_up(both)
    assert_failed(obs)


# -- redirects --------------------------------------------------------------------------------


def test_a_redirect_loop_ends_after_the_hop_limit() -> None:
    async def loop(h: Hostile, writer: asyncio.StreamWriter) -> None:
        target = f"/status?hop={h.requests}"
        await h.send(
            writer,
            f"HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n".encode(),
        )

    obs, hostile, wall, _ = look_up(loop)
    assert_failed(obs, "more than 5 redirects")
    assert hostile.requests == 6
    assert wall < TIMEOUT + 1.5


def test_a_redirect_to_itself_ends_after_the_hop_limit() -> None:
    async def same(h: Hostile, writer: asyncio.StreamWriter) -> None:
        await h.send(
            writer, b"HTTP/1.1 301 Moved\r\nLocation: /status\r\nContent-Length: 0\r\n\r\n"
        )

    obs, hostile, _, _ = look_up(same)
    assert_failed(obs, "more than 5 redirects")
    assert hostile.requests == 6


@pytest.mark.parametrize(
    ("location", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[::ffff:169.254.169.254]/", "link-local"),
        ("https://10.0.0.1/", "private"),
        ("https://[fd00::1]/", "unique-local"),
    ],
)
def test_a_redirect_to_a_private_address_is_not_followed(location: str, kind: str) -> None:
    async def away(h: Hostile, writer: asyncio.StreamWriter) -> None:
        head = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        await h.send(writer, head.encode())

    obs, _, wall, _ = look_up(away)
    assert_failed(obs, "not followed", kind)
    assert wall < TIMEOUT, "refused before any connection attempt"


@pytest.fixture
def tcp_server() -> Any:
    server = CountingTcpServer()
    yield server
    server.close()


def test_a_redirect_to_a_name_of_a_loopback_address_never_connects(
    tcp_server: CountingTcpServer,
) -> None:
    """``localhost`` passes every check a name can pass; its addresses are loopback. The
    resolver drops them, so not even a TCP connection is made."""

    async def away(h: Hostile, writer: asyncio.StreamWriter) -> None:
        location = f"https://localhost:{tcp_server.port}/rdap"
        head = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        await h.send(writer, head.encode())

    obs, _, _, _ = look_up(away)
    assert_failed(obs, "not followed", "loopback")
    time.sleep(0.3)  # a connection would have been accepted by now (the server polls 0.1 s)
    assert tcp_server.connections == 0


def test_allow_private_lets_a_redirect_to_a_local_name_through(
    tcp_server: CountingTcpServer,
) -> None:
    """The same hop with DOMAINGUARD_STATUS_ALLOW_PRIVATE: the request is sent (the
    counting server never answers, so the lookup still fails)."""

    async def away(h: Hostile, writer: asyncio.StreamWriter) -> None:
        location = f"http://localhost:{tcp_server.port}/rdap"
        head = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        await h.send(writer, head.encode())

    obs, _, _, _ = look_up(away, allow_private=True)
    assert_failed(obs)
    assert tcp_server.connections >= 1 and tcp_server.received > 0


def test_an_ip_literal_is_checked_on_the_connection_before_a_byte_is_sent(
    tcp_server: CountingTcpServer,
) -> None:
    """IP literals skip the resolver; the pool checks each connection's peer before it
    carries a request. fetch_json refuses such URLs before this point (url_refusal): this is
    the layer beneath. (Over https the TLS hello is out by then, a request never is.)"""
    url = httpx.URL(f"http://127.0.0.1:{tcp_server.port}/")

    async def go() -> None:
        async with AiohttpClient(2) as client:
            await client.aiohttp.get(url, {}, PeerGuard(url, allow_private=False))

    with pytest.raises(AddressRefused, match="loopback"):
        asyncio.run(go())
    deadline = time.monotonic() + 5
    while tcp_server.connections < 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # the server accepts on its own thread
    time.sleep(0.5)  # and reads each connection until it closes (or 0.3 s of silence)
    assert tcp_server.connections == 1 and tcp_server.received == 0


# -- TLS ------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 that no CA signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def test_a_certificate_no_ca_signed_is_refused(tmp_path: Path) -> None:
    """A man in the middle with his own certificate gets no request and gives no answer."""
    requests = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        try:
            await reader.readuntil(b"\r\n\r\n")
            requests += 1
            writer.write(HEAD + b"Content-Length: 2\r\n\r\n{}")
            await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def go() -> Any:
        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=_self_signed(tmp_path))
        port = server.sockets[0].getsockname()[1]
        try:
            async with make_client(2) as client:
                return await fetch_json(
                    client, f"https://127.0.0.1:{port}/", headers={}, max_bytes=CAP, timeout=5
                )
        finally:
            server.close()

    result = asyncio.run(go())
    assert not result.is_json and result.error is not None
    assert "certificate" in result.error.lower(), result.error
    assert requests == 0
