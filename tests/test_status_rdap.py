"""The RDAP backend: parsing real answers, the bootstrap and its cache, HTTP behaviour."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import respx
from freezegun import freeze_time

from flask_domainguard.status import observe_sync
from flask_domainguard.status.base import parse_datetime
from flask_domainguard.status.observation import Observation
from flask_domainguard.status.rdap import (
    BOOTSTRAP_CACHE_NAME,
    RdapBackend,
    normalize_status,
    parse_bootstrap,
    parse_rdap_domain,
)
from flask_domainguard.verdict import VerdictKind, judge
from tests.guard_helpers import add
from tests.rdap_support import RdapServer, domain_doc

T = TypeVar("T")
UTC = timezone.utc

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
RDAP_DIR = REFERENCE / "rdap"
BOOTSTRAP_2022 = RDAP_DIR / "iana-bootstrap-dns-2022.json"
NO_REFERENCE = "../shared/reference/rdap is absent (a clone without the reference data)"
needs_reference = pytest.mark.skipif(not RDAP_DIR.is_dir(), reason=NO_REFERENCE)

FIXTURES = (
    sorted(p.name for p in RDAP_DIR.glob("*.json") if not p.name.startswith("iana-"))
    if RDAP_DIR.is_dir()
    else []
)
FIXTURE_PARAMS: list[Any] = FIXTURES or [
    pytest.param("absent", marks=pytest.mark.skip(reason=NO_REFERENCE))
]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((RDAP_DIR / name).read_text(encoding="utf-8"))
    return doc


def dt(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def rdap_doc(name: str = "example.com", **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"objectClassName": "domain", "ldhName": name.upper()}
    doc.update(fields)
    return doc


def judge_time(doc: dict[str, Any]) -> datetime:
    """A real answer's own 'now': its database update, else its latest event."""
    dates: list[datetime] = []
    for event in doc.get("events", []):
        when = parse_datetime(event.get("eventDate"))
        if event.get("eventAction") == "last update of RDAP database" and when:
            return when
        if when is not None:
            dates.append(when)
    return max(dates)


# -- the real answers ---------------------------------------------------------------------

EXPECTED: dict[str, dict[str, Any]] = {
    "20c.com.verisign.json": {
        "domain": "20c.com",
        "statuses": frozenset(),
        "registered_at": dt("2004-06-28T18:28:14"),
        "expires_at": dt("2025-06-28T18:28:14"),
        "transferred_at": None,
        "kind": VerdictKind.OK,
    },
    "autorenew.lol.nomulus.json": {
        "domain": "autorenew.lol",
        "statuses": frozenset({"active", "auto renew period"}),
        "registered_at": dt("1998-12-31T00:00:00"),
        "expires_at": dt("2000-12-31T00:00:00"),
        "transferred_at": None,
        # `auto renew period` alone is no lapse, and expiry is 365 days after 'now'.
        "kind": VerdictKind.OK,
    },
    "example.cz.cznic.json": {
        "domain": "example.cz",
        "statuses": frozenset({"active"}),
        "registered_at": dt("2004-08-30T22:55:00"),
        "expires_at": dt("2019-08-30T12:00:00"),
        "transferred_at": dt("2007-01-25T02:05:00"),
        # No database-update event: judged at its latest event, the expiration itself.
        "kind": VerdictKind.IN_GRACE,
    },
    "google.com.verisign.json": {
        "domain": "google.com",
        "statuses": frozenset(
            {
                "client delete prohibited",
                "client transfer prohibited",
                "client update prohibited",
                "server delete prohibited",
                "server transfer prohibited",
                "server update prohibited",
            }
        ),
        "registered_at": dt("1997-09-15T04:00:00"),
        "expires_at": dt("2028-09-14T04:00:00"),
        "transferred_at": None,
        "kind": VerdictKind.OK,
    },
    "norway.no.norid.json": {
        "domain": "norway.no",
        "statuses": frozenset(),
        "registered_at": dt("2017-01-24T12:09:23"),
        "expires_at": None,  # Norid publishes no expiration
        "transferred_at": None,
        "kind": VerdictKind.OK,
    },
    "redemption.lol.nomulus.json": {
        "domain": "redemption.lol",
        "statuses": frozenset({"pending delete", "redemption period"}),
        "registered_at": dt("1999-01-01T00:00:00"),
        "expires_at": None,  # year 294247: dropped
        "transferred_at": None,
        "kind": VerdictKind.IN_GRACE,
    },
    "themarquetry.com.verisign.json": {
        "domain": "themarquetry.com",
        "statuses": frozenset({"client transfer prohibited"}),
        "registered_at": dt("2021-03-16T17:07:37"),
        "expires_at": dt("2022-03-16T17:07:37"),
        "transferred_at": None,
        "kind": VerdictKind.OK,  # 55 days left on its database date
    },
}


@needs_reference
def test_every_fixture_has_expectations() -> None:
    assert set(FIXTURES) == set(EXPECTED)


