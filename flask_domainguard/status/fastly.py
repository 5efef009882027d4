"""Fastly domain status API and its predecessor, the legacy Domainr API.

Both answer with space-separated flags such as ``"undelegated inactive"``; the rightmost flag
is the most important. How the flags are read (:func:`classify_flags`), in this order:

1. no flags at all: ``registered=None`` (nothing to go on);
2. ``unknown`` anywhere: ``None`` (the registry did not answer the API);
3. ``inactive`` rightmost: ``False`` (available to register);
4. ``inactive`` without ``active``: ``False``, unless a restriction flag (below) is present,
   then ``None``;
5. ``active parked marketed expiring deleting priced transferable premium``: ``True`` (held
   by someone; the verdict reads ``expiring`` and ``deleting``);
6. ``disallowed reserved invalid suffix tld zone dpml claimed pending``: ``None``: not a name
   anyone can freely register, so nothing an attacker could take over, but no lifecycle to
   judge either;
7. ``undelegated`` alone: ``None`` (the API also says it when an upstream times out);
8. anything else: ``None`` (unrecognised).

Only ``inactive`` ever gives ``registered=False``: a wrong "released" unverifies people's
addresses, so every doubtful answer is "cannot tell" and is retried later. Every flag is kept
in :attr:`Observation.statuses`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypedDict

import httpx
from typing_extensions import Unpack

from ..config import ConfigError, Settings, load_settings
from .base import LoopClient, keeps_its_timeout, not_a_domain, to_alabel, user_agent
from .http import FetchResult, fetch_json
from .observation import Observation
from .urls import Endpoint, Target

__all__ = [
    "REGISTERED_FLAGS",
    "RESTRICTED_FLAGS",
    "ApiBackendOptions",
    "DomainrBackend",
    "FastlyBackend",
    "classify_flags",
    "parse_fastly_status",
]

logger = logging.getLogger(__name__)

#: Flags that only appear on a name somebody holds.
REGISTERED_FLAGS = frozenset(
    {"active", "parked", "marketed", "expiring", "deleting", "priced", "transferable", "premium"}
)

#: Flags of names that are not open to ordinary registration (or are no domain at all).
RESTRICTED_FLAGS = frozenset(
    {"disallowed", "reserved", "invalid", "suffix", "tld", "zone", "dpml", "claimed", "pending"}
)


def classify_flags(flags: Sequence[str]) -> tuple[bool | None, str | None]:
    """Return ``(registered, error)`` for flags in API order (see the module table)."""
    if not flags:
        return None, "the status API gave no status flags"
    present = set(flags)
    if "unknown" in present:
        return None, "status 'unknown': the registry did not answer the status API"
    restricted = sorted(present & RESTRICTED_FLAGS)
    if flags[-1] == "inactive":
        return False, None
    if "inactive" in present and "active" not in present:
        if restricted:
            return None, f"not open for registration ({' '.join(restricted)})"
        return False, None
    if present & REGISTERED_FLAGS:
        return True, None
    if restricted:
        return None, f"not open for registration ({' '.join(restricted)})"
    if present == {"undelegated"}:
        return None, "status 'undelegated' alone: not in DNS, registration unknown"
    return None, f"unrecognised status {' '.join(flags)!r}"


def _short(value: object, limit: int = 120) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _api_error(doc: Mapping[str, Any]) -> str | None:
    """The first error an API body reports (Domainr ``errors[]``, Fastly ``msg``/``detail``)."""
    errors = doc.get("errors")
    if isinstance(errors, list):
        for item in errors:
            if isinstance(item, Mapping):
                code = item.get("code", item.get("status"))
                message = item.get("message", item.get("title"))
                detail = item.get("detail")
                parts = [f"error {code}" if isinstance(code, (int, str)) else "error"]
                if isinstance(message, str) and message:
                    parts.append(message)
                if isinstance(detail, str) and detail and detail != message:
                    parts.append(f"({detail})")
                return _short(" ".join(parts))
            if isinstance(item, str):
                return _short(f"error {item}")
    message = doc.get("msg", doc.get("message"))
    if isinstance(message, str) and message:
        detail = doc.get("detail")
        suffix = f" ({detail})" if isinstance(detail, str) and detail else ""
        return _short(f"error: {message}{suffix}")
    return None


def parse_fastly_status(doc: Mapping[str, Any], domain: str | None = None) -> Observation:
    """Read a Fastly or legacy Domainr status body into an :class:`Observation`.

    Accepts ``{"domain", "zone", "status": "flags", ...}`` (Fastly),
    ``{"status": [{"domain", "zone", "status", "summary"}, ...]}`` (Domainr) and
    ``{"status": [], "errors": [...]}``. Never raises: anything unreadable gives
    ``registered=None`` with ``error`` set.

    :param domain: the domain asked about. When given, the answer must be about it (a Domainr
        list is searched for it); when omitted, the body's own (first) domain is used.
    """
    wanted = to_alabel(domain) if isinstance(domain, str) else None
    fallback = wanted or (domain.strip().lower() if isinstance(domain, str) else "")
    return _parse_safely(doc, wanted, fallback)


def _parse_safely(doc: Mapping[str, Any], wanted: str | None, fallback: str) -> Observation:
    """:func:`_parse`, never raising; ``wanted`` is an A-label already (or ``None``)."""
    try:
        return _parse(doc, wanted, fallback)
    except Exception as exc:  # the contract is "never raises"
        logger.warning("unexpected failure reading a status API body", exc_info=True)
        return Observation.failed(
            fallback, f"unreadable status API body ({type(exc).__name__})", source="fastly"
        )


def _parse(doc: Mapping[str, Any], wanted: str | None, fallback: str) -> Observation:
    if not isinstance(doc, Mapping):
        return Observation.failed(fallback, "status API body is not a JSON object", source="fastly")
    raw = doc.get("status")
    if isinstance(raw, list):
        source = "domainr"
        entry: Mapping[str, Any] | None = None
        for item in raw:
            if not isinstance(item, Mapping):
                continue
            name = item.get("domain")
            item_domain = to_alabel(name) if isinstance(name, str) else None
            if wanted is None or item_domain == wanted:
                entry = item
                break
        if entry is None:
            error = _api_error(doc)
            if error is None:
                error = f"no status for {wanted}" if wanted and raw else "empty status list"
            return Observation.failed(fallback, f"Domainr {error}", source=source)
        holder: Mapping[str, Any] = entry
    elif isinstance(raw, str):
        source = "fastly"
        holder = doc
    elif raw is None:
        error = _api_error(doc) or "no status in the answer"
        return Observation.failed(fallback, f"status API {error}", source="fastly")
    else:
        return Observation.failed(fallback, "status is neither text nor a list", source="fastly")

    flags_text = holder.get("status")
    if not isinstance(flags_text, str):
        return Observation.failed(fallback, "status flags are not text", source=source)
    name = holder.get("domain")
    if name is not None and not isinstance(name, str):
        return Observation.failed(fallback, "domain is not text", source=source)
    # The usual answer names the domain exactly as asked: an A-label already.
    answered = wanted if name == wanted else to_alabel(name) if name else None
    if name and answered is None:
        return Observation.failed(fallback, f"{_short(name, 60)!r} is not a domain", source=source)
    if wanted is not None and answered is not None and answered != wanted:
        return Observation.failed(
            wanted, f"the answer is about {answered}, not {wanted}", source=source
        )
    flags = flags_text.lower().split()  # any Unicode whitespace, as re's \s
    registered, error = classify_flags(flags)
    return Observation(
        domain=wanted or answered or fallback,
        registered=registered,
        statuses=frozenset(flags),
        source=source,
        error=error,
    )


# -- backends ------------------------------------------------------------------------------


class _QueryKeyFilter(logging.Filter):
    """Blank ``client_id=`` values out of httpx's request log lines (the Domainr key)."""

    _pattern = re.compile(r"(client_id=)[^&\s\"']*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._pattern.sub(r"\1***", str(arg)) if "client_id=" in str(arg) else arg
                for arg in record.args
            )
        if isinstance(record.msg, str) and "client_id=" in record.msg:
            record.msg = self._pattern.sub(r"\1***", record.msg)
        return True


