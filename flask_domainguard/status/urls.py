"""The URLs of status lookups: an endpoint parsed once, each lookup's URL built as text.

A sweep makes a hundred thousand lookups to a few endpoints (an API, a registry's RDAP server),
and parsing a URL with httpx costs 10 to 20 µs of CPU, more than the rest of a lookup's own
work. :class:`Endpoint` parses a base URL once; :meth:`Endpoint.with_query` and
:meth:`Endpoint.with_path` add a lookup's part as text, escaped whole, so it stays the query
value or path segment it was put in (it cannot reach the origin, the request line, a fragment
or a dot segment). The :class:`Target` they return is what
:func:`~flask_domainguard.status.http.fetch_json` fetches; its :class:`httpx.URL` is parsed
only when something needs it (httpx's own client, a redirect).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote, urlencode

import httpx

__all__ = ["Endpoint", "Target"]


def _netloc(url: httpx.URL) -> str:
    """``host`` or ``host:port`` of ``url``, as text."""
    return url.netloc.decode("ascii", "replace")


class Target:
    """A URL to fetch: its text (encoded), its origin and its :class:`httpx.URL`, which is
    parsed only when asked for (by httpx's own client, or to follow a redirect).

    Made by an :class:`Endpoint` (``text`` is the endpoint's with a query or a path added,
    so the origin is the endpoint's) or from a parsed URL by :meth:`of`.

    :param origin: a URL with the same scheme, host and port (what the SSRF checks read).
    """

    __slots__ = ("_url", "netloc", "origin", "text")

    def __init__(
        self, text: str, *, origin: httpx.URL, netloc: str, url: httpx.URL | None = None
    ) -> None:
        self.text = text
        self.origin = origin
        self.netloc = netloc
        self._url = url

    @classmethod
    def of(cls, url: httpx.URL) -> Target:
        """The target of an already parsed URL."""
        return cls(str(url), origin=url, netloc=_netloc(url), url=url)

    @property
    def scheme(self) -> str:
        return self.origin.scheme

    @property
    def url(self) -> httpx.URL:
        """The whole URL, parsed on first use."""
        if self._url is None:
            self._url = httpx.URL(self.text)
        return self._url

    def __repr__(self) -> str:  # never the text: it may hold a key (Domainr)
        return f"<Target {self.scheme}://{self.netloc}>"


#: Characters form encoding (and :func:`urllib.parse.quote`) never escape.
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*")


class Endpoint:
    """A base URL (configuration, an RDAP bootstrap entry) parsed once, to which each lookup
    adds its query or path as text: parsing a URL with httpx costs 10 to 20 µs of CPU, and a
    sweep makes a hundred thousand lookups to a few endpoints.

    What is added is escaped whole (form encoding, or every character but the unreserved
    ones), so it cannot change the origin, and the text stays a valid encoded URL.

    :raises httpx.InvalidURL: ``url`` is not a URL.
    """

    __slots__ = ("netloc", "takes_path", "text", "url")

    def __init__(self, url: str | httpx.URL) -> None:
        parsed = httpx.URL(url)
        if parsed.fragment:  # never sent; what is added must not land in it
            parsed = parsed.copy_with(fragment=None)
        self.url = parsed
        self.text = str(parsed)
        self.netloc = _netloc(parsed)
        #: Whether :meth:`with_path` may add to it: a path ending with ``/``, no query.
        self.takes_path = "?" not in self.text and parsed.raw_path.endswith(b"/")

    def with_query(self, params: Mapping[str, str]) -> Target:
        """This URL with ``params`` added to its query."""
        separator = "&" if "?" in self.text else "?"
        if all(_UNRESERVED.fullmatch(k) and _UNRESERVED.fullmatch(v) for k, v in params.items()):
            # What form encoding leaves as it is (a domain name): no need to run it.
            query = "&".join(f"{name}={value}" for name, value in params.items())
        else:
            query = urlencode(params)
        return self._target(f"{self.text}{separator}{query}")

    def with_path(self, *segments: str) -> Target:
        """This URL with ``segments`` added to its path, which must end with ``/`` (and no
        query may follow it).

        :raises ValueError: a segment is empty, ``.`` or ``..``, or the URL has a query or a
            path not ending with ``/``.
        """
        if not self.takes_path:
            raise ValueError("segments are added only to a path ending with '/'")
        if any(segment in ("", ".", "..") for segment in segments):
            raise ValueError("an empty, '.' or '..' path segment")
        return self._target(self.text + "/".join(quote(seg, safe="") for seg in segments))

    def _target(self, text: str) -> Target:
        return Target(text, origin=self.url, netloc=self.netloc)