@pytest.mark.parametrize("name", FIXTURE_PARAMS)
def test_parse_real_answers(name: str) -> None:
    obs = parse_rdap_domain(load(name))
    want = EXPECTED[name]
    assert obs.error is None
    assert obs.registered is True
    assert obs.source == "rdap"
    for field in ("domain", "statuses", "registered_at", "expires_at", "transferred_at"):
        assert getattr(obs, field) == want[field], field
    for moment in (obs.registered_at, obs.expires_at, obs.transferred_at):
        assert moment is None or moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize("name", FIXTURE_PARAMS)
def test_judge_real_answers_on_their_own_date(name: str) -> None:
    doc = load(name)
    verdict = judge(parse_rdap_domain(doc), now=judge_time(doc))
    assert not verdict.unsafe, verdict.reason
    assert verdict.kind is EXPECTED[name]["kind"], verdict.reason


@needs_reference
def test_redemption_fixture_lapse_start_falls_back() -> None:
    doc = load("redemption.lol.nomulus.json")
    now = judge_time(doc)
    obs = parse_rdap_domain(doc)
    seen = now - timedelta(days=10)
    verdict = judge(obs, now=now, lapse_seen_at=seen)
    assert verdict.kind is VerdictKind.IN_GRACE
    assert verdict.until == seen + timedelta(days=30)
    later = judge(obs, now=now + timedelta(days=25), lapse_seen_at=seen)
    assert later.kind is VerdictKind.EXPIRED and later.unsafe


# -- parsing details ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2004-08-30T22:55:00+00:00", dt("2004-08-30T22:55:00")),
        ("2004-08-30T22:55:00+02:00", dt("2004-08-30T20:55:00")),
        ("2004-08-30T22:55:00-0530", dt("2004-08-31T04:25:00")),
        ("1998-12-31T00:00:00.000Z", dt("1998-12-31T00:00:00")),
        ("2021-03-16T17:07:37.123456789Z", dt("2021-03-16T17:07:37.123456")),
        ("2021-03-16t17:07:37z", dt("2021-03-16T17:07:37")),
        ("2021-03-16T17:07:37", dt("2021-03-16T17:07:37")),  # no offset: UTC
        ("2021-03-16", dt("2021-03-16T00:00:00")),
        ("2016-12-31T23:59:60Z", dt("2016-12-31T23:59:59")),  # leap second
        ("9999-12-31T23:59:59Z", dt("9999-12-31T23:59:59")),
        ("1985-01-01T00:00:00Z", dt("1985-01-01T00:00:00")),
        ("294247-01-10T04:00:54.775Z", None),
        ("1984-12-31T23:59:59Z", None),
        ("0001-01-01T00:00:00Z", None),
        ("9999-12-31T23:00:00-05:00", None),  # past 9999 once in UTC
        ("2021-02-30T00:00:00Z", None),
        ("2021-03-16T25:00:00Z", None),
        ("yesterday", None),
        ("", None),
        (None, None),
        (1616000000, None),
        (["2021-03-16"], None),
        ("2021-03-16T17:07:37+25:00", None),
    ],
)
def test_parse_datetime(text: object, expected: datetime | None) -> None:
    assert parse_datetime(text) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("pending delete", "pending delete"),
        ("Pending Delete", "pending delete"),
        ("pendingDelete", "pending delete"),
        ("PENDING_DELETE", "pending delete"),
        ("auto-renew period", "auto renew period"),
        ("autoRenewPeriod", "auto renew period"),
        ("clientTransferProhibited", "client transfer prohibited"),
        ("ok", "active"),
        ("  redemption   period ", "redemption period"),
    ],
)
def test_normalize_status(raw: str, expected: str) -> None:
    assert normalize_status(raw) == expected


def test_parse_events_and_names() -> None:
    doc = rdap_doc(
        "example.com",
        status=["clientHold", "autoRenewPeriod", "ok"],
        events=[
            {"eventAction": "registration", "eventDate": "2001-01-01T00:00:00Z"},
            {"eventAction": "registrar expiration", "eventDate": "2031-01-01T00:00:00Z"},
            {"eventAction": "transfer", "eventDate": "2010-01-01T00:00:00Z"},
            {"eventAction": "transfer", "eventDate": "2020-05-05T00:00:00+02:00"},
            {"eventAction": "transfer", "eventDate": "not a date"},
            {"eventAction": "last changed"},
        ],
    )
    obs = parse_rdap_domain(doc)
    assert obs.domain == "example.com"
    assert obs.statuses == {"client hold", "auto renew period", "active"}
    assert obs.registered_at == dt("2001-01-01T00:00:00")
    assert obs.expires_at == dt("2031-01-01T00:00:00")  # registrar expiration as fallback
    assert obs.transferred_at == dt("2020-05-04T22:00:00")  # the latest transfer

    doc["events"].append({"eventAction": "expiration", "eventDate": "2030-01-01T00:00:00Z"})
    assert parse_rdap_domain(doc).expires_at == dt("2030-01-01T00:00:00")


# -- RFC 9083 event actions (section 10.2.3): which ones say the name changed hands ---------


