"""DNS evidence end to end: a real DNS server and a real RDAP server on 127.0.0.1, the RDAP
backend knowing a server for .com only. Resets on .ai (no status server) go by DNS
continuity with the address's baseline; .com is unaffected in "fallback" mode; the sweep
unverifies a changed address after its confirmation; the attacker's newer address never moves
the victim's baseline; an honest user who moved DNS finds the way back by re-verifying."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskCliRunner

from flask_domainguard.addresses.verification import verification_token
from flask_domainguard.dnsverdict import FIRST_SEEN, VERIFICATION, Baseline
from flask_domainguard.journal import EventKind
from flask_domainguard.models import UnverifyReason
from flask_domainguard.sweep import Sweep
from flask_domainguard.timeutil import utcnow
from tests import hostapp
from tests.conftest import settings_from_marker
from tests.dns_server import DnsServer, RdapServer, zone
from tests.guard_helpers import enrol_2fa, events

FOUNDER = "founder@startup.ai"  # .ai: no status server in this backend
CTO = "cto@startup.com"  # .com: the RDAP server answers for it
BACKUP = "founder.backup@gmail.com"  # trusted provider: the owner's safe address

MOVED_NS = ["ns1.new-dns.example", "ns2.new-dns.example"]
MOVED_MX = ["mx.new-mail.example"]


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer().start()
    server.set("startup.ai", zone("startup.ai"))
    server.set("startup.com", zone("startup.com"))
    yield server
    server.stop()


@pytest.fixture
def rdap_server() -> Iterator[RdapServer]:
    server = RdapServer(("com",)).start()
    yield server
    server.stop()


@pytest.fixture
def app_config(
    app_config: dict[str, Any],
    dns_server: DnsServer,
    rdap_server: RdapServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> dict[str, Any]:
    return {
        **app_config,
        **rdap_server.config(str(tmp_path / "rdap-bootstrap.json")),
        **dns_server.config(),
        "DOMAINGUARD_RESET_LIVE_TIMEOUT": 2.0,
        "DOMAINGUARD_EXTERNAL_URL": "https://app.example",
        **settings_from_marker(request),
    }


def switch(dns_server: DnsServer, name: str, *, ns: bool, mx: bool) -> None:
    """Move ``name``'s name servers and/or mail exchangers to new providers."""
    records = zone(name)
    if ns:
        records.ns = list(MOVED_NS)
    if mx:
        records.mx = list(MOVED_MX)
    dns_server.set(name, records)


def founder(guard: Any, make_user: Any) -> tuple[Any, Any]:
    user = make_user()
    row = guard.add_address(user, FOUNDER, verified=True, primary=True)
    guard.add_address(user, BACKUP, verified=True)
    return user, row


def test_verified_address_gets_a_baseline_and_the_backend_says_what_it_covers(
    guard: Any, make_user: Any, dns_server: DnsServer, rdap_server: RdapServer
) -> None:
    _, row = founder(guard, make_user)
    baseline = Baseline.of(row)
    assert baseline is not None and baseline.kind == VERIFICATION
    assert baseline.fingerprint.ns == frozenset(zone("startup.ai").ns)
    assert baseline.fingerprint.mx == frozenset(zone("startup.ai").mx)
    assert len(baseline.fingerprint.ds) == 1
    backend = guard.status_backend()
    assert backend.covers("startup.ai") is False and backend.covers("startup.com") is True
    # A .com address in "fallback" mode: the DNS has no role, so no lookup, no baseline.
    cto = guard.add_address(make_user(), CTO, verified=True)
    assert Baseline.of(cto) is None and dns_server.count("startup.com") == 0
    # Trusted providers are never looked up.
    assert dns_server.count("gmail.com") == 0


