"""The sweep's HTTP client: aiohttp under an :class:`httpx.AsyncClient`.

A sweep makes a hundred thousand small GET requests to a few hosts, so the client's CPU per
request sets its speed, and every answer comes from a third party, so the parser that reads it
is attack surface. aiohttp parses responses with llhttp in C (the parser of Node.js) and is
among the most used Python packages; httpx's own transport costs several times its CPU per
request.

:class:`AiohttpClient` is an :class:`httpx.AsyncClient` (status backends, the host's own
among them, keep speaking httpx), whose transport is :class:`AiohttpTransport`.
:func:`flask_domainguard.status.http.fetch_json` sees it and calls :meth:`AiohttpTransport.get`
directly, skipping httpx's request and response objects (measured: 0.36 ms of CPU per lookup
through httpx, 0.12 ms for aiohttp alone).

A request carrying a :class:`~flask_domainguard.netguard.PeerGuard` (a URL from the network)
goes through a connection pool of its own, whose resolver drops every address the guard's rule
refuses before aiohttp connects: aiohttp then connects to a checked address, never to the name,
so neither a name pointing at ``169.254.169.254`` nor DNS rebinding reaches a refused address.
Each connection's peer is checked again before it carries a request (an IP literal skips the
resolver).
Requests with and without a guard never share a pool, nor do guards with different rules.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import certifi
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from multidict import CIMultiDictProxy
from yarl import URL

from .netguard import PEER_CHECK, AddressRefused, PeerGuard, address_refusal

__all__ = ["ACCEPT_ENCODING", "AiohttpClient", "AiohttpTransport", "Answer", "decoded"]

#: Bytes handed over per read of a body.
_CHUNK = 64 * 1024

#: The encodings :func:`decoded` reads, offered in every request's ``Accept-Encoding``.
ACCEPT_ENCODING = "gzip, deflate"


class _Refused(OSError):
    """Every address a name resolved to is refused by the guard's rule."""


class _GuardedResolver(AbstractResolver):
    """aiohttp's resolver, less the addresses a network-derived URL may not reach."""

    def __init__(self, *, tls: bool, allow_private: bool) -> None:
        self._inner = aiohttp.DefaultResolver()
        self._tls = tls
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = []
        refusal: str | None = None
        for entry in found:
            why = address_refusal(entry["host"], tls=self._tls, allow_private=self._allow_private)
            if why is None:
                allowed.append(entry)
            else:
                refusal = refusal or why
        if not allowed:
            raise _Refused(refusal or f"no address for {host}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class _GuardedConnector(aiohttp.TCPConnector):
    """A pool whose connections all reach addresses the rule allows: the resolver picks
    them, and each connection's peer is checked again whenever it is handed out, new or
    kept alive, before a request byte is sent (an IP literal skips the resolver)."""

    def __init__(self, *, tls: bool, allow_private: bool, **kwargs: Any) -> None:
        super().__init__(resolver=_GuardedResolver(tls=tls, allow_private=allow_private), **kwargs)
        self._tls = tls
        self._allow_private = allow_private

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        conn = await super().connect(req, traces, timeout)
        transport = conn.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        why = address_refusal(address, tls=self._tls, allow_private=self._allow_private)
        if why is not None:
            conn.close()
            raise aiohttp.ClientConnectorError(req.connection_key, _Refused(why))
        return conn


def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


def _detail(exc: BaseException) -> str:
    """An error's text on one line, short: parser errors quote what the server sent, and
    errors are stored (``Domain.last_error``) and logged."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= 200 else text[:200] + "..."
    return text or type(exc).__name__


def _as_httpx_error(exc: BaseException) -> httpx.TransportError | None:
    """The httpx error for an aiohttp one (``None`` for anything else), so callers handle
    one family of errors whichever client they hold."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        # Before its own branch: aiohttp 3.13 has no os_error on this one.
        return httpx.ConnectError(_detail(exc.certificate_error))
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, _Refused):
            return AddressRefused(str(exc.os_error))
        # Certificate and TLS failures are connector errors too; their text says which.
        return httpx.ConnectError(_detail(exc.os_error))
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return httpx.ReadTimeout(_detail(exc))
    if isinstance(exc, aiohttp.ClientResponseError):  # a response llhttp refused to parse
        return httpx.RemoteProtocolError(_detail(exc))
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(_detail(exc))
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return httpx.ReadError(_detail(exc))
    return None


