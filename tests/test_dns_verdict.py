"""The pure half of DNS evidence: judge_dns, changed_hands, advance() with DNS sightings, and
how verdict_for and has_reset_evidence combine the DNS with the status source."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from flask_domainguard.dnsverdict import (
    FIRST_SEEN,
    Baseline,
    DnsState,
    advance_dns,
    changed_hands,
    judge_dns,
)
from flask_domainguard.domainstate import DomainState, advance, has_reset_evidence, verdict_for
from flask_domainguard.status.observation import DnsFingerprint, DnsObservation, Observation
from flask_domainguard.verdict import Policy, VerdictKind

UTC = timezone.utc
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = Policy()
DAY = timedelta(days=1)


def fp(ns: str, mx: str) -> DnsFingerprint:
    return DnsFingerprint(ns=frozenset(ns.split()), mx=frozenset(mx.split()))


PROOF = fp("ns1.old-dns.example ns2.old-dns.example", "mx1.old-mail.example mx2.old-mail.example")
BASELINE = Baseline(PROOF, NOW - 300 * DAY)


@pytest.mark.parametrize(
    ("current", "changed"),
    [
        (PROOF, False),
        # one set changed, the other kept: continuity (a provider move, not a new owner)
        (fp("ns1.new-dns.example", "mx1.old-mail.example mx2.old-mail.example"), False),
        (fp("ns1.old-dns.example ns2.old-dns.example", "mx.new-mail.example"), False),
        # one host of each kept: continuity
        (fp("ns1.old-dns.example ns9.new.example", "mx2.old-mail.example mx.new.example"), False),
        # both sets replaced: changed hands
        (fp("ns1.new-dns.example ns2.new-dns.example", "mx.new-mail.example"), True),
        # both gone: no name server and no mail exchanger of the proof left
        (fp("ns1.parking.example", ""), True),
    ],
)
def test_changed_hands_needs_ns_and_mx_both_disjoint(
    current: DnsFingerprint, changed: bool
) -> None:
    assert changed_hands(PROOF, current) is changed


def test_empty_sets_are_the_same_set() -> None:
    no_mx = fp("ns1.old.example", "")
    assert not changed_hands(no_mx, fp("ns1.new.example", ""))
    assert changed_hands(no_mx, fp("ns1.new.example", "mx.new.example"))


def delegated(fingerprint: DnsFingerprint, at: datetime = NOW) -> DnsState:
    return DnsState(checked_at=at, delegated=True, fingerprint=fingerprint)


def test_continuous_dns_is_ok_and_says_against_what() -> None:
    verdict = judge_dns(
        delegated(PROOF), domain="startup.ai", now=NOW, baseline=BASELINE, policy=POLICY
    )
    assert verdict.kind is VerdictKind.OK and not verdict.unsafe
    assert "when the address was verified" in verdict.reason
    first = Baseline(PROOF, NOW - DAY, FIRST_SEEN)
    verdict = judge_dns(
        delegated(PROOF), domain="startup.ai", now=NOW, baseline=first, policy=POLICY
    )
    assert verdict.kind is VerdictKind.OK and "first seen" in verdict.reason


def test_both_sets_changed_is_unsafe_for_that_baseline_only() -> None:
    moved = delegated(fp("ns1.evil.example", "mx.evil.example"))
    verdict = judge_dns(moved, domain="startup.ai", now=NOW, baseline=BASELINE, policy=POLICY)
    assert verdict.kind is VerdictKind.DNS_CHANGED and verdict.unsafe
    # The attacker's own address, proved on the new DNS, is continuous with it.
    own = Baseline(moved.fingerprint or PROOF, NOW)
    assert judge_dns(moved, domain="startup.ai", now=NOW, baseline=own, policy=POLICY).kind is (
        VerdictKind.OK
    )
    # No baseline yet: the current DNS is the address's first sighting.
    assert judge_dns(moved, domain="startup.ai", now=NOW, baseline=None, policy=POLICY).kind is (
        VerdictKind.OK
    )


def test_not_delegated_is_a_lapse_with_grace_from_first_seen() -> None:
    seen = NOW - 10 * DAY
    state = DnsState(checked_at=NOW, delegated=False, lapse_seen_at=seen)
    verdict = judge_dns(state, domain="startup.ai", now=NOW, baseline=BASELINE, policy=POLICY)
    assert verdict.kind is VerdictKind.IN_GRACE and not verdict.unsafe
    assert verdict.until == seen + POLICY.grace
    later = seen + POLICY.grace
    verdict = judge_dns(state, domain="startup.ai", now=later, baseline=BASELINE, policy=POLICY)
    assert verdict.kind is VerdictKind.EXPIRED and verdict.unsafe


def test_advance_dns_keeps_the_first_lapse_and_clears_it_when_delegated_again() -> None:
    gone = DnsObservation(domain="startup.ai", delegated=False, detail="NXDOMAIN")
    back = DnsObservation(domain="startup.ai", delegated=True, fingerprint=PROOF)
    failed = DnsObservation.failed("startup.ai", "timed out")
    first = advance_dns(None, gone, NOW - 5 * DAY)
    assert first is not None and first.lapse_seen_at == NOW - 5 * DAY
    second = advance_dns(first, gone, NOW)
    assert second is not None and second.lapse_seen_at == NOW - 5 * DAY
    assert advance_dns(second, failed, NOW) is second  # a failed lookup changes nothing
    again = advance_dns(second, back, NOW)
    assert again is not None and again.delegated and again.lapse_seen_at is None


def status_ok() -> Observation:
    return Observation(
        domain="startup.io",
        registered=True,
        statuses=frozenset({"active"}),
        expires_at=NOW + 400 * DAY,
        registered_at=NOW - 3000 * DAY,
        source="rdap",
    )


def with_dns(obs: Observation, fingerprint: DnsFingerprint | None, evidence: bool) -> Observation:
    sighting = (
        DnsObservation(domain=obs.domain, delegated=False, detail="NXDOMAIN", evidence=evidence)
        if fingerprint is None
        else DnsObservation(
            domain=obs.domain, delegated=True, fingerprint=fingerprint, evidence=evidence
        )
    )
    return Observation(**{**obs.__dict__, "dns": sighting})


def test_verdict_for_takes_the_graver_of_status_and_dns() -> None:
    moved = fp("ns1.evil.example", "mx.evil.example")
    state = advance(DomainState(name="startup.io"), with_dns(status_ok(), moved, False), NOW)
    assert verdict_for(state, NOW - 300 * DAY, NOW, POLICY).kind is VerdictKind.OK
    assert verdict_for(state, NOW - 300 * DAY, NOW, POLICY, BASELINE).kind is (
        VerdictKind.DNS_CHANGED
    )


def test_uncovered_tld_dns_alone_decides() -> None:
    failed = Observation.failed("startup.ai", "no RDAP server known for .ai", source="rdap")
    state = advance(DomainState(name="startup.ai"), with_dns(failed, PROOF, True), NOW)
    assert state.observation is None and state.dns is not None
    assert verdict_for(state, NOW - 300 * DAY, NOW, POLICY, BASELINE).kind is VerdictKind.OK
    within = timedelta(days=1)
    kwargs = {"within": within, "policy": POLICY, "baseline": BASELINE}
    assert has_reset_evidence(state, NOW - 300 * DAY, NOW, dns_evidence=True, **kwargs)  # type: ignore[arg-type]
    # The same DNS is no evidence where it is only a second signal.
    assert not has_reset_evidence(state, NOW - 300 * DAY, NOW, dns_evidence=False, **kwargs)  # type: ignore[arg-type]
    # Nor once it is old.
    assert not has_reset_evidence(
        state, NOW - 300 * DAY, NOW + 2 * DAY, dns_evidence=True, **kwargs
    )  # type: ignore[arg-type]
    # Nor when it is not delegated.
    gone = advance(state, with_dns(failed, None, True), NOW)
    assert not has_reset_evidence(gone, NOW - 300 * DAY, NOW, dns_evidence=True, **kwargs)  # type: ignore[arg-type]


def test_a_status_check_without_dns_forgets_the_dns_part() -> None:
    state = advance(DomainState(name="startup.io"), with_dns(status_ok(), PROOF, False), NOW)
    assert state.dns is not None
    assert advance(state, status_ok(), NOW).dns is None
    # ...but a failed status lookup without DNS changes nothing.
    failed = Observation.failed("startup.io", "HTTP 500", source="rdap")
    assert advance(state, failed, NOW) == state
