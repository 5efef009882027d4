"""The sweep's lookups (:mod:`flask_domainguard.lookups`) and its HTTP client
(:mod:`flask_domainguard.httpclient`): limits, retries, timeouts, HTTP/1.1 on a real socket,
and the bounds that hold against a hostile server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from flask_domainguard.httpclient import AiohttpClient
from flask_domainguard.lookups import LookupLimits, Lookups, TokenBucket, make_client
from flask_domainguard.lookupthread import LookupThread
from flask_domainguard.status.base import bounds_itself
from flask_domainguard.status.fastly import FastlyBackend
from flask_domainguard.status.observation import Observation


class FakeBackend:
    """A backend that records concurrency and answers from a function."""

    name = "fake"

    def __init__(self, answer: Any = None, delay: float = 0.01) -> None:
        self.answer = answer or (lambda domain, n: Observation(domain=domain, registered=True))
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.per_server: Counter[str] = Counter()
        self.max_per_server: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    async def observe(self, domain: str, *, client: Any = None, timeout: Any = None) -> Observation:
        server = self.server_key(domain)
        self.calls[domain] += 1
        self.in_flight += 1
        self.per_server[server] += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_per_server[server] = max(self.max_per_server[server], self.per_server[server])
        try:
            await asyncio.sleep(self.delay)
            result: Observation = self.answer(domain, self.calls[domain])
            return result
        finally:
            self.in_flight -= 1
            self.per_server[server] -= 1

    def server_key(self, domain: str) -> str:
        return domain[0]

    async def aclose(self) -> None:
        return None


def run(backend: Any, limits: LookupLimits, names: list[str]) -> dict[str, Observation]:
    async def go() -> dict[str, Observation]:
        async with Lookups(backend, limits) as lookups:
            return await lookups.observe_many(names)

    return asyncio.run(go())


def test_token_bucket_spaces_takes_evenly() -> None:
    now = [0.0]
    bucket = TokenBucket(10, clock=lambda: now[0])
    waits = [bucket.reserve() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    now[0] = 10.0
    assert bucket.reserve() == 0.0  # refilled, but never beyond the burst
    assert bucket.reserve() == pytest.approx(0.1)
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_global_rate_limit_is_kept() -> None:
    backend = FakeBackend(delay=0)
    started = time.monotonic()
    run(backend, LookupLimits(concurrency=50, per_server=50, rate=20), [f"d{i}" for i in range(21)])
    assert time.monotonic() - started >= 0.95  # 21 takes at 20/s: at least a second


def test_concurrency_and_per_server_limits() -> None:
    backend = FakeBackend(delay=0.02)
    names = [f"{letter}{i}.com" for letter in "abc" for i in range(20)]
    results = run(backend, LookupLimits(concurrency=5, per_server=2), names)
    assert len(results) == 60 and all(r.registered for r in results.values())
    assert backend.max_in_flight == 5
    assert max(backend.max_per_server.values()) == 2
    # A per-server limit at or above the global one is kept by the global one.
    backend = FakeBackend(delay=0.02)
    run(backend, LookupLimits(concurrency=5, per_server=5), [f"a{i}.com" for i in range(30)])
    assert backend.max_in_flight == max(backend.max_per_server.values()) == 5


def test_failures_are_retried_a_bounded_number_of_times() -> None:
    def answer(domain: str, n: int) -> Observation:
        if domain == "flaky.com" and n < 3:
            return Observation.failed(domain, "HTTP 500", source="fake")
        if domain == "dead.com":
            return Observation.failed(domain, "HTTP 500", source="fake")
        return Observation(domain=domain, registered=True)

    backend = FakeBackend(answer, delay=0)
    limits = LookupLimits(retries=3, retry_base=0.01)
    results = run(backend, limits, ["flaky.com", "dead.com", "fine.com"])
    assert results["flaky.com"].registered is True and backend.calls["flaky.com"] == 3
    assert results["dead.com"].error == "HTTP 500" and backend.calls["dead.com"] == 4
    assert backend.calls["fine.com"] == 1
    # A definite answer (released) is never retried.
    backend = FakeBackend(lambda d, n: Observation(domain=d, registered=False), delay=0)
    run(backend, limits, ["gone.com"])
    assert backend.calls["gone.com"] == 1


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    limits = LookupLimits(retry_base=1.0, retry_cap=5.0)
    for attempt, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 5.0)]:
        samples = [limits.backoff(attempt) for _ in range(50)]
        assert all(cap / 2 <= s <= cap for s in samples)
        assert len(set(samples)) > 1


def test_a_raising_or_hanging_backend_costs_one_lookup() -> None:
    def answer(domain: str, n: int) -> Observation:
        raise KeyError("bug")

    results = run(FakeBackend(answer, delay=0), LookupLimits(retries=0), ["bug.com"])
    assert results["bug.com"].registered is None
    assert "KeyError" in (results["bug.com"].error or "")
    started = time.monotonic()
    results = run(FakeBackend(delay=30), LookupLimits(retries=0, timeout=0.2), ["hang.com"])
    assert time.monotonic() - started < 3
    assert "timed out" in (results["hang.com"].error or "")


def test_only_the_packages_own_observe_goes_without_the_outer_clock() -> None:
    """Lookups puts no second clock around a backend whose ``observe`` keeps the timeout by
    itself (the Fastly backend: fetch_json's bound); a host's subclass overriding ``observe``
    loses the mark, and one that ignores the timeout is still cut off."""

    class Hanging(FastlyBackend):
        async def observe(
            self, domain: str, *, client: Any = None, timeout: float | None = None
        ) -> Observation:
            await asyncio.sleep(30)
            return Observation(domain=domain, registered=True)

    assert bounds_itself(FastlyBackend(api_key="k"))
    assert not bounds_itself(Hanging(api_key="k"))
    assert not bounds_itself(FakeBackend())
    started = time.monotonic()
    results = run(Hanging(api_key="k"), LookupLimits(retries=0, timeout=0.2), ["hang.com"])
    assert time.monotonic() - started < 3
    assert "timed out" in (results["hang.com"].error or "")


def test_lookup_thread_runs_batches_in_the_background() -> None:
    backend = FakeBackend(delay=0.01)
    with LookupThread(backend, LookupLimits(concurrency=4)) as thread:
        first = thread.submit(["a.com", "b.com"])
        second = thread.submit(["c.com"])
        assert set(first.result(timeout=5)) == {"a.com", "b.com"}
        assert set(second.result(timeout=5)) == {"c.com"}
        assert thread.attempts == 3


# -- the HTTP transport on a real socket -----------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: Counter[int] = Counter()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.connections[id(self.connection)] += 1
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"a": ', b"1}"):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until-close")
            self.close_connection = True
        elif self.path == "/empty":
            self.send_response(204)
            self.end_headers()
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"only this")
            self.close_connection = True
        else:
            body = f'{{"path": "{self.path}", "host": "{self.headers["Host"]}"}}'.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.connections.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_sweep_client_speaks_http_1_1(http_server: str) -> None:
    async def go() -> list[Any]:
        async with AiohttpClient(2) as client:
            plain = await client.get(f"{http_server}/x?domain=a.com")
            again = await client.get(f"{http_server}/y")
            chunked = await client.get(f"{http_server}/chunked")
            closing = await client.get(f"{http_server}/close")
            empty = await client.get(f"{http_server}/empty")
            parallel = await asyncio.gather(*(client.get(f"{http_server}/p{i}") for i in range(6)))
            with pytest.raises(httpx.HTTPError):
                await client.get(f"{http_server}/short")
            return [plain, again, chunked, closing, empty, parallel]

    plain, again, chunked, closing, empty, parallel = asyncio.run(go())
    assert plain.json() == {"path": "/x?domain=a.com", "host": http_server[7:]}
    assert again.status_code == 200
    assert chunked.json() == {"a": 1}
    assert closing.content == b"until-close"
    assert empty.status_code == 204 and empty.content == b""
    assert [r.json()["path"] for r in parallel] == [f"/p{i}" for i in range(6)]
    # Keep-alive: the first requests shared one connection; never more than the limit of 2.
    assert max(_Handler.connections.values()) >= 3
    assert len(_Handler.connections) <= 5


def test_connection_errors_are_httpx_errors() -> None:
    async def go() -> None:
        async with make_client(2) as client:
            await client.get("http://127.0.0.1:9/nothing-listens-here")

    with pytest.raises(httpx.ConnectError):
        asyncio.run(go())


def test_a_huge_announced_chunk_is_read_in_bounded_pieces() -> None:
    """A hostile server announces a 4 GiB chunk and streams it: the byte cap stops it early."""
    from flask_domainguard.status.http import fetch_json

    sent = 0

    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n"
        )
        try:
            for _ in range(4096):  # up to 256 MiB, far past the cap
                writer.write(b"x" * 65536)
                await writer.drain()
                sent += 65536
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def go() -> Any:
        server = await asyncio.start_server(hostile, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with AiohttpClient(2) as client:
                return await fetch_json(
                    client, f"http://127.0.0.1:{port}/", headers={}, max_bytes=1 << 20, timeout=10
                )
        finally:
            server.close()

    result = asyncio.run(go())
    assert not result.is_json and result.error and "large" in result.error, result
    assert sent < 64 << 20, "the client stopped reading soon after the cap"


# -- hostile framing: what a lenient parser would read as a valid body -----------------------

#: Each answer is JSON only to a client that accepts the bad framing; a strict one refuses.
HOSTILE_ANSWERS = {
    # Python's int() reads "1_0" as 10: exactly the body's length.
    "content-length-underscore": b"Content-Length: 1_0\r\n\r\n" + b'{"a": 123}',
    # Two lengths that disagree: last-wins reads the whole body, first-wins three bytes.
    "content-length-conflict": b"Content-Length: 3\r\nContent-Length: 10\r\n\r\n" + b'{"a": 123}',
    "content-length-conflict-list": b"Content-Length: 3, 10\r\n\r\n" + b'{"a": 123}',
    "content-length-plus-sign": b"Content-Length: +10\r\n\r\n" + b'{"a": 123}',
    # int(.., 16) accepts a "0x" prefix and underscores too.
    "chunk-size-0x": b"Transfer-Encoding: chunked\r\n\r\n"
    + b'0x5\r\n{"a":\r\n5\r\n 123}\r\n0\r\n\r\n',
    "chunk-size-underscore": b"Transfer-Encoding: chunked\r\n\r\n"
    + b'0_5\r\n{"a":\r\n5\r\n 123}\r\n0\r\n\r\n',
}
#: The same bodies framed correctly: every client must read these.
VALID_ANSWERS = {
    "content-length": b"Content-Length: 10\r\n\r\n" + b'{"a": 123}',
    "chunked-with-extension": b"Transfer-Encoding: chunked\r\n\r\n"
    + b'5;name=value\r\n{"a":\r\n5\r\n 123}\r\n0\r\n\r\n',
    "chunked-upper-hex": b"Transfer-Encoding: chunked\r\n\r\n" + b'A\r\n{"a": 123}\r\n0\r\n\r\n',
}

#: Framing RFC 9112 lets a client either accept or refuse (llhttp refuses, httpx accepts):
#: both are safe, as long as a client that reads it reads the body as sent.
EITHER_ANSWERS = {
    "content-length-repeated-equal": b"Content-Length: 10\r\nContent-Length: 10\r\n\r\n"
    + b'{"a": 123}',
}

#: The sweep's client (whatever transport it uses), and stock httpx as the reference.
CLIENTS = {
    "sweep": lambda: make_client(2),
    "httpx": lambda: httpx.AsyncClient(),
}


def _answer_once(raw: bytes, client_name: str) -> Any:
    """GET from a one-shot server that sends ``raw`` after a status line; the parsed JSON."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + raw)
        await writer.drain()
        writer.close()

    async def go() -> Any:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with CLIENTS[client_name]() as client:
                response = await asyncio.wait_for(client.get(f"http://127.0.0.1:{port}/"), 10)
                return response.json()
        finally:
            server.close()

    return asyncio.run(go())


@pytest.mark.parametrize("client_name", sorted(CLIENTS))
@pytest.mark.parametrize("answer", sorted(HOSTILE_ANSWERS))
def test_bad_framing_is_refused(answer: str, client_name: str) -> None:
    with pytest.raises(httpx.HTTPError):
        _answer_once(HOSTILE_ANSWERS[answer], client_name)


@pytest.mark.parametrize("client_name", sorted(CLIENTS))
@pytest.mark.parametrize("answer", sorted(VALID_ANSWERS))
def test_good_framing_is_read(answer: str, client_name: str) -> None:
    assert _answer_once(VALID_ANSWERS[answer], client_name) == {"a": 123}


@pytest.mark.parametrize("client_name", sorted(CLIENTS))
@pytest.mark.parametrize("answer", sorted(EITHER_ANSWERS))
def test_framing_either_refused_or_read_as_sent(answer: str, client_name: str) -> None:
    with contextlib.suppress(httpx.HTTPError):  # refusing is safe
        assert _answer_once(EITHER_ANSWERS[answer], client_name) == {"a": 123}
