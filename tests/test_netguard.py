"""No SSRF through status lookups (:mod:`flask_domainguard.netguard`, issue 11 case 7).

URLs that come from the network (RDAP bootstrap entries, redirects to another origin) must be
https to a public address, checked on the address actually connected to. The attack: a
registry (or whoever answers for it) redirects DomainGuard to ``169.254.169.254`` or to
another service on the machine, or a bootstrap file lists such a base. Each test shows the
lookup fails closed and that nothing reaches the target: a second real server counts every
request, and the link-local target is a respx route (so a regression could never send a
packet to a real metadata service).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from flask.testing import FlaskCliRunner

from flask_domainguard.httpclient import AiohttpClient
from flask_domainguard.netguard import address_refusal, non_public_kind, url_refusal
from flask_domainguard.status.http import fetch_json
from flask_domainguard.status.observation import Observation
from flask_domainguard.status.rdap import RdapBackend
from tests.guard_helpers import add
from tests.rdap_support import RdapServer, domain_doc

HEALTHY = (("registration", "2001-01-01T00:00:00Z"), ("expiration", "2031-01-01T00:00:00Z"))


# -- which addresses are public ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("100.127.255.254", "shared (carrier-grade NAT)"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to classify, not to bind
        ("224.0.0.251", "multicast"),
        ("239.1.2.3", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.0.8", "reserved"),
        ("192.0.2.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("64:ff9b:1::1", "private"),
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of 169.254.169.254
        ("::127.0.0.1", "reserved"),
        ("2001:db8::1", "documentation"),
        ("100::1", "reserved"),
        ("8000::1", "reserved"),
        ("localhost", "not an IP address"),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("100.63.255.255", None),
        ("100.128.0.0", None),
        ("172.32.0.1", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("2606:4700:4700::1111", None),
        ("[2a00:1450:4001::200e]", None),
    ],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert non_public_kind(address) == kind


@pytest.mark.parametrize(
    ("address", "tls", "allow_private", "allowed"),
    [
        ("8.8.8.8", True, False, True),
        ("8.8.8.8", False, False, False),
        ("8.8.8.8", False, True, False),  # plain http never to a public address
        ("127.0.0.1", True, False, False),
        ("127.0.0.1", True, True, True),
        ("10.0.0.1", False, True, True),  # a local mirror over http, when allowed
        ("fe80::1", True, True, True),
        ("not-an-ip", True, True, False),
    ],
)
def test_address_refusal(address: str, tls: bool, allow_private: bool, allowed: bool) -> None:
    reason = address_refusal(address, tls=tls, allow_private=allow_private)
    assert (reason is None) is allowed


@pytest.mark.parametrize(
    ("url", "allow_private", "refused"),
    [
        ("https://rdap.example/", False, None),
        ("http://rdap.example/", False, "plain http"),
        ("http://rdap.example/", True, None),  # checked on the address when connecting
        ("https://127.0.0.1:8443/", False, "loopback"),
        ("https://127.0.0.1:8443/", True, None),
        ("http://169.254.169.254/latest/meta-data/", False, "link-local"),
        ("http://169.254.169.254/latest/meta-data/", True, None),
        ("https://[::1]/", False, "loopback"),
        ("https://[::ffff:a9fe:a9fe]/", False, "link-local"),
        ("http://8.8.8.8/", True, "plain http"),
        ("ftp://rdap.example/", False, "scheme"),
    ],
)
def test_url_refusal(url: str, allow_private: bool, refused: str | None) -> None:
    reason = url_refusal(httpx.URL(url), allow_private=allow_private)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


# -- fetch_json: trusted start, network-derived redirects --------------------------------------


@pytest.fixture
def second_server() -> Iterator[RdapServer]:
    """Another service on this machine, which no lookup may reach uninvited."""
    server = RdapServer().start()
    yield server
    server.stop()


def fetch(url: str, **kwargs: Any) -> Any:
    async def go() -> Any:
        async with httpx.AsyncClient() as client:
            return await fetch_json(client, url, headers={}, max_bytes=100_000, timeout=3, **kwargs)

    return asyncio.run(go())


def fetch_fast(url: str, **kwargs: Any) -> Any:
    async def go() -> Any:
        async with AiohttpClient(4) as client:
            return await fetch_json(client, url, headers={}, max_bytes=100_000, timeout=3, **kwargs)

    return asyncio.run(go())


@pytest.mark.parametrize("get", [fetch, fetch_fast], ids=["httpx", "aiohttp"])
def test_a_redirect_from_a_trusted_server_to_another_local_port_is_not_followed(
    rdap_registry: RdapServer, second_server: RdapServer, get: Any
) -> None:
    second_server.docs["a.example"] = domain_doc("a.example", *HEALTHY)
    rdap_registry.redirects["a.example"] = f"{second_server.base}domain/a.example"
    rdap_registry.redirects["b.example"] = f"{rdap_registry.base}domain/c.example"  # same origin
    rdap_registry.docs["c.example"] = domain_doc("c.example", *HEALTHY)

    refused = get(f"{rdap_registry.base}domain/a.example")
    assert refused.error is not None and "not followed" in refused.error
    assert "loopback" in refused.error and refused.data is None
    assert second_server.total_hits() == 0, "the request never reached the second server"

    # The configured server's own redirects (same origin) are followed as before.
    same = get(f"{rdap_registry.base}domain/b.example")
    assert same.error is None and same.data["ldhName"] == "C.EXAMPLE"

    # DOMAINGUARD_STATUS_ALLOW_PRIVATE: a test or an air-gapped mirror may go there.
    allowed = get(f"{rdap_registry.base}domain/a.example", allow_private=True)
    assert allowed.error is None and allowed.data["ldhName"] == "A.EXAMPLE"
    assert second_server.total_hits() == 1


def test_a_redirect_to_the_metadata_address_is_not_followed(rdap_registry: RdapServer) -> None:
    rdap_registry.redirects["a.example"] = "http://169.254.169.254/latest/meta-data/iam/"
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()
        metadata = router.route(host="169.254.169.254").mock(
            return_value=httpx.Response(200, json={"secret": "s3cr3t"})
        )
        result = fetch(f"{rdap_registry.base}domain/a.example")
    assert result.error is not None and "169.254.169.254" in result.error
    assert "link-local" in result.error and "s3cr3t" not in result.error
    assert not metadata.called


def test_a_network_derived_url_is_refused_before_any_request(second_server: RdapServer) -> None:
    for get in (fetch, fetch_fast):
        result = get(f"{second_server.base}domain/a.example", trusted=False)
        assert result.error is not None and "not contacted" in result.error
    assert second_server.total_hits() == 0


def test_the_refusal_names_hosts_but_never_secrets(
    rdap_registry: RdapServer, second_server: RdapServer
) -> None:
    rdap_registry.redirects["a.example"] = f"{second_server.origin}/steal?client_id=KEY123"
    result = fetch(
        f"{rdap_registry.base}domain/a.example",
        secrets=["KEY123"],
        secret_headers={"Fastly-Key": "KEY123"},
    )
    assert result.error is not None and "KEY123" not in result.error
    assert f"127.0.0.1:{second_server.port}" in result.error
    assert second_server.total_hits() == 0


# -- the address connected to, not the name ----------------------------------------------------


class CountingTcpServer:
    """A TCP server on 127.0.0.1 counting connections and bytes received (it never answers)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self.received = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(0.3)
            try:
                while data := conn.recv(4096):
                    self.received += len(data)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def tcp_server() -> Iterator[CountingTcpServer]:
    server = CountingTcpServer()
    yield server
    server.close()