def test_reregistration_counts_as_a_registration_and_the_latest_wins() -> None:
    doc = rdap_doc(
        events=[
            {"eventAction": "registration", "eventDate": "2001-01-01T00:00:00Z"},
            {"eventAction": "reregistration", "eventDate": "2024-05-01T10:00:00Z"},
            {"eventAction": "reregistration", "eventDate": "2019-05-01T10:00:00Z"},
        ]
    )
    assert parse_rdap_domain(doc).registered_at == dt("2024-05-01T10:00:00")
    # A registration later than every reregistration is still the latest.
    doc["events"].append({"eventAction": "registration", "eventDate": "2025-01-01T00:00:00Z"})
    assert parse_rdap_domain(doc).registered_at == dt("2025-01-01T00:00:00")


def test_reinstantiation_counts_as_a_registration() -> None:
    doc = rdap_doc(
        events=[
            {"eventAction": "registration", "eventDate": "2001-01-01T00:00:00Z"},
            {"eventAction": "reinstantiation", "eventDate": "2023-03-03T00:00:00Z"},
        ]
    )
    assert parse_rdap_domain(doc).registered_at == dt("2023-03-03T00:00:00")


def test_last_changed_deletion_and_locks_do_not_move_any_date() -> None:
    doc = rdap_doc(
        events=[
            {"eventAction": "registration", "eventDate": "2001-01-01T00:00:00Z"},
            {"eventAction": "expiration", "eventDate": "2031-01-01T00:00:00Z"},
            {"eventAction": "last changed", "eventDate": "2025-01-01T00:00:00Z"},
            {"eventAction": "deletion", "eventDate": "2025-02-01T00:00:00Z"},
            {"eventAction": "locked", "eventDate": "2025-03-01T00:00:00Z"},
            {"eventAction": "unlocked", "eventDate": "2025-04-01T00:00:00Z"},
            {"eventAction": "last update of RDAP database", "eventDate": "2025-05-01T00:00:00Z"},
        ]
    )
    obs = parse_rdap_domain(doc)
    assert obs.registered_at == dt("2001-01-01T00:00:00")
    assert obs.expires_at == dt("2031-01-01T00:00:00")
    assert obs.transferred_at is None


@pytest.mark.parametrize("date", [None, "", "not a date", "1970-01-01T00:00:00Z", 20240501, []])
@pytest.mark.parametrize("action", ["reregistration", "reinstantiation", "reRegistration"])
def test_a_reregistration_without_a_usable_date_is_an_error_not_ignored(
    action: str, date: Any
) -> None:
    """Dropping it would judge the name on its first registration: OK, for a new holder."""
    events: list[dict[str, Any]] = [
        {"eventAction": "registration", "eventDate": "2001-01-01T00:00:00Z"},
        {"eventAction": action},
    ]
    if date is not None:
        events[1]["eventDate"] = date
    obs = parse_rdap_domain(rdap_doc(events=events))
    assert obs.registered is None
    assert obs.error is not None and "no usable eventDate" in obs.error


def test_a_reregistration_ten_minutes_ago_judges_reregistered() -> None:
    """Issue 11, case 5: registered 2001, re-registered ten minutes ago, address proven 2020."""
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    doc = rdap_doc(
        "example.com",
        status=["active"],
        events=[
            {"eventAction": "registration", "eventDate": "2001-01-01T00:00:00Z"},
            {"eventAction": "reregistration", "eventDate": "2025-06-01T11:50:00Z"},
            {"eventAction": "expiration", "eventDate": "2026-06-01T11:50:00Z"},
        ],
    )
    verdict = judge(parse_rdap_domain(doc), now=now, verified_at=datetime(2020, 3, 1, tzinfo=UTC))
    assert verdict.kind is VerdictKind.REREGISTERED and verdict.unsafe
    # The same name proven after the re-registration is the new holder's, and fine.
    later = judge(parse_rdap_domain(doc), now=now, verified_at=now - timedelta(minutes=5))
    assert later.kind is VerdictKind.OK


def test_unicode_name_becomes_a_label() -> None:
    obs = parse_rdap_domain({"objectClassName": "domain", "unicodeName": "Bücher.example"})
    assert obs.registered is True
    assert obs.domain == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"objectClassName": "entity", "ldhName": "example.com"}, "objectClassName"),
        ({"ldhName": "example.com"}, "objectClassName"),
        ({"errorCode": 404, "title": "Not Found"}, "RDAP error 404"),
        ({"objectClassName": "domain"}, "no ldhName"),
        ({"objectClassName": "domain", "ldhName": 7}, "ldhName"),
        ({"objectClassName": "domain", "ldhName": "com"}, "not a domain"),
        (rdap_doc(status="active"), "status"),
        (rdap_doc(status=["active", 3]), "status"),
        (rdap_doc(events={"eventAction": "expiration"}), "events"),
        (rdap_doc(events=["expiration"]), "event"),
        (rdap_doc(events=[{"eventAction": None, "eventDate": "2020-01-01"}]), "eventAction"),
    ],
)
def test_malformed_documents_are_errors(doc: dict[str, Any], fragment: str) -> None:
    obs = parse_rdap_domain(doc)
    assert obs.registered is None
    assert obs.error is not None and fragment in obs.error


@pytest.mark.parametrize("doc", [[], "domain", None, 42, [{"objectClassName": "domain"}]])
def test_non_objects_are_errors(doc: Any) -> None:
    obs = parse_rdap_domain(doc)
    assert obs.registered is None and obs.error


