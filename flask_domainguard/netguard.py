"""Which network addresses a status lookup may reach: no SSRF through URLs from the network.

The operator's own URLs (``DOMAINGUARD_RDAP_SERVERS``, ``DOMAINGUARD_RDAP_BOOTSTRAP_URL``,
``DOMAINGUARD_FASTLY_URL``, ``DOMAINGUARD_DOMAINR_URL``) are trusted as given. A URL that came
from the network (an RDAP bootstrap entry, a redirect to another origin) is not: it must be
``https`` and it may connect only to a public address, so that a hostile bootstrap file or
status server cannot point DomainGuard at ``169.254.169.254``, ``127.0.0.1:6379`` or the
intranet. ``DOMAINGUARD_STATUS_ALLOW_PRIVATE`` lets tests and air-gapped installs reach
private addresses from such URLs, over plain ``http`` too; public addresses always need
``https``.

The address checked is the one connected to, not the name: :class:`PeerGuard` travels with
the request (request extensions), and each transport checks the address it connects to
(:class:`~flask_domainguard.httpclient.AiohttpTransport` drops refused addresses when the
name is resolved, before connecting, and checks each connection's peer again; httpx's own
transport right after the TCP connect, before TLS or any request byte), so a name that
resolves to a private address, or re-resolves to one (DNS rebinding), is refused. The
address ranges are spelled out here rather than taken from :mod:`ipaddress`'s
``is_global``, whose answers change between Python versions.
"""

from __future__ import annotations

import ipaddress
import urllib.request
import weakref
from typing import Any

import httpx

__all__ = [
    "PEER_CHECK",
    "AddressRefused",
    "PeerGuard",
    "address_refusal",
    "non_public_kind",
    "url_refusal",
]

#: Request extension holding the :class:`PeerGuard` of a network-derived URL (read by
#: :class:`~flask_domainguard.httpclient.AiohttpTransport`).
PEER_CHECK = "domainguard.peer_check"

_V4 = [
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
]
_V6 = [
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "private"),
    ("100::/64", "reserved"),
    ("2001::/23", "reserved"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "reserved"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
]
_V4_RANGES = [(ipaddress.IPv4Network(net), kind) for net, kind in _V4]
_V6_RANGES = [(ipaddress.IPv6Network(net), kind) for net, kind in _V6]
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def non_public_kind(address: str) -> str | None:
    """What kind of non-public address ``address`` is (``"loopback"``, ``"private"``, ...),
    or ``None`` when it is a public unicast address. Text that is no IP address is
    ``"not an IP address"``.

    IPv6 addresses that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64
    ``64:ff9b::/96``, 6to4 ``2002::/16``) are judged by the IPv4 address inside.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0].strip("[]"))
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return non_public_kind(str(embedded))
        for net6, kind in _V6_RANGES:
            if ip in net6:
                return kind
        return None if ip in _GLOBAL_UNICAST else "reserved"
    for net4, kind in _V4_RANGES:
        if ip in net4:
            return kind
    return None


def address_refusal(address: str, *, tls: bool, allow_private: bool) -> str | None:
    """Why a network-derived URL must not connect to ``address``; ``None`` when it may.

    Public addresses need TLS; private ones need ``allow_private`` (then plain http is
    accepted too, for local mirrors).
    """
    kind = non_public_kind(address)
    if kind is None:
        return None if tls else f"plain http to the public address {address}"
    if allow_private and kind != "not an IP address":
        return None
    return f"{address} is a {kind} address"


def url_refusal(url: httpx.URL, *, allow_private: bool) -> str | None:
    """Why a network-derived ``url`` is refused before any connection; ``None`` when it may
    be tried (its address is then checked when connecting)."""
    if url.scheme not in ("http", "https"):
        return f"{url.scheme or 'no'} scheme, not https"
    tls = url.scheme == "https"
    host = url.host
    if non_public_kind(host) != "not an IP address":  # an IP literal: judged right here
        return address_refusal(host, tls=tls, allow_private=allow_private)
    if not tls and not allow_private:
        return "plain http"
    return None


class AddressRefused(httpx.ConnectError):
    """A transport refused to connect (or to send) to a non-public address."""


class PeerGuard:
    """Checks the address a network-derived request actually connects to.

    Pass it with the request (:meth:`extensions`); the transports call :meth:`check` with
    the socket's peer address. :attr:`refused` keeps the first refusal for the error text.
    """

    def __init__(self, url: httpx.URL, *, allow_private: bool, proxied: bool = False) -> None:
        self.host = url.host
        self.tls = url.scheme == "https"
        self.allow_private = allow_private
        self.refused: str | None = None
        self._proxied = proxied

    def extensions(self) -> dict[str, Any]:
        """Request extensions: :data:`PEER_CHECK` for the sweep's transport, ``trace`` for
        httpcore."""
        return {PEER_CHECK: self, "trace": self.trace}

    def check(self, address: str) -> str | None:
        """Why connecting to ``address`` is refused, or ``None``."""
        reason = address_refusal(address, tls=self.tls, allow_private=self.allow_private)
        if reason is not None and self.refused is None:
            self.refused = reason
        return reason

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: check the peer right after the TCP connect, before TLS.

        A connection to another host than the URL's is a proxy's; its peer says nothing
        about the final address, which the proxy resolves (see :func:`proxied`).
        """
        if event == "connection.connect_tcp.started":
            self._proxied = self._proxied or str(info.get("host", "")).lower() != self.host.lower()
        elif event == "connection.connect_tcp.complete" and not self._proxied:
            stream = info.get("return_value")
            reason = self.check(_server_address(stream) or "")
            if reason is not None:
                if stream is not None:
                    await stream.aclose()
                raise AddressRefused(reason)

    def response_refusal(self, response: httpx.Response) -> str | None:
        """Check the peer of the connection that answered (a kept-alive connection skips the
        connect hook); ``None`` when it is allowed or the transport does not say."""
        if self._proxied:
            return None
        stream = response.extensions.get("network_stream")
        address = _server_address(stream)
        return None if address is None else self.check(address)


def _server_address(stream: Any) -> str | None:
    if stream is None:
        return None
    try:
        addr = stream.get_extra_info("server_addr")
    except Exception:  # a transport without socket details
        return None
    if isinstance(addr, tuple) and addr and isinstance(addr[0], str):
        return addr[0]
    return None


_client_proxies: weakref.WeakKeyDictionary[httpx.AsyncClient, dict[str, str]] = (
    weakref.WeakKeyDictionary()
)


def proxied(client: httpx.AsyncClient, url: httpx.URL) -> bool:
    """Whether ``client`` sends ``url`` through an HTTP proxy from the environment, which
    then connects (and resolves the name) itself.

    The environment is read once per client, as httpx does (reading it costs more than the
    rest of the checks of a request together).
    """
    if not client.trust_env:
        return False
    proxies = _client_proxies.get(client)
    if proxies is None:
        proxies = _client_proxies[client] = urllib.request.getproxies()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(url.host)
