"""One bounded JSON fetch shared by every HTTP status backend.

:func:`fetch_json` never raises for network trouble and never reads more than ``max_bytes``
of a body: status servers are third parties, and a hostile or broken one must not be able to
stall a sweep or fill memory. It reports facts (status code, decoded JSON, why it failed);
the backends decide what those facts mean.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

import httpx

from ..httpclient import ACCEPT_ENCODING, AiohttpClient, Answer, decoded
from ..netguard import AddressRefused, PeerGuard, proxied, url_refusal
from ..timeutil import utcnow, within
from .urls import Target

__all__ = ["MAX_REDIRECTS", "MAX_RETRY_AFTER", "FetchResult", "fetch_json", "parse_retry_after"]

logger = logging.getLogger(__name__)

#: Redirect hops followed before giving up; RDAP servers redirect, but never in long chains.
MAX_REDIRECTS = 5

#: A ``Retry-After`` longer than a day is treated as a day: a server must not be able to
#: park a domain's checks for months with one header.
MAX_RETRY_AFTER = 86400.0


@dataclass(frozen=True, kw_only=True)
class FetchResult:
    """What one GET returned.

    :param target: the URL finally answered (after redirects), also as :attr:`url`. It may
        carry a query-string key (Domainr), so it is never put into errors or logs.
    :param status: HTTP status code, ``None`` when no HTTP answer was read.
    :param error: why nothing usable came back (timeout, connection, TLS, redirects, size),
        already free of secrets; ``None`` otherwise.
    :param data: the decoded JSON body (any JSON value) when ``is_json``.
    :param is_json: whether the body decoded as JSON.
    :param empty: whether the body was empty (only whitespace).
    :param body_error: why a non-empty body was not JSON (``"not JSON (text/html)"``).
    :param retry_after: seconds from ``Retry-After`` on a 429 or 503, capped at a day.
    :param hosts: the hosts contacted, first to last (``host`` or ``host:port``).
    """

    target: Target
    status: int | None = None
    error: str | None = None
    data: Any = None
    is_json: bool = False
    empty: bool = False
    body_error: str | None = None
    retry_after: float | None = None
    content_type: str = ""
    hosts: tuple[str, ...] = ()

    @property
    def url(self) -> httpx.URL:
        """The URL finally answered (after redirects)."""
        return self.target.url

    @property
    def host(self) -> str:
        """The host that gave the final answer."""
        return self.hosts[-1] if self.hosts else self.target.netloc


class _Response(Protocol):
    """What is read of an answer: an :class:`httpx.Response`, or the sweep client's
    :class:`~flask_domainguard.httpclient.Answer`."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP-date).

    Negative and past values become 0; absurd ones are capped at :data:`MAX_RETRY_AFTER`;
    anything unreadable is ``None``.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds: float
    if re.fullmatch(r"-?\d+(?:\.\d+)?", text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # an HTTP-date is GMT by definition
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - utcnow()).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` without ``secrets``, in any spelling a URL gives them: error texts may quote
    the request's URL (aiohttp's parser errors do), where a key in the query string is
    percent-encoded."""
    for secret in secrets:
        if secret:
            for spelling in {secret, quote_plus(secret), quote(secret, safe=""), quote(secret)}:
                text = text.replace(spelling, "***")
    return text


def _describe(exc: BaseException, host: str) -> str:
    """A short, secret-free sentence for a transport failure."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out waiting for {host}"
    detail = str(exc).strip() or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        # TLS failures surface as ConnectError too; the text says which (certificate, ...).
        return f"could not connect to {host}: {detail}"
    if isinstance(exc, httpx.DecodingError):
        return f"could not decode the answer of {host}: {detail}"
    return f"request to {host} failed ({type(exc).__name__}): {detail}"


async def fetch_json(
    client: httpx.AsyncClient,
    url: str | httpx.URL | Target,
    *,
    headers: Mapping[str, str],
    max_bytes: int,
    timeout: float,
    secret_headers: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    max_redirects: int = MAX_REDIRECTS,
    trusted: bool = True,
    allow_private: bool = False,
) -> FetchResult:
    """GET ``url`` and decode its JSON body, within ``timeout`` seconds and ``max_bytes``.

    Redirects are followed here rather than by httpx so that the hop limit holds whatever the
    injected client's settings, an ``https`` URL never redirects to plain ``http``, and
    ``secret_headers`` (API keys) go to the first origin only.

    A URL that came from the network (``trusted=False``: an RDAP bootstrap entry), and any
    redirect to another origin than a trusted ``url``'s, must be https to a public address
    (:mod:`flask_domainguard.netguard`); a refused one is a failed fetch with ``error`` set,
    and nothing is sent to it.

    :param url: a :class:`Target` from an :class:`Endpoint` saves parsing it per fetch.
    :param headers: sent with every request.
    :param secret_headers: sent only to the origin of ``url``.
    :param secrets: strings to blank out of any error text (keys in query strings).
    :param timeout: seconds for the whole exchange, body included (httpx's own timeouts are
        per operation, so a server dripping one byte a second would never trip them).
    :param trusted: ``url`` is the operator's own (configuration), not from the network.
    :param allow_private: network-derived URLs may reach private addresses, over plain http
        too (``DOMAINGUARD_STATUS_ALLOW_PRIVATE``).
    """
    start = url if isinstance(url, Target) else Target.of(httpx.URL(url))
    secret_list = [s for s in secrets if s]
    try:
        return await within(
            _fetch(
                client,
                start,
                headers=headers,
                secret_headers=secret_headers or {},
                max_bytes=max_bytes,
                timeout=timeout,
                secrets=secret_list,
                max_redirects=max_redirects,
                trusted=trusted,
                allow_private=allow_private,
            ),
            timeout,
        )
    except asyncio.TimeoutError:
        error = f"timed out after {timeout:g} s waiting for {start.netloc}"
        return FetchResult(target=start, error=error, hosts=())


async def _fetch(
    client: httpx.AsyncClient,
    start: Target,
    *,
    headers: Mapping[str, str],
    secret_headers: Mapping[str, str],
    max_bytes: int,
    timeout: float,
    secrets: list[str],
    max_redirects: int,
    trusted: bool,
    allow_private: bool,
) -> FetchResult:
    current = start
    hosts: list[str] = []
    status: int | None = None  # of the redirect that led here
    # Built once per fetch, not per hop: the secret headers go to the first origin only.
    other_origin = dict(headers)
    if not any(name.lower() == "accept-encoding" for name in other_origin):
        # Only what _read decodes in bounded pieces (httpx would offer br or zstd when
        # their packages are installed).
        other_origin["Accept-Encoding"] = ACCEPT_ENCODING
    first_origin = {**other_origin, **secret_headers} if secret_headers else other_origin
    for _hop in range(max_redirects + 1):
        host = current.netloc
        hosts.append(host)
        same_origin = current.scheme == start.scheme and current.netloc == start.netloc
        send_headers = first_origin if same_origin else other_origin
        guard: PeerGuard | None = None
        if not (trusted and same_origin):
            # The checks read the origin only (scheme, host, port).
            origin = current.origin
            refusal = url_refusal(origin, allow_private=allow_private)
            if refusal is not None:
                return _refused(current, status, hosts, refusal)
            guard = PeerGuard(origin, allow_private=allow_private, proxied=proxied(client, origin))
        response: _Response
        try:
            if isinstance(client, AiohttpClient):
                # The sweep's client: straight to aiohttp, which checks the guard itself.
                response = await client.aiohttp.get(current.text, send_headers, guard)
            else:
                request = client.build_request(
                    "GET",
                    current.url,
                    headers=send_headers,
                    timeout=timeout,
                    extensions=guard.extensions() if guard is not None else None,
                )
                response = await client.send(request, stream=True, follow_redirects=False)
        except AddressRefused as exc:
            return _refused(current, status, hosts, str(exc))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return FetchResult(
                target=current, error=_redact(_describe(exc, host), secrets), hosts=tuple(hosts)
            )
        try:
            refusal = (
                guard.response_refusal(response)
                if guard is not None and isinstance(response, httpx.Response)
                else None
            )
            if refusal is not None:
                return _refused(current, status, hosts, refusal)
            location = response.headers.get("location")
            if response.status_code in (301, 302, 303, 307, 308) and location:
                try:
                    target = current.url.join(location)
                except (httpx.InvalidURL, ValueError):
                    return FetchResult(
                        target=current,
                        status=response.status_code,
                        error=f"{host} redirected to an invalid URL",
                        hosts=tuple(hosts),
                    )
                if target.scheme not in ("http", "https"):
                    return FetchResult(
                        target=current,
                        status=response.status_code,
                        error=f"{host} redirected to a non-HTTP URL",
                        hosts=tuple(hosts),
                    )
                if current.scheme == "https" and target.scheme == "http":
                    # A downgrade would let anyone on the path forge the answer.
                    return FetchResult(
                        target=current,
                        status=response.status_code,
                        error=f"{host} redirected from https to plain http; not followed",
                        hosts=tuple(hosts),
                    )
                current = Target.of(target)
                status = response.status_code
                continue
            return await _read(response, current, max_bytes, secrets, tuple(hosts))
        finally:
            await response.aclose()
    return FetchResult(
        target=current,
        error=f"more than {max_redirects} redirects, starting at {hosts[0]}",
        hosts=tuple(hosts),
    )


def _refused(url: Target, status: int | None, hosts: list[str], why: str) -> FetchResult:
    """A network-derived URL that may not be contacted: a failed fetch, never an answer."""
    if len(hosts) > 1:
        error = f"{hosts[-2]} redirected to {hosts[-1]}, not followed: {why}"
    else:
        error = f"{hosts[-1]} not contacted: {why}"
    return FetchResult(
        target=url,
        status=status,
        error=error + " (a URL from the network must be https to a public address)",
        hosts=tuple(hosts),
    )


async def _read(
    response: _Response,
    url: Target,
    max_bytes: int,
    secrets: list[str],
    hosts: tuple[str, ...],
) -> FetchResult:
    host = hosts[-1]
    status = response.status_code
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    retry_after = (
        parse_retry_after(response.headers.get("retry-after")) if status in (429, 503) else None
    )

    def result(**outcome: Any) -> FetchResult:
        # Every outcome of this answer shares these fields; each adds its own.
        return FetchResult(
            target=url,
            status=status,
            retry_after=retry_after,
            content_type=content_type,
            hosts=hosts,
            **outcome,
        )

    too_big = f"answer of {host} is larger than {max_bytes} bytes; not read"
    declared = response.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        return result(error=too_big)
    try:
        body = await _body(response, max_bytes)
    except httpx.HTTPError as exc:
        return result(error=_redact(_describe(exc, host), secrets))
    if body is None:
        return result(error=too_big)
    if not body.strip():
        return result(empty=True)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        # ValueError covers bad JSON, bad encodings and huge integers; RecursionError a
        # hostile, deeply nested document.
        return result(body_error=f"not JSON ({content_type or 'no content type'})")
    return result(data=data, is_json=True)


async def _body(response: _Response, max_bytes: int) -> bytes | None:
    """The decompressed body, or ``None`` once it is longer than ``max_bytes``.

    Decompressed in bounded pieces, so a gzip bomb is cut off at the cap before it fills
    memory: httpx's own decoding (``aiter_bytes``) inflates each read whole.
    """
    if isinstance(response, Answer):
        return await response.read_capped(max_bytes)
    pieces = (
        decoded(response.aiter_raw(), response.headers.get("content-encoding", ""))
        if isinstance(response, httpx.Response)
        else response.aiter_bytes()
    )
    chunks: list[bytes] = []
    size = 0
    async for chunk in pieces:
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
