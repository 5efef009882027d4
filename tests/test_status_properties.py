"""Hypothesis: both parsers survive any document and never invent a "released" domain."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flask_domainguard.status.base import parse_datetime
from flask_domainguard.status.fastly import parse_fastly_status
from flask_domainguard.status.observation import Observation
from flask_domainguard.status.rdap import parse_rdap_domain
from flask_domainguard.verdict import judge

UTC = timezone.utc
GRACE = timedelta(days=30)  # the Policy default judge() uses here

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
nows = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)

# -- RDAP --------------------------------------------------------------------------------------

RDAP_STATUSES = [
    "active", "inactive", "client hold", "server hold", "auto renew period", "redemption period",
    "pending delete", "pending restore", "renew period", "transfer period", "clientHold",
    "pendingDelete", "ok", "deleting", "expiring",
]  # fmt: skip
RDAP_ACTIONS = [
    "registration", "expiration", "registrar expiration", "transfer", "last changed",
    "deletion", "last update of RDAP database", "reregistration", "reinstantiation",
]  # fmt: skip
DATE_TEXTS = st.one_of(
    st.datetimes(min_value=datetime(1900, 1, 1), timezones=st.just(UTC)).map(
        lambda d: d.isoformat()
    ),
    st.sampled_from(["294247-01-10T04:00:54.775Z", "0000-00-00", "2021-02-30T00:00:00Z", ""]),
    st.text(max_size=25),
)
names = st.sampled_from(["example.com", "EXAMPLE.COM", "xn--bcher-kva.example", "a.b.c.d"])

wrongly_typed_domain_docs = st.fixed_dictionaries(
    {"objectClassName": st.just("domain"), "ldhName": names},
    optional={
        "status": json_values.filter(
            lambda v: (
                not (isinstance(v, list) and all(isinstance(s, str) for s in v)) and v is not None
            )
        ),
        "events": json_values.filter(lambda v: not isinstance(v, list) and v is not None),
        "unicodeName": json_values,
        "links": json_values,
        "entities": json_values,
    },
).filter(lambda d: "status" in d or "events" in d)

plausible_domain_docs = st.fixed_dictionaries(
    {"objectClassName": st.just("domain"), "ldhName": names},
    optional={
        "status": st.lists(st.sampled_from(RDAP_STATUSES) | st.text(max_size=15), max_size=5),
        "events": st.lists(
            st.fixed_dictionaries(
                {"eventAction": st.sampled_from(RDAP_ACTIONS)},
                optional={"eventDate": DATE_TEXTS | json_values},
            ),
            max_size=6,
        ),
    },
)


def says_deleted(obs: Observation) -> bool:
    """The document itself names a deletion (in any spelling judge() accepts), also as one
    word among others in a status string (``"0 deleting"``, ``"x pending-delete"``)."""
    for status in obs.statuses:
        words = re.findall(r"[a-z]+", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", status).lower())
        spaced = " ".join(words)
        if "deleting" in words or "pendingdelete" in words:
            return True
        if re.search(r"\bpending delete\b", spaced):
            return True
    return False


def check_rdap(obs: Observation, now: datetime) -> None:
    assert obs.registered is not False, "only an HTTP 404 may say 'not registered'"
    assert (obs.error is None) is (obs.registered is True)
    verdict = judge(obs, now=now)
    if verdict.unsafe:
        assert obs.registered is True
        long_expired = obs.expires_at is not None and obs.expires_at + GRACE <= now
        assert says_deleted(obs) or long_expired, verdict.reason


@settings(max_examples=300, deadline=None)
@given(doc=json_values, now=nows)
def test_rdap_any_json(doc: Any, now: datetime) -> None:
    check_rdap(parse_rdap_domain(doc), now)


@settings(max_examples=300, deadline=None)
@given(doc=wrongly_typed_domain_docs, now=nows)
def test_rdap_wrong_types_are_errors(doc: dict[str, Any], now: datetime) -> None:
    obs = parse_rdap_domain(doc)
    assert obs.registered is None and obs.error
    assert not judge(obs, now=now).unsafe


@settings(max_examples=300, deadline=None)
@given(doc=plausible_domain_docs, now=nows)
def test_rdap_plausible_documents(doc: dict[str, Any], now: datetime) -> None:
    obs = parse_rdap_domain(doc)
    check_rdap(obs, now)
    for moment in (obs.expires_at, obs.registered_at, obs.transferred_at):
        assert moment is None or (moment.tzinfo is not None and 1985 <= moment.year <= 9999)
    if obs.error is None:
        # registered_at is the latest (re-)registration with a usable date; one without a
        # usable date would have made the document an error.
        starts = [
            parse_datetime(e.get("eventDate"))
            for e in doc.get("events", [])
            if e["eventAction"] in ("registration", "reregistration", "reinstantiation")
        ]
        assert obs.registered_at == max((d for d in starts if d is not None), default=None)


@settings(max_examples=200, deadline=None)
@given(
    doc=st.dictionaries(
        st.sampled_from(["objectClassName", "ldhName", "unicodeName", "status", "events"]),
        json_values,
    ),
    now=nows,
)
def test_rdap_every_field_any_value(doc: dict[str, Any], now: datetime) -> None:
    check_rdap(parse_rdap_domain(doc), now)


# -- Fastly / Domainr --------------------------------------------------------------------------

FLAGS = [
    "unknown", "undelegated", "inactive", "pending", "disallowed", "claimed", "reserved", "dpml",
    "invalid", "active", "parked", "marketed", "expiring", "deleting", "priced", "transferable",
    "premium", "suffix", "zone", "tld",
]  # fmt: skip
flag_strings = st.lists(st.sampled_from(FLAGS) | st.text(max_size=10), max_size=5).map(" ".join)
fastly_docs = st.fixed_dictionaries(
    {},
    optional={
        "domain": names | json_values,
        "zone": json_values,
        "status": flag_strings | json_values,
        "tags": json_values,
        "errors": json_values,
        "msg": json_values,
    },
)
domainr_entries = st.fixed_dictionaries(
    {}, optional={"domain": names | json_values, "status": flag_strings | json_values}
)
domainr_docs = st.fixed_dictionaries(
    {"status": st.lists(domainr_entries | json_values, max_size=3)},
    optional={"errors": json_values},
)


def check_fastly(obs: Observation, now: datetime) -> None:
    if obs.registered is False:
        assert "inactive" in obs.statuses and obs.error is None
    if obs.error is not None:
        assert obs.registered is None
    verdict = judge(obs, now=now)
    if verdict.unsafe:
        assert obs.registered is False or says_deleted(obs), verdict.reason


@settings(max_examples=300, deadline=None)
@given(doc=json_values, domain=st.none() | names, now=nows)
def test_fastly_any_json(doc: Any, domain: str | None, now: datetime) -> None:
    check_fastly(parse_fastly_status(doc, domain), now)


@settings(max_examples=300, deadline=None)
@given(doc=fastly_docs | domainr_docs, domain=st.none() | names, now=nows)
def test_fastly_odd_fields(doc: dict[str, Any], domain: str | None, now: datetime) -> None:
    check_fastly(parse_fastly_status(doc, domain), now)


@settings(max_examples=300, deadline=None)
@given(flags=flag_strings, now=nows)
def test_fastly_only_inactive_releases(flags: str, now: datetime) -> None:
    obs = parse_fastly_status({"domain": "example.com", "status": flags}, "example.com")
    words = flags.lower().split()
    if obs.registered is False:
        assert "inactive" in words and "unknown" not in words
    if "unknown" in words or not words:
        assert obs.registered is None
    check_fastly(obs, now)
