"""Tests for :mod:`flask_domainguard.verdict`: the lifecycle policy table, row by row."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_domainguard.status.observation import Observation
from flask_domainguard.verdict import (
    UNSAFE_KINDS,
    Policy,
    Verdict,
    VerdictKind,
    is_lapse_signal,
    judge,
)

UTC = timezone.utc
NOW = datetime(2022, 5, 14, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
GRACE = Policy().grace
WARN = Policy().warn_within


def observe(**fields: Any) -> Observation:
    """A successful RDAP observation of example.com, with ``fields`` overriding defaults."""
    fields.setdefault("domain", "example.com")
    fields.setdefault("registered", True)
    fields.setdefault("source", "rdap")
    statuses = fields.pop("statuses", ())
    return Observation(statuses=frozenset(statuses), **fields)


def kind_of(obs: Observation, **kwargs: Any) -> VerdictKind:
    kwargs.setdefault("now", NOW)
    return judge(obs, **kwargs).kind


def test_defaults_match_the_guide() -> None:
    assert Policy() == Policy(grace=timedelta(days=30), warn_within=timedelta(days=30))


# -- UNKNOWN --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obs",
    [
        Observation.failed("example.com", "timed out", source="rdap"),
        observe(registered=None),
        # An error wins over whatever else the backend filled in.
        observe(registered=False, error="HTTP 503"),
        observe(registered=True, error="HTTP 503", statuses={"pending delete"}),
        # Even an empty error string means the backend flagged a failure.
        observe(registered=False, error=""),
        # Domainr answers `unknown` when an upstream did not answer: registered=True or
        # registered=False was then inferred from nothing.
        observe(registered=True, source="fastly", statuses={"unknown"}),
        observe(registered=False, source="fastly", statuses={"undelegated", "unknown"}),
        observe(registered=True, source="domainr", statuses={"undelegated unknown"}),
        observe(registered=True, source="fastly", statuses={"UNKNOWN"}),
    ],
)
def test_unknown_is_never_unsafe(obs: Observation) -> None:
    verdict = judge(obs, now=NOW, verified_at=datetime(2014, 3, 1, tzinfo=UTC))
    assert verdict.kind is VerdictKind.UNKNOWN
    assert verdict.unsafe is False
    assert verdict.until is None
    assert "checked again" in verdict.reason


def test_unknown_reason_carries_the_error_as_one_sentence() -> None:
    verdict = judge(Observation.failed("example.com", "HTTP 503.\nRetry", source="rdap"), now=NOW)
    assert verdict.reason == (
        "The lookup of example.com failed (HTTP 503. Retry), "
        "so nothing is concluded until it is checked again."
    )


def test_unknown_wins_over_a_reregistration() -> None:
    obs = observe(registered=None, registered_at=datetime(2022, 5, 14, tzinfo=UTC))
    assert kind_of(obs, verified_at=datetime(2014, 3, 1, tzinfo=UTC)) is VerdictKind.UNKNOWN


# -- RELEASED -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obs",
    [
        observe(registered=False),  # RDAP 404 from the authoritative server
        observe(registered=False, source="fastly", statuses={"undelegated", "inactive"}),
        # registered=False wins over statuses and dates that say otherwise.
        observe(registered=False, statuses={"active"}, expires_at=NOW + 365 * DAY),
        # Domainr's `inactive` is "available to register", even if the backend said True.
        observe(registered=True, source="fastly", statuses={"undelegated", "inactive"}),
        observe(registered=True, source="domainr", statuses={"undelegated inactive"}),
        observe(registered=True, source="Fastly", statuses={"inactive"}),
        # Rightmost flag is the most important: `inactive` after `active` decides.
        observe(registered=True, source="fastly", statuses={"active inactive"}),
    ],
)
def test_released(obs: Observation) -> None:
    verdict = judge(obs, now=NOW)
    assert verdict.kind is VerdictKind.RELEASED
    assert verdict.unsafe is True
    assert verdict.until is None
    assert verdict.reason == (
        "example.com is not registered, so anyone can register it and receive its mail."
    )


@pytest.mark.parametrize(
    ("source", "statuses"),
    [
        # A holding flag to the right of `inactive` outranks it.
        ("fastly", {"inactive active"}),
        ("fastly", {"undelegated inactive parked"}),
        # Separate flags have no order: contradictory, so `registered` decides.
        ("fastly", {"inactive", "active"}),
        # In RDAP `inactive` means registered without delegation: not a lapse.
        ("rdap", {"inactive"}),
        ("static", {"inactive"}),
    ],
)
def test_inactive_that_does_not_mean_available(source: str, statuses: set[str]) -> None:
    assert kind_of(observe(registered=True, source=source, statuses=statuses)) is VerdictKind.OK


def test_released_wins_over_reregistered() -> None:
    obs = observe(registered=False, registered_at=datetime(2022, 5, 1, tzinfo=UTC))
    assert kind_of(obs, verified_at=datetime(2014, 3, 1, tzinfo=UTC)) is VerdictKind.RELEASED


# -- REREGISTERED ---------------------------------------------------------------------------


def test_ctx_scenario() -> None:
    """PyPI's ctx: address verified in 2014, domain re-registered 12 minutes before the reset."""
    obs = observe(
        domain="figlief.com",
        statuses={"client transfer prohibited"},
        registered_at=datetime(2022, 5, 14, 18, 40, tzinfo=UTC),
        expires_at=datetime(2023, 5, 14, 18, 40, tzinfo=UTC),
    )
    verdict = judge(
        obs,
        now=datetime(2022, 5, 14, 18, 52, tzinfo=UTC),
        verified_at=datetime(2014, 3, 1, tzinfo=UTC),
    )
    assert verdict == Verdict(
        kind=VerdictKind.REREGISTERED,
        unsafe=True,
        until=None,
        reason="figlief.com was registered again on 2022-05-14, "
        "after the address was verified on 2014-03-01.",
    )