@pytest.mark.parametrize(
    ("change", "allowed", "reason"),
    [
        ("unchanged", True, "allowed"),
        ("ns_only", True, "allowed"),
        ("mx_only", True, "allowed"),
        ("both", False, "domain_dns_changed"),
        ("nxdomain", False, "no_evidence"),
        ("no_ns", False, "no_evidence"),
        ("silent", False, "no_evidence"),
        ("servfail", False, "no_evidence"),
    ],
)
def test_reset_on_a_tld_without_status_server(
    guard: Any,
    make_user: Any,
    dns_server: DnsServer,
    rdap_server: RdapServer,
    change: str,
    allowed: bool,
    reason: str,
) -> None:
    founder(guard, make_user)
    if change == "ns_only":
        switch(dns_server, "startup.ai", ns=True, mx=False)
    elif change == "mx_only":
        switch(dns_server, "startup.ai", ns=False, mx=True)
    elif change == "both":
        switch(dns_server, "startup.ai", ns=True, mx=True)
    elif change != "unchanged":
        dns_server.set("startup.ai", change)
    before = dns_server.count("startup.ai")
    decision = guard.reset_decision(FOUNDER)
    assert (decision.allowed, decision.reason) == (allowed, reason)
    assert dns_server.count("startup.ai") > before  # a live DNS lookup decided
    assert rdap_server.hits["startup.ai"] == 0  # no status server was asked
    domain = guard.db.session.get(guard.models.Domain, "startup.ai")
    if change in ("silent", "servfail"):
        assert domain.dns_checked_at is None  # a failed lookup records nothing
    else:
        assert domain.dns_checked_at is not None
    if change == "both":
        assert domain.verdict == "dns_changed" and domain.unsafe_since is not None
        # Refusing needs no confirmation, but unverifying is the sweep's job.
        assert guard.find_address(FOUNDER).verified


def test_a_covered_tld_is_unaffected_in_fallback_mode(
    guard: Any, make_user: Any, dns_server: DnsServer, rdap_server: RdapServer
) -> None:
    guard.add_address(make_user(), CTO, verified=True)
    for behaviour in ("nxdomain", "silent"):
        dns_server.set("startup.com", behaviour)
        guard.db.session.execute(
            sa.update(guard.models.Domain).values(checked_at=None, verdict=None)
        )
        guard.db.session.commit()
        decision = guard.reset_decision(CTO)
        assert decision.allowed and decision.reason == "allowed"
    assert dns_server.count("startup.com") == 0
    assert rdap_server.hits["startup.com"] == 2


@pytest.mark.settings(DOMAINGUARD_DNS_EVIDENCE="always")
def test_always_adds_the_dns_beside_rdap(
    guard: Any, make_user: Any, dns_server: DnsServer, rdap_server: RdapServer
) -> None:
    row = guard.add_address(make_user(), CTO, verified=True)
    assert Baseline.of(row) is not None  # a second signal needs its baseline too
    # The DNS failing is no veto: the registry's answer is the evidence for .com.
    dns_server.set("startup.com", "silent")
    decision = guard.reset_decision(CTO)
    assert decision.allowed
    # Both sets moved while the registry still shows the old registration: refused.
    switch(dns_server, "startup.com", ns=True, mx=True)
    guard.db.session.execute(sa.update(guard.models.Domain).values(checked_at=None))
    guard.db.session.commit()
    decision = guard.reset_decision(CTO)
    assert (decision.allowed, decision.reason) == (False, "domain_dns_changed")
    assert rdap_server.hits["startup.com"] == 2


@pytest.mark.settings(DOMAINGUARD_DNS_EVIDENCE="off")
def test_off_never_reads_the_dns(
    guard: Any, make_user: Any, dns_server: DnsServer, rdap_server: RdapServer
) -> None:
    _, row = founder(guard, make_user)
    assert Baseline.of(row) is None
    decision = guard.reset_decision(FOUNDER)
    assert (decision.allowed, decision.reason) == (False, "no_evidence")
    assert sum(dns_server.queries.values()) == 0


def test_the_attackers_newer_address_never_moves_the_victims_baseline(
    guard: Any, make_user: Any, dns_server: DnsServer
) -> None:
    """The founder's startup died; its .ai name lapsed and the attacker registered it, with
    name servers and mail of their own. They open an account with an address on it and
    verify it (their mailbox now), then ask for the founder's reset."""
    _, victim = founder(guard, make_user)
    proof = Baseline.of(victim)
    switch(dns_server, "startup.ai", ns=True, mx=True)
    attacker = make_user()
    own = guard.add_address(attacker, "ceo@startup.ai")
    assert guard.confirm_verification(verification_token(own)).value == "verified"
    guard.db.session.expire_all()
    own_baseline = Baseline.of(guard.find_address("ceo@startup.ai"))
    assert own_baseline is not None and own_baseline.fingerprint.ns == frozenset(MOVED_NS)
    assert Baseline.of(guard.find_address(FOUNDER)) == proof  # untouched
    assert guard.reset_decision("ceo@startup.ai").allowed  # their own, proved on their DNS
    decision = guard.reset_decision(FOUNDER)
    assert (decision.allowed, decision.reason) == (False, "domain_dns_changed")
    # The domain's summary is the gravest of its addresses' verdicts.
    assert guard.db.session.get(guard.models.Domain, "startup.ai").verdict == "dns_changed"
    # Adding the attacker's address verified outright (a host's own sign-up) changes nothing.
    guard.add_address(make_user(), "cfo@startup.ai", verified=True)
    assert Baseline.of(guard.find_address(FOUNDER)) == proof