_KEY_FILTER = _QueryKeyFilter()


class ApiBackendOptions(TypedDict, total=False):
    """The keyword options both status API backends take beside their key.

    :param url: the API endpoint (default: the backend's ``DOMAINGUARD_*_URL`` setting).
    :param client: an HTTP client every lookup uses unless it is passed one (never closed here).
    :param timeout: seconds one lookup may take (default ``DOMAINGUARD_HTTP_TIMEOUT``).
    :param max_response_bytes: the largest answer read (default
        ``DOMAINGUARD_MAX_RESPONSE_BYTES``).
    """

    url: str | None
    client: httpx.AsyncClient | None
    timeout: float | None
    max_response_bytes: int | None


class _StatusApiBackend:
    """Shared HTTP handling of the Fastly and Domainr backends."""

    name = "fastly"
    key_setting = ""
    #: What a missing key stops construction with, after "The '<name>' status backend ".
    key_missing = ""

    def __init__(
        self,
        settings: Settings,
        *,
        key: str | None,
        default_url: str,
        url: str | None = None,
        client: httpx.AsyncClient | None = None,
        timeout: float | None = None,
        max_response_bytes: int | None = None,
    ) -> None:
        if not key:
            raise ConfigError(f"The '{self.name}' status backend {self.key_missing}")
        self._key = key
        self.url = url or default_url
        self.timeout = timeout if timeout is not None else settings.http_timeout
        self.max_response_bytes = max_response_bytes or settings.max_response_bytes
        self.allow_private = settings.status_allow_private
        self._clients = LoopClient(client)
        self._headers = {"Accept": "application/json", "User-Agent": user_agent()}
        self._endpoint_for: str | None = None
        self._endpoint: Endpoint

    def __repr__(self) -> str:  # never show the key
        return f"<{type(self).__name__} {self.url}>"

    def covers(self, domain: str) -> bool:
        """The API answers for every TLD (``unknown`` where it cannot tell: no evidence)."""
        return True

    def server_key(self, domain: str) -> str:
        """Every lookup goes to the one API host."""
        return self._parsed_url().netloc

    def _parsed_url(self) -> Endpoint:
        """:attr:`url`, parsed once per value: every lookup reads it, and parsing costs more
        than the rest of a lookup's own work."""
        if self._endpoint_for != self.url:
            self._endpoint = Endpoint(self.url)
            self._endpoint_for = self.url
        return self._endpoint

    def _with_params(self, params: dict[str, str]) -> Target:
        """:attr:`url` with ``params`` added to its query."""
        return self._parsed_url().with_query(params)

    async def aclose(self) -> None:
        """Close the HTTP client the backend created itself (never an injected one)."""
        await self._clients.aclose()

    def _request(self, domain: str) -> tuple[Target, dict[str, str]]:
        raise NotImplementedError

    @keeps_its_timeout  # every await is fetch_json's, which ends within the timeout
    async def observe(
        self,
        domain: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float | None = None,
    ) -> Observation:
        """Look ``domain`` up; see the module docstring for how flags are read."""
        asked = to_alabel(domain) if isinstance(domain, str) else None
        if asked is None:
            return not_a_domain(domain, source=self.name)
        try:
            url, secret_headers = self._request(asked)
            result = await fetch_json(
                self._clients.get(client),
                url,
                headers=self._headers,
                secret_headers=secret_headers,
                secrets=[self._key],
                max_bytes=self.max_response_bytes,
                timeout=timeout or self.timeout,
                allow_private=self.allow_private,  # for redirects: the URL itself is configured
            )
            obs = self._interpret(asked, result)
        except Exception as exc:
            # A bug here must cost one lookup, not the sweep. The traceback could hold the
            # key in a URL, so only the exception type is logged.
            logger.error(
                "%s lookup of %s failed unexpectedly (%s)", self.name, asked, type(exc).__name__
            )
            obs = Observation.failed(
                asked, f"internal error in the {self.name} backend", source=self.name
            )
        if obs.error and self._key in obs.error:
            obs = replace(obs, error=obs.error.replace(self._key, "***"))
        logger.debug("%s %s: registered=%s error=%s", self.name, asked, obs.registered, obs.error)
        return obs

    def _interpret(self, asked: str, result: FetchResult) -> Observation:
        host = result.host

        def failed(error: str) -> Observation:
            return Observation.failed(
                asked, error, source=self.name, retry_after=result.retry_after
            )

        if result.error:
            return failed(f"{self.name} lookup failed: {result.error}")
        status = result.status
        body = result.data if result.is_json and isinstance(result.data, Mapping) else None
        if status == 429:
            return failed(f"rate limited by {host} (HTTP 429)")
        if status in (401, 403):
            return failed(
                f"{host} refused the credentials (HTTP {status}); check {self.key_setting}"
            )
        if status != 200:
            detail = _api_error(body) if body is not None else None
            return failed(f"HTTP {status} from {host}" + (f": {detail}" if detail else ""))
        if body is None:
            what = result.body_error or ("empty" if result.empty else "JSON but not an object")
            return failed(f"answer of {host} is {what}")
        obs = _parse_safely(body, asked, asked)  # about ``asked`` (an A-label) or failed
        return obs if obs.source == self.name else replace(obs, source=self.name)


