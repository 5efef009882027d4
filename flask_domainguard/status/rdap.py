"""RDAP status backend (RFC 9082 queries, RFC 9083 answers, RFC 9224 bootstrap).

How answers are read, in the order the safety of an account depends on them:

- Only an HTTP 404 from the registry's own server makes ``registered=False``. A 404 whose
  body is not empty and not a JSON object (an HTML error page: a wrong or moved server URL)
  is an error, and so is a 404 given by another host than the bootstrap's after a redirect
  (a registry may hand queries to a registrar, whose "not found" says nothing about the
  registry). A document is never read as "not registered", whatever it says.
- A readable ``domain`` object for the name asked is ``registered=True`` with its statuses
  and dates; judging them is :func:`flask_domainguard.verdict.judge`'s job.
- Everything else (429, 5xx, timeouts, TLS and connection errors, oversized or non-JSON
  bodies, another object class, another domain) is ``registered=None`` with ``error`` set.
- A TLD with no known RDAP server is ``registered=None``, never "released".
- Server URLs from the bootstrap file (and redirects to other origins) come from the
  network: they must be https to a public address (:mod:`flask_domainguard.netguard`), or
  the lookup fails. Configured servers (``DOMAINGUARD_RDAP_SERVERS``, the bootstrap URL) are
  trusted as given.

``links[]`` with ``rel: related`` (the registrar's own RDAP server) are not followed: the
registry's answer carries the lifecycle statuses and dates the verdict needs, and a second
server per lookup would double the load and the ways to fail.

Long because RDAP's bootstrap, fetch and parsing rules are read together when judging whether a 404
means released.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from flask import current_app, has_app_context

from ..config import DEFAULT_RDAP_SERVERS, Settings, load_settings
from ..timeutil import utcnow
from .base import LoopClient, not_a_domain, parse_datetime, to_alabel, user_agent
from .http import FetchResult, fetch_json
from .observation import Observation
from .urls import Endpoint, Target

__all__ = [
    "BOOTSTRAP_CACHE_NAME",
    "RdapBackend",
    "normalize_status",
    "parse_bootstrap",
    "parse_rdap_domain",
]

logger = logging.getLogger(__name__)

SOURCE = "rdap"

#: File name of the bootstrap cache in the Flask app's instance folder.
BOOTSTRAP_CACHE_NAME = "domainguard-rdap-bootstrap.json"

#: The IANA file is about 70 kB; this leaves room to grow without trusting it blindly.
BOOTSTRAP_MAX_BYTES = 8 * 1024 * 1024

#: After a failed bootstrap refresh, wait this long (at most the TTL) before trying again,
#: so an IANA outage does not add one failing request to every lookup.
BOOTSTRAP_RETRY = timedelta(minutes=15)

RDAP_ACCEPT = "application/rdap+json, application/json;q=0.9"

#: RFC 9083 event actions that mean the name was registered again (counted as registrations).
_REREGISTRATIONS = ("reregistration", "reinstantiation")  # as compared by _event_key

# EPP spells some statuses differently from RDAP (RFC 8056, section 2).
_STATUS_ALIASES = {"ok": "active"}


# -- parsing -----------------------------------------------------------------------------


def normalize_status(value: str) -> str:
    """Return an RDAP or EPP status in RFC 8056 spelling: lower case, words split by spaces.

    ``"clientHold"``, ``"client_hold"`` and ``"Client Hold"`` all become ``"client hold"``;
    EPP's ``"ok"`` becomes ``"active"``.
    """
    words: list[str] = []
    current = ""
    for char in value.strip():
        if char in " \t\r\n_-":
            words.append(current)
            current = ""
        elif char.isupper() and current and not current[-1].isupper():
            words.append(current)  # camelCase boundary
            current = char
        else:
            current += char
    words.append(current)
    text = " ".join(word.lower() for word in words if word)
    return _STATUS_ALIASES.get(text, text)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _doc_domain(doc: Mapping[str, Any]) -> str:
    """Best-effort name of the domain a document is about, for error observations."""
    for key in ("ldhName", "unicodeName"):
        value = doc.get(key)
        if isinstance(value, str):
            name = to_alabel(value)
            if name is not None:
                return name
    return ""


def parse_rdap_domain(doc: Mapping[str, Any]) -> Observation:
    """Read an RDAP ``domain`` object (RFC 9083) into an :class:`Observation`.

    Never raises: a document that is not a readable domain object gives ``registered=None``
    with ``error`` set. A readable one gives ``registered=True`` (only an HTTP 404 means "not
    registered", so a document alone never gives ``False``).

    - ``domain``: ``ldhName`` lower-cased, or ``unicodeName`` converted to its A-label.
    - ``statuses``: ``status[]`` in RFC 8056 spelling (:func:`normalize_status`).
    - ``registered_at``: the latest of the events that start a registration in RFC 9083
      (section 10.2.3): ``registration`` (initially registered), ``reregistration``
      (registered again after the initial registration) and ``reinstantiation``
      (registered again after removal). A domain registered in 2001 and re-registered ten
      minutes ago was registered ten minutes ago, for whoever proved an address before.
    - ``transferred_at``: the latest ``transfer``; ``expires_at`` the latest ``expiration``,
      or the latest ``registrar expiration`` when no ``expiration`` has a usable date.
    - Ignored: ``last changed`` (any update, e.g. name servers; not a change of holder),
      ``deletion`` (registries date the delete command of a name that then sits in
      redemption, which ``status[]`` says; a name registered again after a deletion carries
      its own registration event), ``locked``, ``unlocked``, ``last update of RDAP
      database``.
    - Dates that are missing, unparseable or outside years 1985..9999 (registry test data has
      294247) are ``None`` (:func:`~flask_domainguard.status.base.parse_datetime`), except on
      a ``reregistration`` or ``reinstantiation``: such an event says the name was
      registered anew, and without its date nobody can tell whether that was before or
      after an address was proven, so the document is an error.
    - ``status`` or ``events`` of the wrong shape make the whole document an error rather
      than a half-read one, since a dropped ``pending delete`` would read as healthy.
    """
    try:
        return _parse_rdap_domain(doc)
    except Exception as exc:  # the contract is "never raises"; the checks above should hold
        logger.warning("unexpected failure reading an RDAP document", exc_info=True)
        return Observation.failed(
            "", f"unreadable RDAP document ({type(exc).__name__})", source=SOURCE
        )


def _parse_rdap_domain(doc: Mapping[str, Any]) -> Observation:
    if not isinstance(doc, Mapping):
        return Observation.failed("", "RDAP answer is not a JSON object", source=SOURCE)
    name = _doc_domain(doc)

    def bad(problem: str) -> Observation:
        return Observation.failed(name, f"malformed RDAP answer: {problem}", source=SOURCE)

    object_class = doc.get("objectClassName")
    if object_class != "domain":
        if "errorCode" in doc:
            title = doc.get("title")
            detail = f": {_short(title)}" if isinstance(title, str) else ""
            return Observation.failed(
                name, f"RDAP error {_short(doc.get('errorCode'))}{detail}", source=SOURCE
            )
        return bad(f"objectClassName is {_short(object_class)}, not 'domain'")

    ldh = doc.get("ldhName")
    unicode_name = doc.get("unicodeName")
    if ldh is not None and not isinstance(ldh, str):
        return bad("ldhName is not a string")
    if unicode_name is not None and not isinstance(unicode_name, str):
        return bad("unicodeName is not a string")
    raw_name = ldh or unicode_name
    if not raw_name:
        return bad("no ldhName or unicodeName")
    domain = to_alabel(raw_name)
    if domain is None:
        return bad(f"{_short(raw_name)} is not a domain name")

    raw_status = doc.get("status")
    if raw_status is None:
        raw_status = []
    if not isinstance(raw_status, list) or not all(isinstance(s, str) for s in raw_status):
        return bad("status is not a list of strings")
    statuses = frozenset(s for s in (normalize_status(s) for s in raw_status) if s)

    raw_events = doc.get("events")
    if raw_events is None:
        raw_events = []
    if not isinstance(raw_events, list):
        return bad("events is not a list")
    dates: dict[str, list[datetime]] = {}
    for event in raw_events:
        if not isinstance(event, Mapping):
            return bad("an event is not an object")
        action = event.get("eventAction")
        if not isinstance(action, str):
            return bad("an event has no eventAction string")
        kind = _event_key(action)
        when = parse_datetime(event.get("eventDate"))
        if when is not None:
            dates.setdefault(kind, []).append(when)
        elif kind in _REREGISTRATIONS:
            return bad(f"a {kind} event has no usable eventDate")

    def latest(*actions: str) -> datetime | None:
        found = [when for action in actions for when in dates.get(action, ())]
        return max(found) if found else None

    return Observation(
        domain=domain,
        registered=True,
        statuses=statuses,
        expires_at=latest("expiration") or latest("registrarexpiration"),
        registered_at=latest("registration", *_REREGISTRATIONS),
        transferred_at=latest("transfer"),
        source=SOURCE,
    )


def _event_key(action: str) -> str:
    """An event action compared without case, spaces, ``_`` or ``-`` (``reRegistration``,
    ``registrar_expiration``), as registries spell them in more ways than RFC 9083 does."""
    return "".join(char for char in action.lower() if char not in " \t\r\n_-")


def parse_bootstrap(doc: Any) -> dict[str, tuple[str, ...]]:
    """Read an RFC 9224 bootstrap file into ``{suffix: (base URL, ...)}``, https URLs first.

    Suffixes are lower-case A-labels without dots at the ends; base URLs end with ``/``.
    Malformed service entries are skipped; when the first file lists a suffix twice, the first
    entry wins.

    :raises ValueError: when ``doc`` is not a bootstrap file or lists no usable service.
    """
    services = doc.get("services") if isinstance(doc, Mapping) else None
    if not isinstance(services, list):
        raise ValueError("not an RDAP bootstrap file: no 'services' list")
    result: dict[str, tuple[str, ...]] = {}
    for entry in services:
        if not (
            isinstance(entry, list)
            and len(entry) >= 2
            and isinstance(entry[0], list)
            and isinstance(entry[1], list)
        ):
            continue
        urls = [
            url if url.endswith("/") else url + "/"
            for url in entry[1]
            if isinstance(url, str) and url.lower().startswith(("https://", "http://"))
        ]
        # RFC 9224 section 4: prefer https; plain http only when a registry offers nothing else.
        urls.sort(key=lambda url: not url.lower().startswith("https://"))
        if not urls:
            continue
        for suffix in entry[0]:
            if not isinstance(suffix, str):
                continue
            key = _suffix_key(suffix)
            if key:
                result.setdefault(key, tuple(urls))
    if not result:
        raise ValueError("RDAP bootstrap file lists no usable service")
    return result


def _suffix_key(suffix: str) -> str | None:
    text = suffix.strip().strip(".")
    if not text:
        return None
    if text.isascii():
        return text.lower()
    # A bootstrap should list A-labels; convert a U-label through a dummy left label.
    converted = to_alabel("x." + text)
    return converted[2:] if converted else None


def _netloc(url: str) -> str:
    return urlsplit(url).netloc.lower()


# -- the bootstrap cache -------------------------------------------------------------------


@dataclass(frozen=True)
class _Bootstrap:
    services: dict[str, tuple[str, ...]]
    fetched_at: datetime


class RdapBackend:
    """Look domains up in their registry's RDAP server.

    :param settings: the app's settings; the keyword arguments below override single values
        (without settings, the package defaults are used).
    :param client: HTTP client for lookups that pass none; without one the backend creates its
        own on first use (tied to that event loop; :meth:`aclose` closes it).
    :param bootstrap_file: where the bootstrap is cached as JSON; by default
        ``<instance_path>/domainguard-rdap-bootstrap.json``, and with neither given, the
        current Flask app's instance folder, else memory only. An operator may also place a
        plain IANA ``dns.json`` there; its age is then the file's modification time.
    :param servers: base URLs by suffix (``DOMAINGUARD_RDAP_SERVERS``). Entries equal to the
        built-in :data:`~flask_domainguard.config.DEFAULT_RDAP_SERVERS` only complete the
        bootstrap (IANA wins once it lists the TLD); any other entry overrides it.
    :param allow_private: let bootstrap entries and redirects reach private addresses
        (``DOMAINGUARD_STATUS_ALLOW_PRIVATE``).

    The server for a domain is the longest matching suffix among all sources; at equal length
    a configured override beats the bootstrap, which beats a built-in default.

    ``timeout`` bounds one lookup, body included. Fetching the bootstrap (first use, then once
    per TTL) has its own limit of ``max(timeout, 10)`` seconds; while a stale copy exists,
    other lookups use it instead of waiting for the refresh.
    """

    name = SOURCE

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        bootstrap_url: str | None = None,
        bootstrap_ttl: timedelta | None = None,
        bootstrap_file: str | os.PathLike[str] | None = None,
        instance_path: str | os.PathLike[str] | None = None,
        servers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        max_response_bytes: int | None = None,
        allow_private: bool | None = None,
    ) -> None:
        base = settings if settings is not None else load_settings({})
        self.allow_private = (
            allow_private if allow_private is not None else base.status_allow_private
        )
        self.bootstrap_url = bootstrap_url or base.rdap_bootstrap_url
        self.bootstrap_ttl = bootstrap_ttl if bootstrap_ttl is not None else base.rdap_bootstrap_ttl
        self.timeout = timeout if timeout is not None else base.http_timeout
        self.max_response_bytes = max_response_bytes or base.max_response_bytes
        self._bootstrap_file = (
            bootstrap_file if bootstrap_file is not None else base.rdap_bootstrap_file
        )
        self._instance_path = instance_path
        self._cache_path: Path | None = None
        self._cache_path_resolved = False

        self._overrides: dict[str, str] = {}
        self._defaults: dict[str, str] = {}
        for suffix, url in (servers if servers is not None else base.rdap_servers).items():
            key = _suffix_key(suffix)
            if not key:
                continue
            url = url if url.endswith("/") else url + "/"
            if DEFAULT_RDAP_SERVERS.get(key) == url:
                self._defaults[key] = url
            else:
                self._overrides[key] = url

        self._clients = LoopClient(client)
        self._headers = {"Accept": RDAP_ACCEPT, "User-Agent": user_agent()}
        #: Base URLs parsed once (a sweep looks up thousands of domains per server).
        self._endpoints: dict[str, Endpoint | None] = {}
        self._bootstrap: _Bootstrap | None = None
        self._file_tried = False
        self._retry_at: datetime | None = None
        self._bootstrap_error: str | None = None
        # One lock per event loop: an asyncio.Lock may only be used from the loop it bound to.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    # -- public ----------------------------------------------------------------------------

    async def observe(
        self,
        domain: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float | None = None,
    ) -> Observation:
        """Look ``domain`` up; see the module docstring for how answers are read."""
        asked = to_alabel(domain) if isinstance(domain, str) else None
        if asked is None:
            return not_a_domain(domain, source=SOURCE)
        try:
            return await self._observe(asked, self._clients.get(client), timeout or self.timeout)
        except Exception:
            # A bug here must cost one lookup, not the sweep that runs thousands.
            logger.exception("RDAP lookup of %s failed unexpectedly", asked)
            return Observation.failed(asked, "internal error in the RDAP backend", source=SOURCE)

    def server_key(self, domain: str) -> str:
        """The RDAP server's ``host[:port]`` for ``domain``, or ``rdap:<tld>`` before the
        bootstrap is known (call :meth:`ensure_bootstrap` first for exact keys)."""
        name = to_alabel(domain) or domain.strip().lower()
        if self._bootstrap is None:
            self._load_cache_file()
        found = self._base(name)
        if found is not None:
            return _netloc(found[0])
        return f"rdap:{name.rsplit('.', 1)[-1]}"

    async def ensure_bootstrap(self, *, client: httpx.AsyncClient | None = None) -> bool:
        """Load (or refresh, when older than the TTL) the bootstrap; ``True`` when one is
        available, maybe stale."""
        await self._services(self._clients.get(client))
        return self._bootstrap is not None

    def covers(self, domain: str) -> bool | None:
        """Whether a status server is known for ``domain``'s TLD (bootstrap and
        ``DOMAINGUARD_RDAP_SERVERS``); ``None`` while no bootstrap could be loaded and no
        configured server matches (unknown, so no other evidence stands in for it)."""
        name = to_alabel(domain)
        if name is None:
            return None
        if self._bootstrap is None:
            self._load_cache_file()
        if self._base(name) is not None:
            return True
        return False if self._bootstrap is not None else None

    def base_url(self, domain: str) -> str | None:
        """The RDAP base URL for ``domain`` from what is known now (no fetch)."""
        name = to_alabel(domain)
        found = self._base(name) if name else None
        return found[0] if found else None

    async def aclose(self) -> None:
        """Close the HTTP client the backend created itself (never an injected one)."""
        await self._clients.aclose()

    # -- lookup ----------------------------------------------------------------------------

    async def _observe(self, asked: str, http: httpx.AsyncClient, timeout: float) -> Observation:
        await self._services(http)
        found = self._base(asked)
        if found is None:
            tld = asked.rsplit(".", 1)[-1]
            if self._bootstrap is None and self._bootstrap_error:
                problem = f"RDAP bootstrap unavailable ({self._bootstrap_error})"
                return Observation.failed(asked, problem, source=SOURCE)
            return Observation.failed(asked, f"no RDAP server known for .{tld}", source=SOURCE)
        base, configured = found
        result = await fetch_json(
            http,
            self._domain_url(base, asked),
            headers=self._headers,
            max_bytes=self.max_response_bytes,
            timeout=timeout,
            trusted=configured,
            allow_private=self.allow_private,
        )
        obs = interpret_answer(asked, base, result)
        logger.debug(
            "RDAP %s via %s: registered=%s error=%s", asked, result.host, obs.registered, obs.error
        )
        return obs

    def _domain_url(self, base: str, asked: str) -> Target | str:
        """``{base}domain/{asked}``, from the base parsed once; as text (parsed by fetch_json)
        when the base is no URL a path can be added to."""
        if base not in self._endpoints:
            if len(self._endpoints) >= _MAX_ENDPOINTS:  # bases come from the network
                self._endpoints.clear()
            try:
                endpoint: Endpoint | None = Endpoint(base)
            except (httpx.InvalidURL, ValueError):  # parsed as text by fetch_json, as before
                endpoint = None
            self._endpoints[base] = endpoint if endpoint and endpoint.takes_path else None
        endpoint = self._endpoints[base]
        if endpoint is None:
            return f"{base}domain/{asked}"
        return endpoint.with_path("domain", asked)

    def _base(self, domain: str) -> tuple[str, bool] | None:
        """The base URL for ``domain`` and whether it is configured (trusted) rather than
        read from the bootstrap file (from the network)."""
        labels = domain.split(".")
        services = self._bootstrap.services if self._bootstrap else {}
        # Longest suffix first; the domain itself is never its own suffix.
        for start in range(1, len(labels)):
            suffix = ".".join(labels[start:])
            if suffix in self._overrides:
                return self._overrides[suffix], True
            if suffix in services:
                return services[suffix][0], False
            if suffix in self._defaults:
                return self._defaults[suffix], True
        return None

    # -- bootstrap -------------------------------------------------------------------------

    def _resolve_cache_path(self) -> Path | None:
        if self._cache_path_resolved:
            return self._cache_path
        path: Path | None = None
        if self._bootstrap_file is not None:
            path = Path(self._bootstrap_file)
        elif self._instance_path is not None:
            path = Path(self._instance_path) / BOOTSTRAP_CACHE_NAME
        else:
            if has_app_context():
                path = Path(current_app.instance_path) / BOOTSTRAP_CACHE_NAME
            if path is None:
                # Not memoised: a later lookup inside an app context may find the folder.
                return None
        self._cache_path = path
        self._cache_path_resolved = True
        return path

    def _load_cache_file(self) -> None:
        """Read the cache file once, so a restart does not refetch a fresh bootstrap."""
        if self._file_tried:
            return
        path = self._resolve_cache_path()
        if path is None:
            return
        self._file_tried = True
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError, RecursionError) as exc:
            logger.warning("ignoring unreadable RDAP bootstrap cache %s: %s", path, exc)
            return
        try:
            if isinstance(raw, Mapping) and "bootstrap" in raw:
                fetched_at = parse_datetime(raw.get("fetched_at"))
                if fetched_at is None:
                    raise ValueError("no valid 'fetched_at'")
                services = parse_bootstrap(raw["bootstrap"])
            else:  # a plain IANA dns.json put there by an operator
                services = parse_bootstrap(raw)
                fetched_at = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unusable RDAP bootstrap cache %s: %s", path, exc)
            return
        self._bootstrap = _Bootstrap(services, fetched_at)

    def _fresh(self, now: datetime) -> bool:
        return self._bootstrap is not None and now - self._bootstrap.fetched_at < self.bootstrap_ttl

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    async def _services(self, http: httpx.AsyncClient) -> None:
        """Make sure a bootstrap is loaded and refreshed per the TTL (stale beats none)."""
        if self._bootstrap is None:
            self._load_cache_file()
        if self._fresh(utcnow()):
            return
        lock = self._lock()
        if lock.locked() and self._bootstrap is not None:
            return  # another task is refreshing; the stale copy serves meanwhile
        async with lock:
            now = utcnow()
            if self._fresh(now) or (self._retry_at is not None and now < self._retry_at):
                return  # refreshed by another task meanwhile, or a recent refresh failed
            error = await self._refresh(http)
            if error is None:
                self._retry_at = None
                self._bootstrap_error = None
                return
            self._bootstrap_error = error
            self._retry_at = now + min(BOOTSTRAP_RETRY, self.bootstrap_ttl)
            if self._bootstrap is not None:
                logger.warning(
                    "RDAP bootstrap refresh from %s failed (%s); using the copy fetched %s",
                    self.bootstrap_url,
                    error,
                    self._bootstrap.fetched_at.isoformat(),
                )
            else:
                logger.warning("RDAP bootstrap from %s unavailable: %s", self.bootstrap_url, error)

    async def _refresh(self, http: httpx.AsyncClient) -> str | None:
        """Fetch the bootstrap; return why it failed, or ``None`` on success."""
        result = await fetch_json(
            http,
            self.bootstrap_url,
            headers={"Accept": "application/json", "User-Agent": user_agent()},
            max_bytes=BOOTSTRAP_MAX_BYTES,
            timeout=max(self.timeout, 10.0),
            allow_private=self.allow_private,  # for redirects: the URL itself is configured
        )
        if result.error:
            return result.error
        if result.status != 200:
            return f"HTTP {result.status} from {result.host}"
        if not result.is_json:
            return f"answer of {result.host} is {result.body_error or 'empty'}"
        try:
            services = parse_bootstrap(result.data)
        except ValueError as exc:
            return str(exc)
        fetched_at = utcnow()
        self._bootstrap = _Bootstrap(services, fetched_at)
        self._write_cache(result.data, fetched_at)
        logger.info("RDAP bootstrap loaded from %s: %d suffixes", self.bootstrap_url, len(services))
        return None

    def _write_cache(self, doc: Any, fetched_at: datetime) -> None:
        path = self._resolve_cache_path()
        if path is None:
            return
        payload = {
            "fetched_at": fetched_at.isoformat(),
            "url": self.bootstrap_url,
            "bootstrap": doc,
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a reader never sees half a file.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(payload, handle)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            logger.warning("could not write the RDAP bootstrap cache %s: %s", path, exc)


# -- reading an answer ---------------------------------------------------------------------


#: Parsed base URLs kept by one backend: more than the servers of any bootstrap file.
_MAX_ENDPOINTS = 4096


def interpret_answer(asked: str, base: str, result: FetchResult) -> Observation:
    """Turn one HTTP exchange for ``asked`` into an observation (the rules of this module)."""
    host = result.host

    def failed(error: str) -> Observation:
        return Observation.failed(asked, error, source=SOURCE, retry_after=result.retry_after)

    if result.error:
        return failed(f"RDAP lookup failed: {result.error}")
    status = result.status
    if status == 429:
        return failed(f"rate limited by {host} (HTTP 429)")
    if status == 404:
        base_host = _netloc(base)
        if host != base_host:
            return failed(
                f"HTTP 404 from {host} after a redirect from {base_host}: "
                "not the registry's own answer"
            )
        if result.empty or (result.is_json and isinstance(result.data, Mapping)):
            return Observation(domain=asked, registered=False, source=SOURCE)
        what = result.body_error or "JSON but not an RDAP error object"
        return failed(f"HTTP 404 from {host} with a body that is {what}; is the server URL right?")
    if status != 200:
        return failed(f"HTTP {status} from {host}")
    if not result.is_json:
        return failed(f"answer of {host} is {result.body_error or 'empty'}")
    if not isinstance(result.data, Mapping):
        return failed(f"answer of {host} is JSON but not an object")
    obs = parse_rdap_domain(result.data)
    if obs.error is not None:
        return replace(obs, domain=asked)
    if obs.domain != asked:
        return failed(f"answer of {host} is about {obs.domain}, not {asked}")
    return obs
