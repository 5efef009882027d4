"""Endpoints parsed once, lookups' URLs built as text (:mod:`flask_domainguard.status.urls`).

What a lookup adds to an endpoint comes from a domain name, so whatever it holds must stay in
the path segment or query value it was put in: never reach the origin the request goes to, the
request line (CR, LF, spaces), a fragment, or a dot segment. Checked with httpx's parser and
with yarl's (the one aiohttp sends with).
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from flask_domainguard.status.urls import Endpoint, Target

BASES = [
    "http://127.0.0.1:8080/status",
    "https://api.fastly.com/domain-management/v1/tools/status",
    "https://status.test/v1?format=json",
    "https://status.test/v1?#fragment",
    "https://[2001:db8::1]:8443/rdap/",
    "https://rdap.example/",
    "https://user:secret@rdap.example/base/",
]
PATH_BASES = [b for b in BASES if "?" not in b and b.endswith("/")]

# What goes on the wire: printable ASCII, no space, no fragment.
_SENDABLE = re.compile(r"[!-~]+")


def same_origin(target: Target, endpoint: Endpoint) -> None:
    parsed = httpx.URL(target.text)
    assert (parsed.scheme, parsed.host, parsed.port) == (
        endpoint.url.scheme,
        endpoint.url.host,
        endpoint.url.port,
    )
    sent = URL(target.text, encoded=True)
    assert (sent.scheme, sent.host, sent.port) == (
        URL(endpoint.text).scheme,
        URL(endpoint.text).host,
        URL(endpoint.text).port,
    )
    assert target.netloc == endpoint.netloc
    assert _SENDABLE.fullmatch(target.text), target.text
    assert "#" not in target.text
    assert target.url == parsed


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(BASES),
    params=st.dictionaries(
        st.text(min_size=1, max_size=8) | st.sampled_from(["domain", "client_id"]),
        st.text(max_size=30) | st.from_regex(r"[a-z0-9.-]{1,30}", fullmatch=True),
        max_size=3,
    ),
)
def test_a_query_added_to_an_endpoint_stays_a_query_value(
    base: str, params: dict[str, str]
) -> None:
    endpoint = Endpoint(base)
    target = endpoint.with_query(params)
    same_origin(target, endpoint)
    # Form encoding, whichever way it was built (a domain name skips urlencode).
    separator = "&" if "?" in endpoint.text else "?"
    assert target.text == endpoint.text + separator + urlencode(params)
    read = httpx.URL(target.text).params
    for name, value in params.items():
        assert read.get_list(name)[-1] == value
    assert URL(target.text, encoded=True).path == URL(endpoint.text).path


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(PATH_BASES),
    segments=st.lists(
        st.text(min_size=1, max_size=20).filter(lambda s: s not in (".", "..")),
        min_size=1,
        max_size=3,
    ),
)
def test_a_path_added_to_an_endpoint_stays_its_segments(base: str, segments: list[str]) -> None:
    endpoint = Endpoint(base)
    target = endpoint.with_path(*segments)
    same_origin(target, endpoint)
    sent = URL(target.text, encoded=True)
    assert sent.query_string == ""
    assert list(sent.parts[-len(segments) :]) == segments


@pytest.mark.parametrize("segment", ["", ".", ".."])
def test_dot_and_empty_segments_are_refused(segment: str) -> None:
    with pytest.raises(ValueError):
        Endpoint("https://rdap.example/").with_path("domain", segment)


@pytest.mark.parametrize("base", ["https://rdap.example/rdap", "https://rdap.example/?x=1"])
def test_a_path_is_added_only_after_a_slash_and_before_any_query(base: str) -> None:
    with pytest.raises(ValueError):
        Endpoint(base).with_path("domain", "example.com")


def test_the_usual_lookup_urls() -> None:
    fastly = Endpoint("https://api.fastly.com/domain-management/v1/tools/status")
    assert fastly.with_query({"domain": "example.com"}).text == (
        "https://api.fastly.com/domain-management/v1/tools/status?domain=example.com"
    )
    rdap = Endpoint("https://rdap.verisign.com/com/v1/")
    assert rdap.with_path("domain", "xn--bcher-kva.com").text == (
        "https://rdap.verisign.com/com/v1/domain/xn--bcher-kva.com"
    )
    assert rdap.with_path("domain", "example.com").netloc == "rdap.verisign.com"


def test_a_target_never_shows_its_text() -> None:
    """The Domainr key travels in the query string."""
    target = Endpoint("https://domainr.test/v2/status").with_query({"client_id": "sekrit"})
    assert "sekrit" in target.text
    assert "sekrit" not in repr(target)
    assert "sekrit" not in repr(Target.of(target.url))