# -- bootstrap --------------------------------------------------------------------------------


@needs_reference
def test_parse_iana_bootstrap_2022() -> None:
    doc = json.loads(BOOTSTRAP_2022.read_text(encoding="utf-8"))
    assert len(doc["services"]) == 771
    services = parse_bootstrap(doc)
    assert services["com"] == ("https://rdap.verisign.com/com/v1/",)
    assert services["no"] == ("https://rdap.norid.no/",)
    assert services["cz"] == ("https://rdap.nic.cz/",)
    assert "de" not in services  # why DEFAULT_RDAP_SERVERS exists
    assert all(urls and all(u.endswith("/") for u in urls) for urls in services.values())
    assert sum(len(tlds) for tlds, _ in doc["services"]) == len(services)


def test_bootstrap_prefers_https_and_skips_junk() -> None:
    services = parse_bootstrap(
        {
            "services": [
                [["Lol", ".Pizza."], ["http://plain.test/", "https://secure.test/x"]],
                [["onlyhttp"], ["http://plain.test/"]],
                ["broken"],
                [["nourl"], ["ftp://nope.test/"]],
                [[42, "ok"], ["https://ok.test/"]],
                [["lol"], ["https://second.test/"]],
            ]
        }
    )
    assert services == {
        "lol": ("https://secure.test/x/", "http://plain.test/"),
        "pizza": ("https://secure.test/x/", "http://plain.test/"),
        "onlyhttp": ("http://plain.test/",),
        "ok": ("https://ok.test/",),
    }


@pytest.mark.parametrize("doc", [{}, {"services": {}}, {"services": [["x"]]}, [], "x"])
def test_bootstrap_unusable(doc: Any) -> None:
    with pytest.raises(ValueError, match="bootstrap"):
        parse_bootstrap(doc)


# -- HTTP with respx ------------------------------------------------------------------------

BOOT_URL = "https://iana.test/rdap/dns.json"
BOOT = {
    "version": "1.0",
    "services": [
        [["com", "net"], ["https://rdap.registry.test/com/v1/"]],
        [["example"], ["https://rdap.example-registry.test/"]],
        [["uk"], ["https://rdap.uk.test/"]],
    ],
}
COM = "https://rdap.registry.test/com/v1/domain/"


def backend(tmp_path: Path, **kwargs: Any) -> RdapBackend:
    kwargs.setdefault("servers", {})
    kwargs.setdefault("bootstrap_file", tmp_path / "bootstrap.json")
    return RdapBackend(bootstrap_url=BOOT_URL, max_response_bytes=100_000, **kwargs)


def observe(b: RdapBackend, domain: str, timeout: float | None = None) -> Observation:
    async def go() -> Observation:
        async with httpx.AsyncClient() as client:
            return await b.observe(domain, client=client, timeout=timeout)

    return run(go())


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.get(BOOT_URL).mock(return_value=httpx.Response(200, json=BOOT))
        yield router


def rdap_response(name: str, code: int = 200, **fields: Any) -> httpx.Response:
    return httpx.Response(
        code, json=rdap_doc(name, **fields), headers={"content-type": "application/rdap+json"}
    )


def test_200(tmp_path: Path, mock: respx.MockRouter) -> None:
    route = mock.get(COM + "example.com").mock(
        return_value=rdap_response(
            "example.com",
            status=["active"],
            events=[{"eventAction": "expiration", "eventDate": "2030-01-01T00:00:00Z"}],
        )
    )
    obs = observe(backend(tmp_path), "Example.COM.")
    assert obs.registered is True and obs.error is None
    assert obs.expires_at == dt("2030-01-01T00:00:00")
    request = route.calls.last.request
    assert "application/rdap+json" in request.headers["accept"]
    assert request.headers["user-agent"].startswith("flask-domainguard/")


@needs_reference
def test_200_real_fixture(tmp_path: Path, mock: respx.MockRouter) -> None:
    mock.get(COM + "google.com").mock(
        return_value=httpx.Response(200, json=load("google.com.verisign.json"))
    )
    obs = observe(backend(tmp_path), "google.com")
    assert obs == parse_rdap_domain(load("google.com.verisign.json"))


def test_idn_is_queried_as_a_label(tmp_path: Path, mock: respx.MockRouter) -> None:
    mock.get(COM + "xn--bcher-kva.com").mock(return_value=rdap_response("xn--bcher-kva.com"))
    obs = observe(backend(tmp_path), "bücher.com")
    assert obs.registered is True and obs.domain == "xn--bcher-kva.com"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404),
        httpx.Response(404, json={"errorCode": 404, "title": "Not Found"}),
        httpx.Response(404, text="  \n", headers={"content-type": "application/rdap+json"}),
    ],
)
def test_404_is_not_registered(
    tmp_path: Path, mock: respx.MockRouter, response: httpx.Response
) -> None:
    mock.get(COM + "gone.com").mock(return_value=response)
    obs = observe(backend(tmp_path), "gone.com")
    assert obs == Observation(domain="gone.com", registered=False, source="rdap")
    assert judge(obs, now=datetime(2024, 1, 1, tzinfo=UTC)).kind is VerdictKind.RELEASED