def _decoder(encoding: str) -> Any:
    """A zlib decompressor for a ``Content-Encoding`` (``None`` when there is none);
    :class:`httpx.DecodingError` for one the client did not offer."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if name == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    raise httpx.DecodingError(f"unsupported content encoding {name[:40]!r}")


async def decoded(raw: AsyncIterator[bytes], encoding: str) -> AsyncIterator[bytes]:
    """``raw`` (a body as sent, in ``encoding``) decompressed, in pieces of at most 64 KiB.

    Decompressed here rather than by aiohttp or httpx, whose output per input chunk is
    unbounded (aiohttp 3.13 hands over 64 MB at once for a gzip bomb; httpx decodes each
    64 KiB read whole): the caller's byte cap then sees every 64 KiB.

    :raises httpx.DecodingError: an encoding not in :data:`ACCEPT_ENCODING`, or a corrupt body.
    """
    decoder = _decoder(encoding)
    async for chunk in raw:
        if decoder is None:
            yield chunk
            continue
        data = chunk
        while True:
            try:
                piece = decoder.decompress(data, _CHUNK)
            except zlib.error as exc:
                raise httpx.DecodingError(f"bad compressed body: {_detail(exc)}") from exc
            data = decoder.unconsumed_tail
            if piece:
                yield piece
            elif not data:
                break


class Answer:
    """A response read off an aiohttp connection, with the part of :class:`httpx.Response`
    that :func:`~flask_domainguard.status.http.fetch_json` uses."""

    __slots__ = ("_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: CIMultiDictProxy[str] = response.headers

    async def raw_bytes(self) -> AsyncIterator[bytes]:
        """The body as sent (still compressed), in pieces of at most 64 KiB."""
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk
        except Exception as exc:
            mapped = _as_httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, decompressed in bounded pieces (:func:`decoded`)."""
        return decoded(self.raw_bytes(), self.headers.get("content-encoding", ""))

    async def read_capped(self, limit: int) -> bytes | None:
        """The body, decompressed, or ``None`` as soon as it is longer than ``limit`` bytes
        (reading stops there: the rest is never read). Raises as :meth:`raw_bytes` does.

        The usual answer, not compressed, is read without the generators of
        :meth:`aiter_bytes` (each costs the event loop's bookkeeping of async generators).
        """
        chunks: list[bytes] = []
        size = 0
        if "content-encoding" in self.headers:
            async for piece in self.aiter_bytes():
                size += len(piece)
                if size > limit:
                    return None
                chunks.append(piece)
            return b"".join(chunks)
        content = self._response.content
        try:
            while chunk := await content.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
        except Exception as exc:
            mapped = _as_httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def aclose(self) -> None:
        """Give the connection back, kept alive only after a complete body (a part read
        leaves the rest of a hostile answer on the socket)."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class _Stream(httpx.AsyncByteStream):
    def __init__(self, answer: Answer) -> None:
        self._answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._answer.raw_bytes():  # httpx decodes
            yield chunk

    async def aclose(self) -> None:
        await self._answer.aclose()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 through aiohttp, with the SSRF rule at connect time (see the module).

    :param max_connections: connections one pool holds at once.
    :param keepalive_expiry: seconds an idle connection is kept.
    """

    def __init__(self, max_connections: int, *, keepalive_expiry: float = 5.0) -> None:
        self._max_connections = max_connections
        self._keepalive = keepalive_expiry
        self._ssl: ssl.SSLContext | None = None
        #: One pool per rule: ``None`` for trusted URLs, ``(tls, allow_private)`` otherwise.
        self._sessions: dict[tuple[bool, bool] | None, aiohttp.ClientSession] = {}

    def _session(self, guard: PeerGuard | None) -> aiohttp.ClientSession:
        key = None if guard is None else (guard.tls, guard.allow_private)
        session = self._sessions.get(key)
        if session is None:
            # Made on first use: aiohttp objects belong to the running event loop.
            if self._ssl is None:
                self._ssl = _ssl_context()
            options: dict[str, Any] = {
                "limit": self._max_connections,
                "keepalive_timeout": self._keepalive,
                "ssl": self._ssl,
            }
            connector = (
                aiohttp.TCPConnector(**options)
                if guard is None
                else _GuardedConnector(tls=guard.tls, allow_private=guard.allow_private, **options)
            )
            session = self._sessions[key] = aiohttp.ClientSession(
                connector=connector,
                # No cookies: one lookup's answer must not change the next one's request.
                cookie_jar=aiohttp.DummyCookieJar(),
                # Proxies from the environment are httpx's business (see make_client).
                trust_env=False,
                # The caller bounds the whole exchange (fetch_json); no second clock here.
                timeout=aiohttp.ClientTimeout(total=None),
                # Only what Answer decodes (aiohttp would offer br with Brotli installed).
                headers={"Accept-Encoding": ACCEPT_ENCODING},
            )
        return session

    async def _open(
        self,
        method: str,
        url: httpx.URL | str,
        headers: Any,
        guard: PeerGuard | None,
        *,
        data: bytes | None = None,
    ) -> aiohttp.ClientResponse:
        session = self._session(guard)
        try:
            response = await session.request(
                method,
                # Text of an httpx.URL (or a Target's): encoded already, so not again.
                URL(url if isinstance(url, str) else str(url), encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
                # Never aiohttp's: Answer decodes in bounded pieces, httpx decodes its own.
                auto_decompress=False,
            )
        except Exception as exc:
            mapped = _as_httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        return response

    async def get(
        self, url: httpx.URL | str, headers: Mapping[str, str], guard: PeerGuard | None = None
    ) -> Answer:
        """GET ``url`` without redirects; raises :class:`httpx.TransportError` subclasses
        (:class:`~flask_domainguard.netguard.AddressRefused` for a refused address).

        :param url: as text, an encoded URL (``str`` of an :class:`httpx.URL`, or the text of a
            :class:`~flask_domainguard.status.http.Target`): it is sent as it is.
        """
        return Answer(await self._open("GET", url, headers, guard))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {request.url.scheme!r}")
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        # httpx decodes Content-Encoding itself: the bytes as sent, not Answer's decoding.
        response = await self._open(
            request.method,
            request.url,
            request.headers.multi_items(),
            request.extensions.get(PEER_CHECK),
            data=body or None,
        )
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_Stream(Answer(response)),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def aclose(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()


class AiohttpClient(httpx.AsyncClient):
    """An :class:`httpx.AsyncClient` over :class:`AiohttpTransport`; :attr:`aiohttp` is the
    transport, for callers that take the short way around httpx."""

    def __init__(self, max_connections: int) -> None:
        self.aiohttp = AiohttpTransport(max_connections)
        super().__init__(transport=self.aiohttp)