def test_a_name_that_resolves_to_loopback_is_refused_on_its_address(
    tcp_server: CountingTcpServer,
) -> None:
    """``localhost`` passes every check a name can pass (https, not an IP literal); the
    address it connects to is loopback. The sweep's transport never connects; httpx's own
    refuses right after the TCP connect, before TLS: no byte reaches the server either way."""
    url = f"https://localhost:{tcp_server.port}/rdap/domain/a.example"
    fast = fetch_fast(url, trusted=False)
    assert fast.error is not None and "loopback" in fast.error
    assert tcp_server.connections == 0

    slow = fetch(url, trusted=False)
    assert slow.error is not None and "loopback" in slow.error
    assert tcp_server.received == 0


def test_a_kept_alive_connection_is_checked_again_for_a_network_derived_url(
    rdap_registry: RdapServer,
) -> None:
    """A connection opened for the operator's own URL is not reused for a refused one."""
    rdap_registry.docs["a.example"] = domain_doc("a.example", *HEALTHY)
    url = f"{rdap_registry.base}domain/a.example"

    async def go() -> tuple[Any, Any]:
        async with AiohttpClient(1) as client:
            first = await fetch_json(client, url, headers={}, max_bytes=100_000, timeout=3)
            second = await fetch_json(
                client, url, headers={}, max_bytes=100_000, timeout=3, trusted=False
            )
            return first, second

    first, second = asyncio.run(go())
    assert first.error is None
    assert second.error is not None and "loopback" in second.error
    assert rdap_registry.hits["/rdap/domain/a.example"] == 1


# -- the RDAP backend: bootstrap entries come from the network ---------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_bootstrap_listing_a_loopback_base_fails_closed(
    tmp_path: Path, rdap_registry: RdapServer, second_server: RdapServer, scheme: str
) -> None:
    second_server.docs["a.lol"] = domain_doc("a.lol", *HEALTHY)
    rdap_registry.bootstrap = {
        "services": [[["lol"], [f"{scheme}://127.0.0.1:{second_server.port}/rdap/"]]]
    }
    backend = RdapBackend(
        bootstrap_url=f"{rdap_registry.origin}/bootstrap.json",  # configured: trusted
        bootstrap_file=tmp_path / "boot.json",
        servers={},
        timeout=2.0,
    )
    obs = asyncio.run(backend.observe("a.lol"))
    assert obs.registered is None, "a refused server is a failed lookup, never 'released'"
    assert obs.error is not None and "loopback" in obs.error
    assert second_server.total_hits() == 0
    assert rdap_registry.hits["/bootstrap.json"] == 1