def test_sweep_unverifies_after_confirmation_with_its_own_reason_and_notice(
    guard: Any, make_user: Any, dns_server: DnsServer, rdap_server: RdapServer, outbox: list[Any]
) -> None:
    founder(guard, make_user)
    guard.add_address(make_user(), CTO, verified=True)
    first = Sweep(guard).run()
    assert first.verdicts.get("ok") == 2 and first.errors == 0
    assert rdap_server.hits["startup.ai"] == 0  # no retries of a TLD without a server
    assert dns_server.count("startup.com") == 0  # fallback: .com goes by RDAP alone
    switch(dns_server, "startup.ai", ns=True, mx=True)
    Domain = guard.models.Domain
    guard.db.session.execute(sa.update(Domain).values(next_check_at=utcnow()))
    guard.db.session.commit()
    second = Sweep(guard).run()
    assert second.unsafe_first_seen == 1 and second.unverified == 0
    assert guard.find_address(FOUNDER).verified
    # CONFIRM_AFTER later the second unsafe check confirms it.
    guard.db.session.execute(
        sa.update(Domain)
        .where(Domain.name == "startup.ai")
        .values(unsafe_since=utcnow() - timedelta(hours=7), next_check_at=utcnow())
    )
    guard.db.session.commit()
    third = Sweep(guard).run()
    assert third.unverified == 1
    row = guard.find_address(FOUNDER)
    assert not row.verified and row.unverify_reason is UnverifyReason.DNS_CHANGED
    [event] = events(guard, EventKind.ADDRESS_UNVERIFIED)
    assert event.details["reason"] == "dns_changed"
    [notice] = [m for m in outbox if BACKUP in m.recipients]
    assert FOUNDER not in notice.recipients
    assert "name servers and mail servers" in notice.body
    assert "If you moved the domain's name servers and mail to new providers" in notice.body
    state = guard.address_state(FOUNDER)
    assert state.needs_login and state.needs_verification
    assert "name servers and mail servers" in state.label


def test_adopted_addresses_get_a_first_seen_baseline_at_their_first_check(
    guard: Any, make_user: Any, dns_server: DnsServer
) -> None:
    user = make_user()
    row = guard.add_address(user, FOUNDER, verified=True)
    guard.db.session.execute(
        sa.update(guard.models.EmailAddress).values(Baseline.columns(None))
    )  # as `adopt` leaves it: verified, no baseline
    guard.db.session.commit()
    Sweep(guard).run()
    guard.db.session.expire_all()
    baseline = Baseline.of(guard.db.session.get(guard.models.EmailAddress, row.id))
    assert baseline is not None and baseline.kind == FIRST_SEEN
    assert baseline.fingerprint.ns == frozenset(zone("startup.ai").ns)
    # From then on it is held to that sighting like any baseline.
    switch(dns_server, "startup.ai", ns=True, mx=True)
    # (A day later: the sweep's sighting no longer counts as evidence on its own.)
    guard.db.session.execute(sa.update(guard.models.Domain).values(dns_checked_at=None))
    guard.db.session.commit()
    assert guard.reset_decision(FOUNDER).reason == "domain_dns_changed"