class FastlyBackend(_StatusApiBackend):
    """Fastly's domain status API: ``GET {url}?domain=D`` with the ``Fastly-Key`` header."""

    name = "fastly"
    key_setting = "DOMAINGUARD_FASTLY_API_KEY"
    key_missing = (
        "needs an API token: set DOMAINGUARD_FASTLY_API_KEY "
        "(a Fastly token allowed to read domain status)."
    )

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        api_key: str | None = None,
        **options: Unpack[ApiBackendOptions],
    ) -> None:
        base = settings if settings is not None else load_settings({})
        key = api_key or base.fastly_api_key
        super().__init__(base, key=key, default_url=base.fastly_url, **options)

    def _request(self, domain: str) -> tuple[Target, dict[str, str]]:
        return self._with_params({"domain": domain}), {"Fastly-Key": self._key}


class DomainrBackend(_StatusApiBackend):
    """Legacy Domainr API: ``GET {url}?client_id=KEY&domain=D``.

    The key travels in the query string, so httpx's request log lines get a filter that
    blanks ``client_id=`` out, and the URL never appears in errors.
    """

    name = "domainr"
    key_setting = "DOMAINGUARD_DOMAINR_CLIENT_ID"
    key_missing = (
        "needs a client id: set DOMAINGUARD_DOMAINR_CLIENT_ID "
        "(or use the 'fastly' backend, Domainr's successor)."
    )

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client_id: str | None = None,
        **options: Unpack[ApiBackendOptions],
    ) -> None:
        base = settings if settings is not None else load_settings({})
        key = client_id or base.domainr_client_id
        super().__init__(base, key=key, default_url=base.domainr_url, **options)
        httpx_logger = logging.getLogger("httpx")
        if _KEY_FILTER not in httpx_logger.filters:
            httpx_logger.addFilter(_KEY_FILTER)

    def _request(self, domain: str) -> tuple[Target, dict[str, str]]:
        return self._with_params({"client_id": self._key, "domain": domain}), {}