def test_registered_at_equal_to_verified_at_is_the_proven_registration() -> None:
    moment = datetime(2020, 1, 1, 9, 30, tzinfo=UTC)
    obs = observe(registered_at=moment)
    assert kind_of(obs, verified_at=moment) is VerdictKind.OK
    assert kind_of(obs, verified_at=moment - SECOND) is VerdictKind.REREGISTERED
    assert kind_of(obs, verified_at=moment + SECOND) is VerdictKind.OK


def test_same_day_reregistration_names_the_times() -> None:
    obs = observe(registered_at=datetime(2022, 5, 14, 18, 40, tzinfo=UTC))
    verdict = judge(obs, now=NOW, verified_at=datetime(2022, 5, 14, 9, 5, tzinfo=UTC))
    assert verdict.reason == (
        "example.com was registered again on 2022-05-14 18:40 UTC, "
        "after the address was verified on 2022-05-14 09:05 UTC."
    )


def test_registered_at_in_the_future_still_counts() -> None:
    # A registry clock a few minutes ahead of ours must not hide a fresh registration.
    obs = observe(registered_at=NOW + timedelta(minutes=3))
    assert kind_of(obs, verified_at=datetime(2014, 3, 1, tzinfo=UTC)) is VerdictKind.REREGISTERED


def test_no_verified_at_means_no_comparison() -> None:
    assert kind_of(observe(registered_at=NOW - DAY)) is VerdictKind.OK