def test_the_way_back_for_an_honest_user_who_moved_dns(
    app: Any,
    guard: Any,
    make_user: Any,
    dns_server: DnsServer,
    outbox: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The founder moved DNS and mail to new providers at once. Resets are refused from the
    first request on; logged in, they re-verify the address, which records the new DNS as
    its baseline, and the next reset is allowed."""
    user, _ = founder(guard, make_user)
    assert guard.reset_decision(FOUNDER).allowed
    switch(dns_server, "startup.ai", ns=True, mx=True)
    guard.db.session.execute(sa.update(guard.models.Domain).values(dns_checked_at=None))
    guard.db.session.commit()
    refused = [guard.reset_decision(FOUNDER) for _ in range(3)]
    assert [d.reason for d in refused] == ["domain_dns_changed"] * 3
    state = guard.address_state(FOUNDER)
    assert state.verified and not state.receives_resets
    assert state.domain_verdict == "dns_changed" and state.needs_verification
    assert "If you moved them, verify the address again" in state.label
    # On the account page: a new link (the address is unverified for its DNS until used).
    guard.send_verification(FOUNDER)
    row = guard.find_address(FOUNDER)
    assert not row.verified and row.unverify_reason is UnverifyReason.DNS_CHANGED
    [mail] = [m for m in outbox if FOUNDER in m.recipients]
    token = mail.body.split("/verify/")[1].split()[0]
    # Only the owner, logged in, may use it: whoever reads that mailbox now may not.
    with pytest.raises(Exception, match="Log in"):
        guard.confirm_verification(token)
    # ...with a second factor, confirmed just now (one without enrols first).
    enrol_2fa(guard, user)
    monkeypatch.setattr(guard, "has_fresh_second_factor", lambda who: True, raising=False)
    with app.test_request_context():
        assert guard.confirm_verification(token, user=user).value == "reverified"
    guard.db.session.expire_all()
    row = guard.find_address(FOUNDER)
    baseline = Baseline.of(row)
    assert row.verified and baseline is not None and baseline.kind == VERIFICATION
    assert baseline.fingerprint.ns == frozenset(MOVED_NS)
    queries = sum(dns_server.queries.values())
    assert guard.reset_decision(FOUNDER).allowed
    assert sum(dns_server.queries.values()) == queries  # the re-verification's check serves


def test_check_prints_the_dns_beside_the_status_source(
    runner: FlaskCliRunner, guard: Any, make_user: Any, dns_server: DnsServer
) -> None:
    founder(guard, make_user)
    switch(dns_server, "startup.ai", ns=True, mx=True)
    result = runner.invoke(args=["domainguard", "check", FOUNDER, "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 3 and data["verdict"]["kind"] == "dns_changed"
    assert data["observation"]["error"] == "no RDAP server known for .ai"
    assert data["dns"]["role"] == "evidence" and data["dns"]["delegated"] is True
    assert data["dns"]["ns"] == sorted(MOVED_NS)
    assert data["dns"]["baseline"]["ns"] == sorted(zone("startup.ai").ns)
    text = runner.invoke(args=["domainguard", "check", "startup.com"]).output
    assert "dns role" in text and "none (the status source covers this TLD" in text
    assert "name servers" in text and "ns1.dns-host.example" in text
    dns_server.set("startup.ai", "silent")
    result = runner.invoke(args=["domainguard", "check", "startup.ai", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 4 and data["dns"]["error"]
    # check writes nothing
    assert guard.db.session.get(guard.models.Domain, "startup.ai").dns_checked_at is None
    assert hostapp.db.session.scalar(sa.select(sa.func.count()).select_from(guard.models.Event))


@pytest.mark.settings(DOMAINGUARD_RESET_PROCESSING="inline")
def test_the_reset_mail_goes_out_on_dns_evidence_and_the_refusal_is_told(
    guard: Any, make_user: Any, dns_server: DnsServer, outbox: list[Any]
) -> None:
    """Through the whole pipeline, mail safety net included: the DNS evidence that allowed
    the reset also lets its mail through; a refusal for a DNS move is told to the owner's
    other address, never to the moved one."""
    founder(guard, make_user)
    decision = guard.request_reset(FOUNDER, client="192.0.2.1")
    assert decision is not None and decision.allowed
    [reset_mail] = [m for m in outbox if FOUNDER in m.recipients]
    assert "/reset/" in reset_mail.body
    switch(dns_server, "startup.ai", ns=True, mx=True)
    guard.db.session.execute(sa.update(guard.models.Domain).values(dns_checked_at=None))
    guard.db.session.commit()
    outbox.clear()
    decision = guard.request_reset(FOUNDER, client="192.0.2.1")
    assert decision is not None and decision.reason == "domain_dns_changed"
    [notice] = outbox
    assert notice.recipients == [BACKUP]
    assert "name servers and mail servers have all changed" in notice.body