def test_404_with_html_is_an_error(tmp_path: Path, mock: respx.MockRouter) -> None:
    mock.get(COM + "gone.com").mock(
        return_value=httpx.Response(404, html="<html><h1>Not Found</h1></html>")
    )
    obs = observe(backend(tmp_path), "gone.com")
    assert obs.registered is None
    assert obs.error is not None and "text/html" in obs.error


def test_404_with_json_array_is_an_error(tmp_path: Path, mock: respx.MockRouter) -> None:
    mock.get(COM + "gone.com").mock(return_value=httpx.Response(404, json=[]))
    assert observe(backend(tmp_path), "gone.com").registered is None


def test_404_after_redirect_to_another_host_is_an_error(
    tmp_path: Path, mock: respx.MockRouter
) -> None:
    mock.get(COM + "gone.com").mock(
        return_value=httpx.Response(
            302, headers={"location": "https://rdap.registrar.test/domain/gone.com"}
        )
    )
    mock.get("https://rdap.registrar.test/domain/gone.com").mock(return_value=httpx.Response(404))
    obs = observe(backend(tmp_path), "gone.com")
    assert obs.registered is None
    assert obs.error is not None and "rdap.registrar.test" in obs.error


def test_redirects_followed_within_a_cap(tmp_path: Path, mock: respx.MockRouter) -> None:
    mock.get(COM + "moved.com").mock(
        return_value=httpx.Response(301, headers={"location": "/com/v2/domain/moved.com"})
    )
    mock.get("https://rdap.registry.test/com/v2/domain/moved.com").mock(
        return_value=httpx.Response(
            307, headers={"location": "https://rdap2.registry.test/domain/moved.com"}
        )
    )
    mock.get("https://rdap2.registry.test/domain/moved.com").mock(
        return_value=rdap_response("moved.com")
    )
    assert observe(backend(tmp_path), "moved.com").registered is True

    loop = mock.get(COM + "loop.com").mock(
        return_value=httpx.Response(302, headers={"location": COM + "loop.com"})
    )
    obs = observe(backend(tmp_path), "loop.com")
    assert obs.registered is None and obs.error is not None and "redirects" in obs.error
    assert loop.call_count == 6  # the first request and five hops


def test_redirect_downgrade_to_http_is_refused(tmp_path: Path, mock: respx.MockRouter) -> None:
    mock.get(COM + "down.com").mock(
        return_value=httpx.Response(302, headers={"location": "http://evil.test/domain/down.com"})
    )
    plain = mock.get("http://evil.test/domain/down.com").mock(return_value=httpx.Response(404))
    obs = observe(backend(tmp_path), "down.com")
    assert obs.registered is None and obs.error is not None and "plain http" in obs.error
    assert not plain.called


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), ("0", 0.0), ("-5", 0.0), ("99999999", 86400.0), ("soon", None)],
)
def test_429_retry_after_seconds(
    tmp_path: Path, mock: respx.MockRouter, header: str, expected: float | None
) -> None:
    mock.get(COM + "busy.com").mock(
        return_value=httpx.Response(429, headers={"retry-after": header})
    )
    obs = observe(backend(tmp_path), "busy.com")
    assert obs.registered is None and obs.error is not None and "429" in obs.error
    assert obs.retry_after == expected


def test_429_retry_after_http_date(tmp_path: Path, mock: respx.MockRouter) -> None:
    mock.get(COM + "busy.com").mock(
        return_value=httpx.Response(429, headers={"retry-after": "Wed, 01 May 2024 12:05:00 GMT"})
    )
    with freeze_time("2024-05-01T12:00:00Z", real_asyncio=True):
        obs = observe(backend(tmp_path), "busy.com")
    assert obs.retry_after == 300.0
    mock.get(COM + "later.com").mock(
        return_value=httpx.Response(429, headers={"retry-after": "Fri, 01 May 2099 12:00:00 GMT"})
    )
    assert observe(backend(tmp_path), "later.com").retry_after == 86400.0


@pytest.mark.parametrize("status", [500, 502, 503, 400, 403, 204])
def test_other_statuses_are_errors(tmp_path: Path, mock: respx.MockRouter, status: int) -> None:
    mock.get(COM + "x.com").mock(return_value=httpx.Response(status, json=rdap_doc("x.com")))
    obs = observe(backend(tmp_path), "x.com")
    assert obs.registered is None and obs.error == f"HTTP {status} from rdap.registry.test"


@pytest.mark.parametrize(
    ("exc", "fragment"),
    [
        (httpx.ReadTimeout("read timed out"), "timed out"),
        (httpx.ConnectTimeout("connect timed out"), "timed out"),
        (httpx.ConnectError("[Errno 111] Connection refused"), "could not connect"),
        (
            httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            "CERTIFICATE_VERIFY_FAILED",
        ),
        (httpx.RemoteProtocolError("peer closed connection"), "RemoteProtocolError"),
    ],
)
def test_transport_errors(
    tmp_path: Path, mock: respx.MockRouter, exc: Exception, fragment: str
) -> None:
    mock.get(COM + "x.com").mock(side_effect=exc)
    obs = observe(backend(tmp_path), "x.com")
    assert obs.registered is None
    assert obs.error is not None and fragment in obs.error and "rdap.registry.test" in obs.error


