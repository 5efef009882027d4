"""Fastly domain status API and the legacy Domainr API: flag reading and HTTP behaviour."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import respx

from flask_domainguard.config import ConfigError, load_settings
from flask_domainguard.status.fastly import (
    DomainrBackend,
    FastlyBackend,
    classify_flags,
    parse_fastly_status,
)
from flask_domainguard.status.observation import Observation
from flask_domainguard.verdict import VerdictKind, judge

NOW = datetime(2024, 6, 1, tzinfo=timezone.utc)
KEY = "s3cr3t-fastly-token-XYZ"
CLIENT_ID = "domainr-client-id-123"
FASTLY_URL = "https://api.fastly.com/domain-management/v1/tools/status"
DOMAINR_URL = "https://api.domainr.com/v2/status"


def fastly_body(flags: str, domain: str = "example.com", **extra: Any) -> dict[str, Any]:
    return {"domain": domain, "zone": "com", "status": flags, "tags": "generic", **extra}


def domainr_body(flags: str, domain: str = "example.com") -> dict[str, Any]:
    summary = flags.split()[-1] if flags.split() else ""
    return {"status": [{"domain": domain, "zone": "com", "status": flags, "summary": summary}]}


# -- flags ------------------------------------------------------------------------------------

FLAG_CASES: list[tuple[str, bool | None, VerdictKind]] = [
    # available
    ("inactive", False, VerdictKind.RELEASED),
    ("undelegated inactive", False, VerdictKind.RELEASED),
    ("active inactive", False, VerdictKind.RELEASED),  # rightmost wins
    ("inactive premium", False, VerdictKind.RELEASED),  # registry premium: anyone can buy
    ("inactive priced", False, VerdictKind.RELEASED),
    ("undelegated inactive marketed", False, VerdictKind.RELEASED),
    ("inactive expiring", False, VerdictKind.RELEASED),
    ("inactive deleting", False, VerdictKind.RELEASED),
    ("reserved inactive", False, VerdictKind.RELEASED),  # rightmost wins
    # held
    ("active", True, VerdictKind.OK),
    ("inactive active", True, VerdictKind.OK),
    ("undelegated active", True, VerdictKind.OK),
    ("active parked", True, VerdictKind.OK),
    ("active marketed", True, VerdictKind.OK),
    ("active priced", True, VerdictKind.OK),
    ("active transferable", True, VerdictKind.OK),
    ("marketed premium", True, VerdictKind.OK),
    ("active expiring", True, VerdictKind.IN_GRACE),
    ("expiring", True, VerdictKind.IN_GRACE),
    ("active deleting", True, VerdictKind.EXPIRED),
    ("undelegated deleting", True, VerdictKind.EXPIRED),
    ("active claimed", True, VerdictKind.OK),
    # cannot tell
    ("", None, VerdictKind.UNKNOWN),
    ("   ", None, VerdictKind.UNKNOWN),
    ("unknown", None, VerdictKind.UNKNOWN),
    ("undelegated unknown", None, VerdictKind.UNKNOWN),
    ("inactive unknown", None, VerdictKind.UNKNOWN),
    ("active unknown", None, VerdictKind.UNKNOWN),
    ("undelegated", None, VerdictKind.UNKNOWN),
    ("inactive reserved", None, VerdictKind.UNKNOWN),
    ("undelegated inactive claimed", None, VerdictKind.UNKNOWN),
    ("inactive dpml", None, VerdictKind.UNKNOWN),
    ("inactive pending", None, VerdictKind.UNKNOWN),
    ("disallowed", None, VerdictKind.UNKNOWN),
    ("reserved", None, VerdictKind.UNKNOWN),
    ("undelegated reserved", None, VerdictKind.UNKNOWN),
    ("invalid", None, VerdictKind.UNKNOWN),
    ("suffix", None, VerdictKind.UNKNOWN),
    ("zone tld", None, VerdictKind.UNKNOWN),
    ("dpml", None, VerdictKind.UNKNOWN),
    ("claimed", None, VerdictKind.UNKNOWN),
    ("pending", None, VerdictKind.UNKNOWN),
    ("sparkly", None, VerdictKind.UNKNOWN),
]


@pytest.mark.parametrize(("flags", "registered", "kind"), FLAG_CASES)
@pytest.mark.parametrize("form", ["fastly", "domainr"])
def test_flags(flags: str, registered: bool | None, kind: VerdictKind, form: str) -> None:
    doc = fastly_body(flags) if form == "fastly" else domainr_body(flags or " ")
    obs = parse_fastly_status(doc, "example.com")
    assert obs.registered is registered
    assert (obs.error is None) is (registered is not None)
    assert obs.statuses == frozenset(flags.split())
    assert obs.source == form
    assert obs.domain == "example.com"
    assert judge(obs, now=NOW).kind is kind


def test_classify_keeps_order_meaningful() -> None:
    assert classify_flags(["inactive", "active"]) == (True, None)
    assert classify_flags(["active", "inactive"]) == (False, None)
    registered, error = classify_flags(["reserved"])
    assert registered is None and error == "not open for registration (reserved)"


def test_case_and_whitespace() -> None:
    obs = parse_fastly_status(fastly_body("  Undelegated\tINACTIVE \n"))
    assert obs.registered is False and obs.statuses == {"undelegated", "inactive"}


def test_domain_optional_and_checked() -> None:
    assert parse_fastly_status(fastly_body("active")).domain == "example.com"
    obs = parse_fastly_status(fastly_body("active", domain="other.com"), "example.com")
    assert obs.registered is None and obs.error == "the answer is about other.com, not example.com"
    idn = parse_fastly_status(fastly_body("active", domain="bücher.com"), "xn--bcher-kva.com")
    assert idn.registered is True and idn.domain == "xn--bcher-kva.com"


def test_domainr_picks_the_entry_asked_for() -> None:
    doc = {
        "status": [
            {"domain": "example.net", "zone": "net", "status": "undelegated inactive"},
            {"domain": "Example.com", "zone": "com", "status": "active"},
        ]
    }
    assert parse_fastly_status(doc, "example.com").registered is True
    assert parse_fastly_status(doc, "example.net").registered is False
    assert parse_fastly_status(doc).domain == "example.net"  # no domain given: the first
    missing = parse_fastly_status(doc, "example.org")
    assert missing.registered is None and missing.error == "Domainr no status for example.org"


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (
            {
                "status": [],
                "errors": [{"code": 400, "message": "Bad request", "detail": "domain invalid"}],
            },
            "error 400 Bad request (domain invalid)",
        ),
        ({"status": [], "errors": ["boom"]}, "error boom"),
        ({"status": []}, "empty status list"),
        ({"errors": [{"status": "401", "title": "Unauthorized"}]}, "error 401 Unauthorized"),
        ({"msg": "Provided credentials are missing or invalid"}, "credentials are missing"),
        ({}, "no status"),
        ({"status": 7}, "neither text nor a list"),
        ({"status": [{"domain": "example.com", "status": 1}]}, "not text"),
        ({"status": ["example.com active"]}, "no status for"),
        ({"domain": 5, "status": "active"}, "domain is not text"),
        ({"domain": "not a domain", "status": "active"}, "not a domain"),
        ([], "not a JSON object"),
        ("active", "not a JSON object"),
        (None, "not a JSON object"),
    ],
)
def test_errors_and_odd_bodies(doc: Any, fragment: str) -> None:
    obs = parse_fastly_status(doc, "example.com")
    assert obs.registered is None
    assert obs.domain == "example.com"
    assert obs.error is not None and fragment in obs.error
    assert judge(obs, now=NOW).kind is VerdictKind.UNKNOWN


def test_missing_optional_fields() -> None:
    assert parse_fastly_status({"status": "active"}, "example.com").registered is True
    assert parse_fastly_status({"status": "active"}).domain == ""
    # A Domainr entry must name its domain when one was asked for: never "released" blindly.
    entry = {"status": [{"status": "undelegated inactive"}]}
    assert parse_fastly_status(entry, "example.com").registered is None
    assert parse_fastly_status(entry).registered is False


# -- backends over HTTP -----------------------------------------------------------------------


def observe(backend: FastlyBackend | DomainrBackend, domain: str) -> Observation:
    async def go() -> Observation:
        async with httpx.AsyncClient() as client:
            return await backend.observe(domain, client=client)

    return asyncio.run(go())


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def fastly() -> FastlyBackend:
    return FastlyBackend(load_settings({"DOMAINGUARD_FASTLY_API_KEY": KEY}))


def domainr() -> DomainrBackend:
    return DomainrBackend(load_settings({"DOMAINGUARD_DOMAINR_CLIENT_ID": CLIENT_ID}))


def test_fastly_request(mock: respx.MockRouter) -> None:
    route = mock.get(FASTLY_URL, params={"domain": "example.com"}).mock(
        return_value=httpx.Response(200, json=fastly_body("undelegated inactive"))
    )
    obs = observe(fastly(), "Example.com")
    assert obs == Observation(
        domain="example.com",
        registered=False,
        statuses=frozenset({"undelegated", "inactive"}),
        source="fastly",
    )
    request = route.calls.last.request
    assert request.headers["fastly-key"] == KEY
    assert KEY not in str(request.url)
    assert request.headers["user-agent"].startswith("flask-domainguard/")
    assert KEY not in repr(fastly())


def test_domainr_request(mock: respx.MockRouter) -> None:
    route = mock.get(DOMAINR_URL, params={"client_id": CLIENT_ID, "domain": "example.com"}).mock(
        return_value=httpx.Response(200, json=domainr_body("active expiring"))
    )
    obs = observe(domainr(), "example.com")
    assert obs.registered is True and obs.source == "domainr"
    assert obs.statuses == {"active", "expiring"}
    assert "fastly-key" not in route.calls.last.request.headers


def test_fastly_key_not_sent_across_origins(mock: respx.MockRouter) -> None:
    mock.get(FASTLY_URL).mock(
        return_value=httpx.Response(302, headers={"location": "https://elsewhere.test/status"})
    )
    other = mock.get("https://elsewhere.test/status").mock(
        return_value=httpx.Response(200, json=fastly_body("active"))
    )
    assert observe(fastly(), "example.com").registered is True
    assert "fastly-key" not in other.calls.last.request.headers


@pytest.mark.parametrize("make", [fastly, domainr])
@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        (httpx.Response(401, json={"msg": "bad token"}), "refused the credentials (HTTP 401)"),
        (httpx.Response(403), "HTTP 403"),
        (httpx.Response(429, headers={"retry-after": "30"}), "HTTP 429"),
        (httpx.Response(500, text="oops"), "HTTP 500"),
        (
            httpx.Response(400, json={"status": [], "errors": [{"code": 400, "message": "no"}]}),
            "HTTP 400 from",
        ),
        (httpx.Response(200, html="<p>hi</p>"), "not JSON (text/html)"),
        (httpx.Response(200, json=[1]), "not an object"),
        (httpx.Response(200), "empty"),
        (httpx.Response(200, headers={"content-length": str(10**8)}, text="{}"), "larger than"),
        (httpx.Response(200, text='{"status": "' + "x" * 2_000_000 + '"}'), "larger than"),
    ],
)
def test_http_failures(
    mock: respx.MockRouter, make: Any, response: httpx.Response, fragment: str
) -> None:
    backend = make()
    mock.get(backend.url).mock(return_value=response)
    obs = observe(backend, "example.com")
    assert obs.registered is None and obs.source == backend.name
    assert obs.error is not None and fragment in obs.error
    assert KEY not in obs.error and CLIENT_ID not in obs.error
    if response.status_code == 429:
        assert obs.retry_after == 30.0


@pytest.mark.parametrize(("make", "secret"), [(fastly, KEY), (domainr, CLIENT_ID)])
@pytest.mark.parametrize("error", [httpx.ReadTimeout, httpx.ConnectError, httpx.ProxyError])
def test_transport_errors_never_leak_keys(
    mock: respx.MockRouter,
    make: Any,
    secret: str,
    error: type[Exception],
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = make()
    # Exception texts can quote the URL, and the Domainr URL carries the key.
    mock.get(backend.url).mock(side_effect=error(f"failed GET {backend.url}?client_id={secret}"))
    with caplog.at_level(logging.DEBUG):
        obs = observe(backend, "example.com")
    assert obs.registered is None and obs.error
    assert KEY not in obs.error and CLIENT_ID not in obs.error
    assert KEY not in caplog.text and CLIENT_ID not in caplog.text


def test_httpx_request_log_has_no_client_id(
    mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    backend = domainr()
    mock.get(backend.url).mock(return_value=httpx.Response(200, json=domainr_body("active")))
    with caplog.at_level(logging.DEBUG):
        observe(backend, "example.com")
    assert "client_id=***" in caplog.text  # httpx logged the request, with the key blanked
    assert CLIENT_ID not in caplog.text


def test_answer_for_another_domain(mock: respx.MockRouter) -> None:
    backend = fastly()
    mock.get(backend.url).mock(
        return_value=httpx.Response(200, json=fastly_body("inactive", domain="evil.com"))
    )
    obs = observe(backend, "example.com")
    assert obs.registered is None and obs.error is not None and "evil.com" in obs.error


def test_server_key_and_bad_input() -> None:
    assert fastly().server_key("a.com") == "api.fastly.com"
    assert domainr().server_key("a.com") == "api.domainr.com"
    obs = observe(fastly(), "not a domain")
    assert obs.registered is None and obs.error and "not a domain" in obs.error


def test_keys_required() -> None:
    with pytest.raises(ConfigError, match="DOMAINGUARD_FASTLY_API_KEY"):
        FastlyBackend()
    with pytest.raises(ConfigError, match="DOMAINGUARD_DOMAINR_CLIENT_ID"):
        DomainrBackend(load_settings({}))
    assert FastlyBackend(api_key="k", url="https://status.test/x").url == "https://status.test/x"