@pytest.mark.parametrize(
    ("registered_at", "verified_at"),
    [
        (datetime(1900, 1, 1, tzinfo=UTC), datetime(1899, 1, 1, tzinfo=UTC)),
        (datetime(2022, 5, 1, tzinfo=UTC), datetime(1900, 1, 1, tzinfo=UTC)),
        (datetime(2022, 5, 1, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_implausible_dates_are_not_compared(registered_at: datetime, verified_at: datetime) -> None:
    obs = observe(registered_at=registered_at)
    assert kind_of(obs, verified_at=verified_at) is VerdictKind.OK


def test_naive_datetimes_count_as_utc() -> None:
    obs = observe(registered_at=datetime(2022, 5, 1, 12, 0))  # naive: 12:00 UTC
    plus_one = timezone(timedelta(hours=1))
    # 12:30+01:00 is 11:30 UTC: before the registration.
    assert (
        kind_of(obs, verified_at=datetime(2022, 5, 1, 12, 30, tzinfo=plus_one))
        is VerdictKind.REREGISTERED
    )
    # 13:00+01:00 is 12:00 UTC: the same instant.
    assert kind_of(obs, verified_at=datetime(2022, 5, 1, 13, 0, tzinfo=plus_one)) is VerdictKind.OK
    assert kind_of(obs, now=NOW.replace(tzinfo=None), verified_at=None) is VerdictKind.OK


def test_reregistered_wins_over_lapse_signals() -> None:
    obs = observe(
        statuses={"pending delete"},
        registered_at=datetime(2022, 5, 1, tzinfo=UTC),
        expires_at=datetime(2022, 4, 1, tzinfo=UTC),
    )
    assert kind_of(obs, verified_at=datetime(2014, 3, 1, tzinfo=UTC)) is VerdictKind.REREGISTERED


# -- REREGISTERED by transfer -----------------------------------------------------------------

SEEN = datetime(2022, 4, 20, tzinfo=UTC)


def test_transfer_after_lapse_seen_is_reregistered() -> None:
    obs = observe(statuses={"auto renew period", "client hold"}, transferred_at=SEEN + 3 * DAY)
    verdict = judge(obs, now=NOW, lapse_seen_at=SEEN)
    assert verdict.kind is VerdictKind.REREGISTERED
    assert verdict.unsafe is True
    assert verdict.reason == (
        "example.com was transferred on 2022-04-23, after it was seen lapsing on 2022-04-20, "
        "so it may now belong to someone else."
    )


def test_transfer_after_lapse_seen_even_once_renewed() -> None:
    # The auction buyer renews: no lapse signal any more, but the owner changed.
    obs = observe(statuses={"active"}, transferred_at=SEEN + SECOND, expires_at=NOW + 300 * DAY)
    assert kind_of(obs, lapse_seen_at=SEEN) is VerdictKind.REREGISTERED


@pytest.mark.parametrize("transferred_at", [SEEN - 30 * DAY, SEEN - SECOND, SEEN])
def test_transfer_before_or_at_lapse_seen_is_not(transferred_at: datetime) -> None:
    lapsing = observe(statuses={"redemption period"}, transferred_at=transferred_at)
    assert kind_of(lapsing, lapse_seen_at=SEEN) is VerdictKind.IN_GRACE
    healthy = observe(statuses={"active"}, transferred_at=transferred_at)
    assert kind_of(healthy, lapse_seen_at=SEEN) is VerdictKind.OK


def test_transfer_without_lapse_seen_is_an_ordinary_transfer() -> None:
    assert kind_of(observe(transferred_at=NOW - DAY)) is VerdictKind.OK


def test_implausible_transfer_or_lapse_seen_is_ignored() -> None:
    obs = observe(transferred_at=datetime(1900, 1, 1, tzinfo=UTC))
    assert kind_of(obs, lapse_seen_at=datetime(1899, 1, 1, tzinfo=UTC)) is VerdictKind.OK
    obs = observe(transferred_at=NOW - DAY)
    assert kind_of(obs, lapse_seen_at=datetime(1900, 1, 1, tzinfo=UTC)) is VerdictKind.OK


# -- EXPIRED (no restore possible) ----------------------------------------------------------


@pytest.mark.parametrize(
    "statuses",
    [
        {"pending delete"},
        {"pendingDelete"},
        {"PENDING_DELETE"},
        {"pending-delete"},
        {"pendingdelete"},
        {"Pending Delete", "client hold"},
        {"pending delete", "auto renew period"},
        {"server hold pending delete"},
    ],
)
def test_pending_delete_without_redemption_is_expired(statuses: set[str]) -> None:
    verdict = judge(observe(statuses=statuses, expires_at=NOW + 200 * DAY), now=NOW)
    assert verdict.kind is VerdictKind.EXPIRED
    assert verdict.unsafe is True
    assert verdict.until is None


@pytest.mark.parametrize("statuses", [{"deleting"}, {"expiring", "deleting"}, {"active deleting"}])
def test_domainr_deleting_is_expired(statuses: set[str]) -> None:
    assert kind_of(observe(source="fastly", statuses=statuses)) is VerdictKind.EXPIRED


@pytest.mark.parametrize(
    "statuses",
    [
        {"pending delete", "redemption period"},
        {"pendingDelete", "redemptionPeriod"},
        # A restore by the former owner is under way: still redeemable.
        {"pending delete", "pending restore"},
    ],
)
def test_pending_delete_in_redemption_is_in_grace(statuses: set[str]) -> None:
    assert kind_of(observe(statuses=statuses)) is VerdictKind.IN_GRACE


# -- IN_GRACE, then EXPIRED ---------------------------------------------------------------

EXPIRY = datetime(2022, 4, 1, 6, 30, tzinfo=UTC)
GRACE_ENDS = EXPIRY + GRACE


@pytest.mark.parametrize(
    ("now", "kind"),
    [
        (EXPIRY - SECOND, VerdictKind.EXPIRING_SOON),
        (EXPIRY, VerdictKind.IN_GRACE),  # expiring at `now` means expired
        (EXPIRY + SECOND, VerdictKind.IN_GRACE),
        (GRACE_ENDS - DAY, VerdictKind.IN_GRACE),
        (GRACE_ENDS - SECOND, VerdictKind.IN_GRACE),
        (GRACE_ENDS, VerdictKind.EXPIRED),  # grace ends at that instant
        (GRACE_ENDS + SECOND, VerdictKind.EXPIRED),
        (GRACE_ENDS + DAY, VerdictKind.EXPIRED),
    ],
)
def test_grace_boundaries(now: datetime, kind: VerdictKind) -> None:
    verdict = judge(observe(statuses={"active"}, expires_at=EXPIRY), now=now)
    assert verdict.kind is kind
    assert verdict.unsafe is (kind is VerdictKind.EXPIRED)
    if kind is VerdictKind.IN_GRACE:
        assert verdict.until == GRACE_ENDS
    elif kind is VerdictKind.EXPIRING_SOON:
        assert verdict.until == EXPIRY
    else:
        assert verdict.until is None


def test_in_grace_and_expired_reasons() -> None:
    obs = observe(expires_at=EXPIRY)
    assert judge(obs, now=EXPIRY + DAY).reason == (
        "example.com has been lapsing since 2022-04-01 (its registration expired on 2022-04-01) "
        "and counts as expired from 2022-05-01 unless it is renewed."
    )
    assert judge(obs, now=GRACE_ENDS).reason == (
        "example.com has been lapsing since 2022-04-01 (its registration expired on 2022-04-01) "
        "and its grace period ended on 2022-05-01."
    )


@pytest.mark.parametrize(
    ("source", "statuses"),
    [
        ("rdap", {"redemption period"}),
        ("rdap", {"pending restore"}),
        ("rdap", {"auto renew period", "client hold"}),
        ("rdap", {"auto renew period", "server hold"}),
        ("rdap", {"autoRenewPeriod", "clientHold"}),
        ("rdap", {"auto_renew_period server_hold"}),
        ("fastly", {"expiring"}),
        ("domainr", {"marketed expiring"}),
    ],
)
def test_lapse_signals(source: str, statuses: set[str]) -> None:
    # A future expiration date does not prove renewal: Verisign moves it on auto-renew.
    obs = observe(source=source, statuses=statuses, expires_at=NOW + 330 * DAY)
    verdict = judge(obs, now=NOW)
    assert verdict.kind is VerdictKind.IN_GRACE
    assert verdict.unsafe is False
    assert verdict.until == NOW + GRACE  # no lapse_seen_at: the lapse starts now
    assert is_lapse_signal(obs, NOW)


@pytest.mark.parametrize(
    ("source", "statuses"),
    [
        ("rdap", {"auto renew period"}),  # follows every Verisign renewal
        ("rdap", {"active", "auto renew period"}),
        ("rdap", {"client hold"}),
        ("rdap", {"server hold"}),
        ("rdap", {"client hold", "server hold"}),
        ("fastly", {"undelegated"}),
        ("fastly", {"undelegated active"}),
        ("rdap", set()),
        ("rdap", {"", "   ", "???", "renew"}),
    ],
)
def test_not_lapse_signals(source: str, statuses: set[str]) -> None:
    obs = observe(source=source, statuses=statuses, expires_at=NOW + 330 * DAY)
    assert kind_of(obs) is VerdictKind.OK
    assert not is_lapse_signal(obs, NOW)


def test_lapse_start_falls_back_to_lapse_seen_at() -> None:
    obs = observe(statuses={"redemption period"}, expires_at=NOW + 330 * DAY)
    seen = NOW - 10 * DAY
    verdict = judge(obs, now=NOW, lapse_seen_at=seen)
    assert verdict.kind is VerdictKind.IN_GRACE
    assert verdict.until == seen + GRACE
    assert judge(obs, now=seen + GRACE, lapse_seen_at=seen).kind is VerdictKind.EXPIRED
    assert judge(obs, now=seen + GRACE - SECOND, lapse_seen_at=seen).kind is VerdictKind.IN_GRACE


def test_lapse_start_falls_back_to_now() -> None:
    # The nomulus fixture's year-294247 expiration reaches judge as None.
    obs = observe(statuses={"pending delete", "redemption period"}, expires_at=None)
    verdict = judge(obs, now=NOW)
    assert verdict.kind is VerdictKind.IN_GRACE
    assert verdict.until == NOW + GRACE


def test_expiry_before_1985_is_absent() -> None:
    ancient = datetime(1900, 1, 1, tzinfo=UTC)
    # Alone it is not a lapse signal...
    assert kind_of(observe(expires_at=ancient)) is VerdictKind.OK
    # ...and it is no lapse start either: lapse_seen_at is used instead.
    obs = observe(statuses={"redemption period"}, expires_at=ancient)
    assert judge(obs, now=NOW, lapse_seen_at=NOW - DAY).until == NOW - DAY + GRACE
    assert judge(obs, now=NOW).until == NOW + GRACE


def test_expiry_in_1985_is_plausible() -> None:
    first = datetime(1985, 3, 15, tzinfo=UTC)
    assert kind_of(observe(expires_at=first)) is VerdictKind.EXPIRED
    assert kind_of(observe(expires_at=first), now=first + DAY) is VerdictKind.IN_GRACE
    assert kind_of(observe(expires_at=first - 366 * DAY)) is VerdictKind.OK  # 1984


def test_expiry_at_the_end_of_9999_is_plausible() -> None:
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    verdict = judge(observe(expires_at=last), now=NOW)
    assert verdict.kind is VerdictKind.OK
    assert verdict.reason == "example.com is registered until 9999-12-31."
    # Near the end of time the warn window runs past datetime.max: clamped, no overflow.
    near = datetime(9999, 12, 30, tzinfo=UTC)
    verdict = judge(observe(expires_at=last), now=near)
    assert verdict.kind is VerdictKind.EXPIRING_SOON
    assert verdict.until == last
    # And the grace period's end is clamped the same way.
    verdict = judge(observe(statuses={"redemption period"}), now=near)
    assert verdict.kind is VerdictKind.IN_GRACE
    assert verdict.until == datetime.max.replace(tzinfo=UTC)


def test_earlier_lapse_seen_at_wins_over_a_later_past_expiry() -> None:
    # Seen in redemption before the (moved-forward) expiration date: the lapse had begun.
    seen = NOW - 40 * DAY
    obs = observe(statuses={"redemption period"}, expires_at=NOW - 5 * DAY)
    assert kind_of(obs, lapse_seen_at=seen) is VerdictKind.EXPIRED
    # A past expiration earlier than lapse_seen_at is the start, as the guide says.
    obs = observe(statuses={"redemption period"}, expires_at=NOW - 10 * DAY)
    verdict = judge(obs, now=NOW, lapse_seen_at=NOW - 2 * DAY)
    assert verdict.until == NOW - 10 * DAY + GRACE


def test_lapse_seen_at_in_the_future_counts_as_now() -> None:
    obs = observe(statuses={"redemption period"})
    assert judge(obs, now=NOW, lapse_seen_at=NOW + 5 * DAY).until == NOW + GRACE


def test_naive_expiry_counts_as_utc() -> None:
    obs = observe(expires_at=datetime(2022, 5, 14, 12, 0))  # naive, equal to NOW in UTC
    assert kind_of(obs) is VerdictKind.IN_GRACE
    # 12:30+01:00 is 11:30 UTC: half an hour before the expiry.
    earlier = datetime(2022, 5, 14, 12, 30, tzinfo=timezone(timedelta(hours=1)))
    assert kind_of(obs, now=earlier) is VerdictKind.EXPIRING_SOON
    assert kind_of(obs, now=NOW.replace(tzinfo=None)) is VerdictKind.IN_GRACE


# -- EXPIRING_SOON and OK -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_at", "kind"),
    [
        (NOW + SECOND, VerdictKind.EXPIRING_SOON),
        (NOW + DAY, VerdictKind.EXPIRING_SOON),
        (NOW + WARN - DAY, VerdictKind.EXPIRING_SOON),
        (NOW + WARN, VerdictKind.EXPIRING_SOON),  # the far edge is inclusive
        (NOW + WARN + SECOND, VerdictKind.OK),
        (NOW + WARN + DAY, VerdictKind.OK),
    ],
)
def test_warn_window(expires_at: datetime, kind: VerdictKind) -> None:
    verdict = judge(observe(expires_at=expires_at), now=NOW)
    assert verdict.kind is kind
    assert verdict.unsafe is False
    assert verdict.until == (expires_at if kind is VerdictKind.EXPIRING_SOON else None)


def test_expiring_soon_reason() -> None:
    verdict = judge(observe(expires_at=NOW + 3 * DAY), now=NOW)
    assert verdict.reason == "example.com expires on 2022-05-17 unless its owner renews it."


def test_auto_renew_alone_near_expiry_is_only_expiring_soon() -> None:
    obs = observe(statuses={"auto renew period"}, expires_at=NOW + 3 * DAY)
    assert kind_of(obs) is VerdictKind.EXPIRING_SOON


def test_ok() -> None:
    verdict = judge(observe(statuses={"active"}), now=NOW)
    assert verdict == Verdict(
        kind=VerdictKind.OK,
        unsafe=False,
        until=None,
        reason="example.com is registered and shows no sign of lapsing.",
    )


def test_empty_domain_name_still_reads() -> None:
    assert judge(observe(domain="", registered=False), now=NOW).reason.startswith("the domain ")


# -- custom policy --------------------------------------------------------------------------


def test_custom_policy() -> None:
    policy = Policy(grace=timedelta(days=7), warn_within=timedelta(days=60))
    lapsed = observe(expires_at=NOW - 6 * DAY)
    verdict = judge(lapsed, now=NOW, policy=policy)
    assert verdict.kind is VerdictKind.IN_GRACE
    assert verdict.until == NOW + DAY
    assert judge(lapsed, now=NOW + DAY, policy=policy).kind is VerdictKind.EXPIRED
    assert kind_of(observe(expires_at=NOW + 45 * DAY), policy=policy) is VerdictKind.EXPIRING_SOON
    assert kind_of(observe(expires_at=NOW + 45 * DAY)) is VerdictKind.OK


def test_zero_grace_and_zero_warn_window() -> None:
    policy = Policy(grace=timedelta(0), warn_within=timedelta(0))
    assert kind_of(observe(statuses={"expiring"}, source="fastly"), policy=policy) is (
        VerdictKind.EXPIRED
    )
    assert kind_of(observe(expires_at=NOW + SECOND), policy=policy) is VerdictKind.OK


# -- is_lapse_signal and purity -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (observe(registered=False), True),
        (observe(statuses={"pending delete"}), True),
        (observe(statuses={"redemption period"}), True),
        (observe(expires_at=NOW), True),
        (observe(expires_at=NOW + SECOND), False),
        (observe(statuses={"active"}), False),
        (observe(registered=None), False),
        (observe(registered=False, error="timeout"), False),
        (observe(source="fastly", statuses={"undelegated", "unknown"}), False),
    ],
)
def test_is_lapse_signal(obs: Observation, expected: bool) -> None:
    assert is_lapse_signal(obs, NOW) is expected


def test_judge_reads_no_clock() -> None:
    obs = observe(expires_at=datetime(2022, 4, 1, tzinfo=UTC))
    with freeze_time("2000-01-01"):
        assert judge(obs, now=NOW).kind is VerdictKind.EXPIRED
    with freeze_time("2030-01-01"):
        assert judge(obs, now=datetime(2022, 4, 2, tzinfo=UTC)).kind is VerdictKind.IN_GRACE


# -- properties -----------------------------------------------------------------------------

_EDGES = [
    datetime.min,
    datetime.max,
    datetime.min.replace(tzinfo=UTC),
    datetime.max.replace(tzinfo=UTC),
    datetime.min.replace(tzinfo=timezone(timedelta(hours=14))),
    datetime.max.replace(tzinfo=timezone(timedelta(hours=-14))),
    datetime(1984, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(1985, 1, 1, tzinfo=UTC),
]
_offsets = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)
moments = st.one_of(
    st.sampled_from(_EDGES),
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), _offsets, st.timezones())),
)
maybe_moments = st.one_of(st.none(), moments)
_STATUS_WORDS = [
    "active",
    "inactive",
    "ok",
    "unknown",
    "undelegated",
    "expiring",
    "deleting",
    "parked",
    "marketed",
    "pending delete",
    "pendingDelete",
    "redemption period",
    "REDEMPTION_PERIOD",
    "pending restore",
    "auto renew period",
    "autoRenewPeriod",
    "client hold",
    "serverHold",
    "undelegated inactive",
    "active inactive",
    "",
    " ",
    "-_-",
    "ÄÖÜ",
    "\x00",
]
statuses = st.frozensets(
    st.one_of(st.sampled_from(_STATUS_WORDS), st.text(max_size=30)), max_size=6
)
observations = st.builds(
    Observation,
    domain=st.text(max_size=30),
    registered=st.one_of(st.none(), st.booleans()),
    statuses=statuses,
    expires_at=maybe_moments,
    registered_at=maybe_moments,
    transferred_at=maybe_moments,
    source=st.one_of(st.sampled_from(["rdap", "fastly", "domainr", "static", ""]), st.text()),
    error=st.one_of(st.none(), st.text(max_size=30)),
    retry_after=st.one_of(st.none(), st.floats()),
)
policies = st.one_of(
    st.none(), st.builds(Policy, grace=st.timedeltas(), warn_within=st.timedeltas())
)