class NeverRead(httpx.AsyncByteStream):
    """A body that fails the test if anyone reads it."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        raise AssertionError("the body was read")
        yield b""  # pragma: no cover


class Endless(httpx.AsyncByteStream):
    """An endless body without Content-Length; counts what was pulled."""

    def __init__(self) -> None:
        self.chunks = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.chunks += 1
            yield b'{"a": "' + b"x" * 16384

    async def aclose(self) -> None:
        pass


def test_oversized_content_length_is_not_read(tmp_path: Path, mock: respx.MockRouter) -> None:
    mock.get(COM + "big.com").mock(
        return_value=httpx.Response(200, headers={"content-length": str(10**9)}, stream=NeverRead())
    )
    obs = observe(backend(tmp_path), "big.com")
    assert obs.registered is None
    assert obs.error is not None and "larger than 100000 bytes" in obs.error


def test_oversized_stream_is_cut_off(tmp_path: Path, mock: respx.MockRouter) -> None:
    body = Endless()
    mock.get(COM + "big.com").mock(return_value=httpx.Response(200, stream=body))
    obs = observe(backend(tmp_path), "big.com")
    assert obs.registered is None
    assert obs.error is not None and "larger than" in obs.error
    assert body.chunks <= 100_000 // 16384 + 2


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        (httpx.Response(200, html="<html>Welcome</html>"), "not JSON (text/html)"),
        (httpx.Response(200, content=b"\xff\xfe garbage"), "not JSON"),
        (httpx.Response(200, json=[rdap_doc("x.com")]), "not an object"),
        (httpx.Response(200, json="x.com"), "not an object"),
        (httpx.Response(200), "empty"),
        (httpx.Response(200, content=b"[" * 50_000 + b"]" * 50_000), "not JSON"),
        (
            httpx.Response(200, json={"objectClassName": "nameserver", "ldhName": "x.com"}),
            "objectClassName",
        ),
        (httpx.Response(200, json=rdap_doc("other.com")), "about other.com, not x.com"),
    ],
)
def test_unusable_answers(
    tmp_path: Path, mock: respx.MockRouter, response: httpx.Response, fragment: str
) -> None:
    mock.get(COM + "x.com").mock(return_value=response)
    obs = observe(backend(tmp_path), "x.com")
    assert obs.registered is None
    assert obs.domain == "x.com"
    assert obs.error is not None and fragment in obs.error


def test_tld_without_server(tmp_path: Path, mock: respx.MockRouter) -> None:
    obs = observe(backend(tmp_path), "example.zz")
    assert obs.registered is None and obs.error == "no RDAP server known for .zz"
    verdict = judge(obs, now=datetime(2024, 1, 1, tzinfo=UTC))
    assert verdict.kind is VerdictKind.UNKNOWN and not verdict.unsafe


def test_not_a_domain(tmp_path: Path, mock: respx.MockRouter) -> None:
    for bad in ("com", "", "exa mple.com", "-x-.com"):
        obs = observe(backend(tmp_path), bad)
        assert obs.registered is None and obs.error and "not a domain" in obs.error


def test_server_overrides(tmp_path: Path, mock: respx.MockRouter) -> None:
    b = backend(
        tmp_path,
        servers={
            "co.uk": "https://rdap.nominet.test/co",  # longer suffix than the bootstrap's uk
            "example": "https://override.test/",  # a configured value beats the bootstrap
            "de": "https://rdap.denic.de/",  # a built-in default only completes it
            "io": "https://rdap.io.test/",
        },
    )
    run(b.ensure_bootstrap())
    assert b.base_url("shop.co.uk") == "https://rdap.nominet.test/co/"
    assert b.base_url("shop.org.uk") == "https://rdap.uk.test/"
    assert b.base_url("a.example") == "https://override.test/"
    assert b.base_url("a.de") == "https://rdap.denic.de/"
    assert b.server_key("a.io") == "rdap.io.test"
    assert b.server_key("a.net") == b.server_key("b.com") == "rdap.registry.test"
    assert b.server_key("a.zz") == "rdap:zz"

    mock.get("https://rdap.nominet.test/co/domain/shop.co.uk").mock(
        return_value=rdap_response("shop.co.uk")
    )
    assert observe(b, "shop.co.uk").registered is True


def test_builtin_default_yields_to_bootstrap(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=False) as router:
        boot = {"services": [[["de"], ["https://rdap.new-denic.test/"]]]}
        router.get(BOOT_URL).mock(return_value=httpx.Response(200, json=boot))
        b = RdapBackend(bootstrap_url=BOOT_URL, bootstrap_file=tmp_path / "b.json")
        run(b.ensure_bootstrap())
        assert b.base_url("a.de") == "https://rdap.new-denic.test/"
        assert b.base_url("a.ch") == "https://rdap.nic.ch/"


# -- bootstrap cache --------------------------------------------------------------------------


def test_bootstrap_cached_within_ttl_and_refetched_after(tmp_path: Path) -> None:
    cache = tmp_path / "deep" / "cache.json"
    with respx.mock(assert_all_called=False) as router:
        boot = router.get(BOOT_URL).mock(return_value=httpx.Response(200, json=BOOT))
        router.get(COM + "a.com").mock(return_value=rdap_response("a.com"))
        with freeze_time("2024-01-01T00:00:00Z", real_asyncio=True) as frozen:
            first = backend(tmp_path, bootstrap_file=cache, bootstrap_ttl=timedelta(hours=24))
            assert observe(first, "a.com").registered is True
            assert observe(first, "a.com").registered is True
            assert boot.call_count == 1
            saved = json.loads(cache.read_text())
            assert saved["bootstrap"] == BOOT and saved["fetched_at"].startswith("2024-01-01")

            frozen.tick(timedelta(hours=23))
            second = backend(tmp_path, bootstrap_file=cache, bootstrap_ttl=timedelta(hours=24))
            assert observe(second, "a.com").registered is True
            assert boot.call_count == 1  # the file was reused by a new process

            frozen.tick(timedelta(hours=2))
            assert observe(second, "a.com").registered is True
            assert boot.call_count == 2
            assert json.loads(cache.read_text())["fetched_at"].startswith("2024-01-02")


def test_stale_cache_used_when_refresh_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache.json"
    cache.write_text(
        json.dumps({"fetched_at": "2020-01-01T00:00:00Z", "url": BOOT_URL, "bootstrap": BOOT})
    )
    with respx.mock(assert_all_called=False) as router:
        boot = router.get(BOOT_URL).mock(return_value=httpx.Response(503))
        router.get(COM + "a.com").mock(return_value=rdap_response("a.com"))
        b = backend(tmp_path, bootstrap_file=cache)
        with caplog.at_level(logging.WARNING, logger="flask_domainguard.status.rdap"):
            assert observe(b, "a.com").registered is True
            assert observe(b, "a.com").registered is True
        assert boot.call_count == 1  # no retry on every lookup after a failure
        assert "refresh" in caplog.text and "HTTP 503" in caplog.text
        assert json.loads(cache.read_text())["fetched_at"] == "2020-01-01T00:00:00Z"


def test_no_bootstrap_at_all(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=False) as router:
        router.get(BOOT_URL).mock(side_effect=httpx.ConnectError("refused"))
        router.get("https://rdap.denic.de/domain/a.de").mock(return_value=rdap_response("a.de"))
        b = RdapBackend(bootstrap_url=BOOT_URL, bootstrap_file=tmp_path / "b.json")
        obs = observe(b, "a.com")
        assert obs.registered is None
        assert obs.error is not None and obs.error.startswith("RDAP bootstrap unavailable")
        assert observe(b, "a.de").registered is True  # built-in servers still work


@pytest.mark.parametrize("content", ["{not json", '{"fetched_at": "x", "bootstrap": {}}', "[]"])
def test_corrupt_cache_is_refetched(tmp_path: Path, mock: respx.MockRouter, content: str) -> None:
    cache = tmp_path / "bootstrap.json"
    cache.write_text(content)
    mock.get(COM + "a.com").mock(return_value=rdap_response("a.com"))
    assert observe(backend(tmp_path), "a.com").registered is True
    assert json.loads(cache.read_text())["bootstrap"] == BOOT


def test_plain_iana_file_as_cache(tmp_path: Path) -> None:
    cache = tmp_path / "dns.json"
    cache.write_text(json.dumps(BOOT))
    b = RdapBackend(bootstrap_url=BOOT_URL, bootstrap_file=cache, servers={})
    assert b.server_key("a.com") == "rdap.registry.test"  # read without any fetch


def test_instance_folder_cache(tmp_path: Path, mock: respx.MockRouter) -> None:
    folder = tmp_path / "instance"
    b = RdapBackend(bootstrap_url=BOOT_URL, instance_path=folder, servers={})
    mock.get(COM + "a.com").mock(return_value=rdap_response("a.com"))
    assert observe(b, "a.com").registered is True
    assert (folder / BOOTSTRAP_CACHE_NAME).is_file()


def test_owned_client_and_observe_sync(tmp_path: Path, mock: respx.MockRouter) -> None:
    mock.get(COM + "a.com").mock(return_value=rdap_response("a.com"))
    b = backend(tmp_path)
    assert observe_sync(b, "a.com").registered is True

    async def own() -> Observation:
        try:
            return await b.observe("a.com")
        finally:
            await b.aclose()

    assert run(own()).registered is True

    async def inside_a_loop() -> Observation:
        return observe_sync(b, "a.com")  # runs in a helper thread

    assert run(inside_a_loop()).registered is True


# -- a real HTTP server ------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    fixture: bytes = b""
    bootstrap: bytes = b""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on the slow answer, as it should

    def do_GET(self) -> None:
        if self.path == "/bootstrap.json":
            self._send(200, self.bootstrap, Content_Type="application/json")
        elif self.path == "/rdap/domain/google.com":
            self._send(200, self.fixture, Content_Type="application/rdap+json")
        elif self.path == "/rdap/domain/free-name.com":
            self._send(404, b"", Content_Type="application/rdap+json")
        elif self.path == "/rdap/domain/busy.com":
            self._send(429, b"", Retry_After="7")
        elif self.path == "/rdap/domain/slow.com":
            time.sleep(1.5)
            self._send(200, self.fixture)
        else:
            self._send(500, b"oops")


@pytest.fixture
def rdap_server() -> Iterator[str]:
    fixture = RDAP_DIR / "google.com.verisign.json"
    if not fixture.is_file():
        pytest.skip(NO_REFERENCE)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    _Handler.fixture = fixture.read_bytes()
    _Handler.bootstrap = json.dumps({"services": [[["com"], [base + "/rdap/"]]]}).encode()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base
    finally:
        server.shutdown()
        server.server_close()


def test_against_a_real_server(tmp_path: Path, rdap_server: str) -> None:
    b = RdapBackend(
        bootstrap_url=rdap_server + "/bootstrap.json",
        bootstrap_file=tmp_path / "boot.json",
        servers={},
        timeout=0.5,
        allow_private=True,  # the bootstrap lists this server on 127.0.0.1
    )

    async def sweep() -> list[Observation]:
        async with httpx.AsyncClient() as client:
            names = ["google.com", "free-name.com", "busy.com", "slow.com", "broken.com"]
            return list(await asyncio.gather(*(b.observe(n, client=client) for n in names)))

    started = time.monotonic()
    google, free, busy, slow, broken = run(sweep())
    assert time.monotonic() - started < 1.4  # the slow answer was not waited for

    assert google == parse_rdap_domain(load("google.com.verisign.json"))
    assert free == Observation(domain="free-name.com", registered=False, source="rdap")
    assert busy.registered is None and busy.retry_after == 7.0
    assert slow.registered is None and slow.error is not None and "timed out" in slow.error
    assert broken.registered is None and broken.error is not None and "HTTP 500" in broken.error
    assert b.server_key("x.com") == rdap_server.removeprefix("http://")
    assert json.loads((tmp_path / "boot.json").read_text())["bootstrap"]["services"]


def test_owned_client_survives_new_event_loops(tmp_path: Path, rdap_server: str) -> None:
    """A backend lives as long as the app; each observe_sync call runs a new event loop."""
    b = RdapBackend(
        bootstrap_url=rdap_server + "/bootstrap.json",
        bootstrap_file=tmp_path / "boot.json",
        servers={},
        timeout=2.0,
        allow_private=True,  # the bootstrap lists this server on 127.0.0.1
    )
    for _ in range(3):
        assert run(b.observe("google.com")).registered is True
        assert observe_sync(b, "free-name.com").registered is False
    run(b.aclose())


def test_lookups_do_not_queue_behind_a_stale_refresh(tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    cache.write_text(
        json.dumps({"fetched_at": "2020-01-01T00:00:00Z", "url": BOOT_URL, "bootstrap": BOOT})
    )
    release = asyncio.Event()

    async def slow_bootstrap(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json=BOOT)

    async def scenario() -> list[Observation]:
        with respx.mock(assert_all_called=False) as router:
            router.get(BOOT_URL).mock(side_effect=slow_bootstrap)
            router.get(COM + "a.com").mock(return_value=rdap_response("a.com"))
            b = backend(tmp_path, bootstrap_file=cache)
            async with httpx.AsyncClient() as client:
                refresh = asyncio.create_task(b.observe("a.com", client=client))
                await asyncio.sleep(0.05)  # the first lookup now holds the refresh lock
                quick = await asyncio.wait_for(b.observe("a.com", client=client), 2)
                release.set()
                return [quick, await refresh]

    quick, first = run(scenario())
    assert quick.registered is True and first.registered is True
    assert json.loads(cache.read_text())["fetched_at"] != "2020-01-01T00:00:00Z"


# -- through the product: guard.reset_decision with a real RDAP server ------------------------


@pytest.mark.use_rdap_registry("example")
def test_reset_is_refused_after_a_reregistration_ten_minutes_ago(
    guard: Any, make_user: Any, rdap_registry: RdapServer
) -> None:
    """Issue 11, case 5, end to end: the registry answers registration 2001 and a
    reregistration ten minutes ago; the address was proven in 2020. No reset mail."""
    now = datetime.now(UTC)
    rdap_registry.docs["rereg.example"] = domain_doc(
        "rereg.example",
        ("registration", "2001-01-01T00:00:00Z"),
        ("reregistration", (now - timedelta(minutes=10)).isoformat()),
        ("expiration", (now + timedelta(days=365)).isoformat()),
    )
    rdap_registry.docs["steady.example"] = domain_doc(
        "steady.example",
        ("registration", "2001-01-01T00:00:00Z"),
        ("expiration", (now + timedelta(days=365)).isoformat()),
    )
    proven = datetime(2020, 3, 1, tzinfo=UTC)
    add(guard, make_user(), "erin@rereg.example", verified_at=proven)
    add(guard, make_user(), "sam@steady.example", verified_at=proven)

    decision = guard.reset_decision("erin@rereg.example")
    assert not decision.allowed
    assert decision.reason == "domain_reregistered"
    assert rdap_registry.hits["/rdap/domain/rereg.example"] == 1, "the registry was asked"
    assert guard.reset_decision("sam@steady.example").allowed, "a steady domain stays open"
