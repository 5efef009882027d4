"""DnsLookup against a real DNS server on 127.0.0.1: every zone the tests switch to, the hostile
answers, the time bound, and the resolver settings."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from flask_domainguard.config import ConfigError, load_settings
from flask_domainguard.status.dnslookup import MAX_RECORDS, DnsLookup
from flask_domainguard.status.observation import DnsFingerprint
from tests.dns_server import HUGE_RECORDS, DnsServer, Zone, zone


@pytest.fixture
def server() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()


def lookup(server: DnsServer, timeout: float = 1.0) -> DnsLookup:
    return DnsLookup([("127.0.0.1", server.port)], timeout=timeout)


def test_a_delegated_domain_gives_its_ns_mx_and_ds(server: DnsServer) -> None:
    server.set("startup.ai", zone("startup.ai", provider="dns.hoster.example"))
    obs = lookup(server).observe_sync("StartUp.AI.")
    assert obs.ok and obs.delegated is True and obs.error is None
    assert obs.fingerprint == DnsFingerprint(
        ns=frozenset({"ns1.dns.hoster.example", "ns2.dns.hoster.example"}),
        mx=frozenset({"mx.mail-host.example"}),
        ds=frozenset({f"{sum(b'startup.ai') % 65536}:13:2:{'ab' * 32}"}),
    )
    assert {qtype for (name, qtype) in server.queries if name == "startup.ai"} == {
        "NS",
        "MX",
        "DS",
    }


def test_switching_the_zone_is_seen_at_the_next_lookup(server: DnsServer) -> None:
    dns = lookup(server)
    server.set("startup.ai", zone("startup.ai"))
    before = dns.observe_sync("startup.ai").fingerprint
    server.set("startup.ai", zone("startup.ai", provider="other-dns.example"))
    after = dns.observe_sync("startup.ai").fingerprint
    assert before is not None and after is not None
    assert before.mx == after.mx and before.ns.isdisjoint(after.ns)


@pytest.mark.parametrize(
    ("behaviour", "detail"), [("nxdomain", "NXDOMAIN"), ("no_ns", "no NS records")]
)
def test_not_delegated(server: DnsServer, behaviour: str, detail: str) -> None:
    server.set("lapsed.ai", behaviour)
    obs = lookup(server).observe_sync("lapsed.ai")
    assert obs.ok and obs.delegated is False and obs.detail == detail
    assert obs.fingerprint is None


def test_an_unknown_name_is_nxdomain(server: DnsServer) -> None:
    obs = lookup(server).observe_sync("never-registered.ai")
    assert obs.delegated is False and obs.detail == "NXDOMAIN"


def test_mail_to_nowhere_and_no_mx(server: DnsServer) -> None:
    server.set("nomail.ai", Zone(ns=["ns1.host.example"], mx=["."]))
    server.set("nomx.ai", Zone(ns=["ns1.host.example"]))
    dns = lookup(server)
    nomail, nomx = dns.observe_sync("nomail.ai"), dns.observe_sync("nomx.ai")
    assert nomail.fingerprint is not None and nomail.fingerprint.mx == frozenset({"."})
    assert nomx.fingerprint is not None and nomx.fingerprint.mx == frozenset()
    assert nomx.fingerprint.ds == frozenset()


def test_a_silent_server_is_a_failure_within_the_timeout(server: DnsServer) -> None:
    server.set("silent.ai", "silent")
    started = time.monotonic()
    obs = lookup(server, timeout=0.6).observe_sync("silent.ai")
    elapsed = time.monotonic() - started
    assert obs.delegated is None and not obs.ok
    assert obs.error is not None and "in time" in obs.error
    assert elapsed < 0.6 + 0.6  # the timeout and the documented half second of slack
    assert server.count("silent.ai") >= 3  # it was asked (NS, MX, DS at least once each)


def test_servfail_is_a_failure(server: DnsServer) -> None:
    server.set("broken.ai", "servfail")
    obs = lookup(server).observe_sync("broken.ai")
    assert obs.delegated is None and obs.error is not None and "SERVFAIL" in obs.error


def test_a_truncated_udp_answer_is_asked_again_over_tcp(server: DnsServer) -> None:
    records = zone("big.ai")
    records.behaviour = "truncated"
    server.set("big.ai", records)
    obs = lookup(server).observe_sync("big.ai")
    assert obs.delegated is True and obs.fingerprint is not None
    assert obs.fingerprint.ns == frozenset({"ns1.dns-host.example", "ns2.dns-host.example"})
    assert server.transports["tcp"] >= 3 and server.transports["udp"] >= 3


def test_a_huge_answer_is_refused_not_stored(server: DnsServer) -> None:
    server.set("flood.ai", "huge")
    obs = lookup(server).observe_sync("flood.ai")
    assert HUGE_RECORDS > MAX_RECORDS
    assert obs.delegated is None and obs.fingerprint is None
    assert obs.error is not None and f"more than {MAX_RECORDS}" in obs.error


@pytest.mark.parametrize("behaviour", ["wrong_question", "wrong_id"])
def test_answers_that_do_not_match_the_query_are_ignored(server: DnsServer, behaviour: str) -> None:
    """A spoofed or misrouted answer (another question, another id) is never read: the
    lookup fails as if nobody had answered."""
    records = zone("spoofed.ai", provider="attacker.example")
    records.behaviour = behaviour
    server.set("spoofed.ai", records)
    obs = lookup(server, timeout=0.6).observe_sync("spoofed.ai")
    assert obs.delegated is None and obs.fingerprint is None and obs.error is not None


def test_not_a_domain_is_not_looked_up(server: DnsServer) -> None:
    obs = lookup(server).observe_sync("not a domain")
    assert obs.delegated is None and obs.error is not None
    assert sum(server.queries.values()) == 0


def test_no_resolver_at_all_fails_every_lookup_without_raising(server: DnsServer) -> None:
    dns = DnsLookup([], timeout=0.5)
    obs = dns.observe_sync("startup.ai")
    assert obs.delegated is None and obs.error is not None


def test_a_second_resolver_answers_when_the_first_is_dead(server: DnsServer) -> None:
    server.set("startup.ai", zone("startup.ai"))
    dead = DnsServer()  # bound, never started: a resolver that never answers
    try:
        dns = DnsLookup([("127.0.0.1", dead.port), ("127.0.0.1", server.port)], timeout=1.5)
        obs = dns.observe_sync("startup.ai")
    finally:
        dead.udp.close()
        dead.tcp.server_close()
    assert obs.delegated is True


def test_fingerprint_columns_round_trip() -> None:
    fingerprint = DnsFingerprint(
        ns=frozenset({"b.example", "a.example"}), mx=frozenset({"."}), ds=frozenset({"1:8:2:ff"})
    )
    assert fingerprint.columns() == ("a.example b.example", ".", "1:8:2:ff")
    assert DnsFingerprint.from_columns(*fingerprint.columns()) == fingerprint
    assert DnsFingerprint.from_columns(None, None, None) == DnsFingerprint(
        ns=frozenset(), mx=frozenset()
    )


def test_resolver_settings_are_validated() -> None:
    settings = load_settings(
        {"DOMAINGUARD_DNS_RESOLVERS": ["9.9.9.9", "127.0.0.1:5353", "[::1]:53", "2001:db8::1"]}
    )
    assert settings.dns_resolvers == (
        ("9.9.9.9", 53),
        ("127.0.0.1", 5353),
        ("::1", 53),
        ("2001:db8::1", 53),
    )
    assert load_settings({}).dns_resolvers is None
    assert load_settings({}).dns_timeout == 2.0
    assert load_settings({}).dns_evidence == "fallback"
    for bad in (["dns.google"], ["1.2.3.4:99999"], [], "1.2.3.4:x", ["[::1]x"], [53]):
        with pytest.raises(ConfigError, match="DOMAINGUARD_DNS_RESOLVERS"):
            load_settings({"DOMAINGUARD_DNS_RESOLVERS": bad})
    with pytest.raises(ConfigError, match="DOMAINGUARD_DNS_EVIDENCE"):
        load_settings({"DOMAINGUARD_DNS_EVIDENCE": "sometimes"})
    with pytest.raises(ConfigError, match="DOMAINGUARD_DNS_TIMEOUT"):
        load_settings({"DOMAINGUARD_DNS_TIMEOUT": 0})