@settings(max_examples=500)
@given(
    obs=observations,
    now=moments,
    verified_at=maybe_moments,
    lapse_seen_at=maybe_moments,
    policy=policies,
)
def test_judge_never_raises_and_is_consistent(
    obs: Observation,
    now: datetime,
    verified_at: datetime | None,
    lapse_seen_at: datetime | None,
    policy: Policy | None,
) -> None:
    verdict = judge(
        obs, now=now, verified_at=verified_at, lapse_seen_at=lapse_seen_at, policy=policy
    )
    assert isinstance(verdict.kind, VerdictKind)
    assert verdict.unsafe == (verdict.kind in UNSAFE_KINDS)
    assert isinstance(verdict.reason, str)
    assert verdict.reason.strip()
    assert verdict.reason.endswith(".")
    if verdict.kind in (VerdictKind.IN_GRACE, VerdictKind.EXPIRING_SOON):
        assert verdict.until is not None
        assert verdict.until.utcoffset() == timedelta(0)
    else:
        assert verdict.until is None
    if verified_at is None and lapse_seen_at is None:
        assert verdict.kind is not VerdictKind.REREGISTERED


@given(obs=observations, now=moments, verified_at=maybe_moments, lapse_seen_at=maybe_moments)
def test_failed_lookups_are_unknown_and_safe(
    obs: Observation,
    now: datetime,
    verified_at: datetime | None,
    lapse_seen_at: datetime | None,
) -> None:
    verdict = judge(obs, now=now, verified_at=verified_at, lapse_seen_at=lapse_seen_at)
    if obs.registered is None or obs.error is not None:
        assert verdict.kind is VerdictKind.UNKNOWN
        assert verdict.unsafe is False


@given(obs=observations, now=moments)
def test_is_lapse_signal_agrees_with_judge(obs: Observation, now: datetime) -> None:
    kind = judge(obs, now=now).kind
    lapse_kinds = {VerdictKind.IN_GRACE, VerdictKind.EXPIRED, VerdictKind.RELEASED}
    assert is_lapse_signal(obs, now) == (kind in lapse_kinds)


@given(
    seen=st.datetimes(min_value=datetime(1985, 1, 1), max_value=datetime(9000, 1, 1)),
    elapsed=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)),
    grace=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=100)),
)
def test_grace_runs_from_lapse_seen_at(
    seen: datetime, elapsed: timedelta, grace: timedelta
) -> None:
    seen = seen.replace(tzinfo=UTC)
    obs = observe(statuses={"pending delete", "redemption period"})
    verdict = judge(obs, now=seen + elapsed, lapse_seen_at=seen, policy=Policy(grace=grace))
    if elapsed < grace:
        assert verdict.kind is VerdictKind.IN_GRACE
        assert verdict.until == seen + grace
    else:
        assert verdict.kind is VerdictKind.EXPIRED