def test_a_bootstrap_listing_the_metadata_address_fails_closed(tmp_path: Path) -> None:
    boot = {"services": [[["lol"], ["https://169.254.169.254/rdap/"]]]}
    with respx.mock(assert_all_called=False) as router:
        router.get("https://iana.test/dns.json").mock(return_value=httpx.Response(200, json=boot))
        metadata = router.route(host="169.254.169.254").mock(
            return_value=httpx.Response(200, json=domain_doc("a.lol", *HEALTHY))
        )
        backend = RdapBackend(
            bootstrap_url="https://iana.test/dns.json",
            bootstrap_file=tmp_path / "boot.json",
            servers={},
        )

        async def go() -> Observation:
            async with httpx.AsyncClient() as client:
                return await backend.observe("a.lol", client=client)

        obs = asyncio.run(go())
    assert obs.registered is None and obs.error is not None and "link-local" in obs.error
    assert not metadata.called


def test_allow_private_lets_a_local_bootstrap_through(
    tmp_path: Path, rdap_registry: RdapServer, second_server: RdapServer
) -> None:
    second_server.docs["a.lol"] = domain_doc("a.lol", *HEALTHY)
    rdap_registry.bootstrap = {"services": [[["lol"], [f"{second_server.base}"]]]}
    backend = RdapBackend(
        bootstrap_url=f"{rdap_registry.origin}/bootstrap.json",
        bootstrap_file=tmp_path / "boot.json",
        servers={},
        allow_private=True,
    )
    assert asyncio.run(backend.observe("a.lol")).registered is True
    assert second_server.hits["/rdap/domain/a.lol"] == 1


# -- through the product: the check and sweep commands -----------------------------------------


@pytest.mark.use_rdap_registry("example")
def test_check_command_fails_closed_on_a_redirect_to_another_local_service(
    runner: FlaskCliRunner, rdap_registry: RdapServer, second_server: RdapServer
) -> None:
    """Issue 11, case 7: the configured RDAP server redirects to another port of this
    machine, which answers "healthy". The lookup fails; nothing reaches that service."""
    second_server.docs["victim.example"] = domain_doc("victim.example", *HEALTHY)
    rdap_registry.redirects["victim.example"] = f"{second_server.base}domain/victim.example"
    result = runner.invoke(args=["domainguard", "check", "victim.example", "--json"])
    assert result.exit_code == 4, result.output  # could not tell
    assert "not followed" in json.dumps(json.loads(result.stdout))
    assert second_server.total_hits() == 0


@pytest.mark.use_rdap_registry("example")
def test_sweep_fails_closed_on_a_redirect_and_changes_nothing(
    guard: Any,
    make_user: Any,
    runner: FlaskCliRunner,
    rdap_registry: RdapServer,
    second_server: RdapServer,
) -> None:
    """The sweep's own client (aiohttp) refuses the hop; the address stays verified."""
    second_server.docs["victim.example"] = domain_doc("victim.example", *HEALTHY)
    rdap_registry.redirects["victim.example"] = f"{second_server.base}domain/victim.example"
    row = add(guard, make_user(), "ann@victim.example")
    result = runner.invoke(args=["domainguard", "sweep", "--json"])
    # Its one lookup failed (retried later): more than half of the run's, so exit code 5.
    assert result.exit_code == 5, result.output
    assert second_server.total_hits() == 0
    assert rdap_registry.hits["/rdap/domain/victim.example"] >= 1
    guard.db.session.refresh(row)
    assert row.verified_at is not None


def test_the_setting_is_a_boolean_off_by_default_and_reaches_every_backend() -> None:
    from flask_domainguard.config import ConfigError, load_settings
    from flask_domainguard.status import create_backend

    assert load_settings({}).status_allow_private is False
    with pytest.raises(ConfigError, match="DOMAINGUARD_STATUS_ALLOW_PRIVATE"):
        load_settings({"DOMAINGUARD_STATUS_ALLOW_PRIVATE": "yes"})
    settings = load_settings(
        {"DOMAINGUARD_STATUS_ALLOW_PRIVATE": True, "DOMAINGUARD_FASTLY_API_KEY": "k"}
    )
    for name in ("rdap", "fastly"):
        backend: Any = create_backend(settings, name=name)
        assert backend.allow_private is True


@pytest.mark.use_rdap_registry("example")
def test_reset_is_refused_when_the_lookup_is_redirected_to_a_local_service(
    guard: Any, make_user: Any, rdap_registry: RdapServer, second_server: RdapServer
) -> None:
    """Case 7 at the reset: the local service would answer "healthy", which would be
    evidence; the hop is refused, so there is none and no reset is mailed."""
    second_server.docs["victim.example"] = domain_doc("victim.example", *HEALTHY)
    rdap_registry.redirects["victim.example"] = f"{second_server.base}domain/victim.example"
    add(guard, make_user(), "ann@victim.example")
    decision = guard.reset_decision("ann@victim.example")
    assert not decision.allowed and decision.reason == "no_evidence"
    assert second_server.total_hits() == 0
