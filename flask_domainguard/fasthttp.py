"""A lean HTTP/1.1 transport for httpx, used by the sweep's one shared client.

httpx's default transport (httpcore over anyio) costs about 0.8 ms of CPU per request even
with small pools: cancel scopes, a pool that rescans every connection (probing each socket)
whenever a request starts or ends, several layers of stream wrappers. A sweep makes a
hundred thousand small GET requests to a few hosts, so that overhead is most of its run time.

This transport speaks just what status lookups need: HTTP/1.1 requests with keep-alive
connections per origin (plain or TLS, verified with the same CA bundle as httpx), responses
with ``Content-Length``, chunked or read-to-close bodies, and nothing else: no proxies (the
sweep falls back to httpx's own transport when proxy variables are set), no HTTP/2, no
upgrades. Redirects and decompression stay with httpx and the backends, as before.
Timeouts are the caller's (:func:`flask_domainguard.status.http.fetch_json` bounds every
exchange); a cancelled exchange closes its connection.

A request carrying a :class:`~flask_domainguard.netguard.PeerGuard` (a URL from the network)
connects only to addresses the guard allows: each resolved address is checked before the
socket connects, and a kept-alive connection's peer before it is reused, so nothing (not even
a TLS hello) goes to a refused address.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator

import httpx

from .netguard import PEER_CHECK, AddressRefused, PeerGuard

__all__ = ["FastTransport"]

_MAX_HEAD = 64 * 1024
_CHUNK = 64 * 1024
# Framing numbers as the RFCs spell them and nothing more: int() would also take "1_0",
# "+5", " 5" or (base 16) "0x5", which other parsers on the path may read differently.
_DIGITS = re.compile(rb"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


def _content_length(value: bytes) -> int | None:
    """A ``Content-Length`` value (RFC 9110: digits), or ``None`` when malformed. A list
    (``10, 10``) is accepted only when every member is the same (RFC 9112, 6.3)."""
    members = {member.strip(b" \t") for member in value.split(b",")}
    if len(members) != 1:
        return None
    (text,) = members
    return int(text) if _DIGITS.fullmatch(text) else None


class _Connection:
    __slots__ = ("idle_since", "peer", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        peer = writer.get_extra_info("peername")
        #: The address connected to (without port), as the peer-address checks need it.
        self.peer: str = str(peer[0]) if isinstance(peer, tuple) and peer else ""

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken transport must not raise
            self.writer.close()


def _ssl_context() -> ssl.SSLContext:
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # httpx depends on certifi; the system store is the fallback
        return ssl.create_default_context()


class _Body(httpx.AsyncByteStream):
    """A response body read off the connection; gives the connection back once done."""

    def __init__(
        self,
        transport: FastTransport,
        origin: tuple[str, str, int],
        conn: _Connection,
        length: int | None,
        chunked: bool,
        reusable: bool,
    ) -> None:
        self._transport = transport
        self._origin = origin
        self._conn: _Connection | None = conn
        self._length = length
        self._chunked = chunked
        self._reusable = reusable
        self._complete = length == 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None or self._complete:
            return
        try:
            async for data in self._read(conn.reader):
                yield data
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError) as exc:
            self._reusable = False
            raise httpx.ReadError(f"reading the body failed: {type(exc).__name__}") from exc
        self._complete = True

    async def _read(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        if self._chunked:
            while True:
                line = await reader.readuntil(b"\r\n")
                size_text = line[:-2].split(b";", 1)[0].rstrip(b" \t")  # ";" starts extensions
                if not _HEX.fullmatch(size_text):
                    raise ValueError("malformed chunk size")
                size = int(size_text, 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                    return
                # Read a chunk in bounded pieces: a hostile server can announce a chunk of
                # gigabytes, and the caller's byte cap only sees what is yielded.
                while size > 0:
                    data = await reader.read(min(size, _CHUNK))
                    if not data:
                        raise httpx.RemoteProtocolError("connection closed inside a chunk")
                    size -= len(data)
                    yield data
                if await reader.readexactly(2) != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
        elif self._length is not None:
            remaining = self._length
            while remaining:
                data = await reader.read(min(remaining, _CHUNK))
                if not data:
                    raise httpx.RemoteProtocolError("connection closed before the body ended")
                remaining -= len(data)
                yield data
        else:
            self._reusable = False
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    return
                yield data

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self._transport._release(self._origin, conn, reuse=self._complete and self._reusable)


async def _guarded_socket(host: str, port: int, guard: PeerGuard) -> socket.socket:
    """A TCP socket connected to the first resolved address of ``host`` that ``guard``
    allows; refused addresses are never connected to."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last_error: OSError | None = None
    for family, kind, proto, _name, address in infos:
        if guard.check(str(address[0])) is not None:
            continue
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    if guard.refused is not None and last_error is None:
        raise AddressRefused(guard.refused)
    raise last_error or OSError(f"no address for {host}")


class FastTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive, at most ``max_connections`` connections (see the module).

    :param max_connections: connections open at once, all origins together.
    :param keepalive_expiry: seconds an idle connection is kept.
    """

    def __init__(self, max_connections: int, *, keepalive_expiry: float = 5.0) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._keepalive = keepalive_expiry
        self._ssl: ssl.SSLContext | None = None

    async def _connect(
        self, origin: tuple[str, str, int], guard: PeerGuard | None = None
    ) -> _Connection:
        scheme, host, port = origin
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            # A server closes idle connections when it likes; a readable idle socket means it
            # did (or sent garbage), so only quiet, recent connections are reused.
            if now - conn.idle_since < self._keepalive and not conn.reader.at_eof():
                transport = conn.writer.transport
                quiet = not transport.is_closing() and not conn.reader._buffer  # type: ignore[attr-defined]
                if quiet and (guard is None or guard.check(conn.peer) is None):
                    return conn
            conn.close()
        ssl_context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = _ssl_context()
            ssl_context = self._ssl
        if guard is None:
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ssl_context,
                server_hostname=host if ssl_context else None,
                limit=_MAX_HEAD,
            )
        else:
            sock = await _guarded_socket(host, port, guard)
            try:
                reader, writer = await asyncio.open_connection(
                    sock=sock,
                    ssl=ssl_context,
                    server_hostname=host if ssl_context else None,
                    limit=_MAX_HEAD,
                )
            except BaseException:
                sock.close()
                raise
        conn = _Connection(reader, writer)
        if guard is not None and guard.check(conn.peer) is not None:  # belt and braces
            conn.close()
            raise AddressRefused(guard.refused or "refused address")
        return conn

    def _release(self, origin: tuple[str, str, int], conn: _Connection, *, reuse: bool) -> None:
        if reuse:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(origin, []).append(conn)
        else:
            conn.close()
        self._slots.release()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        port = url.port or (443 if url.scheme == "https" else 80)
        origin = (url.scheme, url.host, port)
        await self._slots.acquire()
        conn: _Connection | None = None
        try:
            guard = request.extensions.get(PEER_CHECK)
            try:
                conn = await self._connect(origin, guard)
            except (OSError, ssl.SSLError) as exc:
                raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
            body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
            target = url.raw_path
            lines = [request.method.encode() + b" " + target + b" HTTP/1.1"]
            names = set()
            for name, value in request.headers.raw:
                names.add(name.lower())
                lines.append(name + b": " + value)
            if b"host" not in names:
                lines.append(b"Host: " + url.netloc)
            if body and b"content-length" not in names:
                lines.append(b"Content-Length: " + str(len(body)).encode())
            conn.writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            try:
                await conn.writer.drain()
                head = await conn.reader.readuntil(b"\r\n\r\n")
                while head[9:10] == b"1" and head[:5] == b"HTTP/":  # 1xx: skip to the real one
                    head = await conn.reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError as exc:
                raise httpx.RemoteProtocolError("response head too large", request=request) from exc
            except (asyncio.IncompleteReadError, OSError) as exc:
                raise httpx.ReadError(str(exc) or "connection closed", request=request) from exc
            response = self._response(request, origin, conn, head)
            conn = None  # the body owns the connection and the slot now
            return response
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise

    def _response(
        self,
        request: httpx.Request,
        origin: tuple[str, str, int],
        conn: _Connection,
        head: bytes,
    ) -> httpx.Response:
        lines = head[:-4].split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise httpx.RemoteProtocolError("not an HTTP/1.x response", request=request)
        try:
            status = int(status_line[1])
        except ValueError:
            raise httpx.RemoteProtocolError("bad status code", request=request) from None
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        reusable = status_line[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise httpx.RemoteProtocolError("malformed header line", request=request)
            name, value = name.strip(), value.strip()
            headers.append((name, value))
            lower = name.lower()
            if lower == b"content-length":
                found = _content_length(value)
                # Repeated headers must agree too: which one wins is where parsers differ.
                if found is None or (length is not None and found != length):
                    raise httpx.RemoteProtocolError("bad Content-Length", request=request)
                length = found
            elif lower == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif lower == b"connection":
                if b"close" in value.lower():
                    reusable = False
                elif b"keep-alive" in value.lower():
                    reusable = True
        if chunked:
            length = None
        if request.method == "HEAD" or status in (204, 304):
            length, chunked = 0, False
        stream = _Body(self, origin, conn, length, chunked, reusable)
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": status_line[0]},
            request=request,
        )

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
