"""Every ``DOMAINGUARD_*`` config key: default, meaning, validation, and the typed settings.

The table :data:`OPTIONS` is the single source of truth: :func:`apply_defaults` sets the
defaults with ``setdefault``, :func:`load_settings` validates the app's values and turns them
into a frozen :class:`Settings`, and the documentation test checks ``docs/`` against it.

Long because it is one table: every key beside its default, docs and validation, so none drifts.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

PREFIX = "DOMAINGUARD_"

#: Large mail providers whose domains never lapse; never looked up, always safe.
DEFAULT_TRUSTED_DOMAINS: frozenset[str] = frozenset(
    {
        "aol.com",
        "fastmail.com",
        "gmail.com",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "googlemail.com",
        "hey.com",
        "hotmail.com",
        "icloud.com",
        "live.com",
        "mac.com",
        "mail.com",
        "mail.ru",
        "me.com",
        "msn.com",
        "outlook.com",
        "pm.me",
        "proton.me",
        "protonmail.com",
        "qq.com",
        "tutanota.com",
        "web.de",
        "yahoo.com",
        "yandex.ru",
        "zoho.com",
    }
)

#: Registries missing from the IANA RDAP bootstrap file, with their known RDAP base URLs.
DEFAULT_RDAP_SERVERS: Mapping[str, str] = {
    "de": "https://rdap.denic.de/",
    "ch": "https://rdap.nic.ch/",
    "li": "https://rdap.nic.ch/",
    # Not in IANA's file yet; listed by maintained RDAP clients' override tables and seen to
    # answer correctly in a published probe (a real name 200 with its ldhName, a made-up one
    # 404). RdapBackend lets IANA win once it lists them. Left out on purpose: .co and .my
    # (probed servers answered 404 for a registered name, or 200 for every name).
    "ac": "https://rdap.identitydigital.services/rdap/",
    "ag": "https://rdap.identitydigital.services/rdap/",
    "bz": "https://rdap.identitydigital.services/rdap/",
    "io": "https://rdap.identitydigital.services/rdap/",
    "lc": "https://rdap.identitydigital.services/rdap/",
    "me": "https://rdap.identitydigital.services/rdap/",
    "mn": "https://rdap.identitydigital.services/rdap/",
    "sc": "https://rdap.identitydigital.services/rdap/",
    "sh": "https://rdap.identitydigital.services/rdap/",
    "vc": "https://rdap.identitydigital.services/rdap/",
    "us": "https://rdap.nic.us/",
}


class ConfigError(ValueError):
    """A ``DOMAINGUARD_*`` key is unknown or has a value of the wrong kind."""


_RATE_RE = re.compile(
    r"^\s*(\d+)\s*(?:per|/)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE
)
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class RateLimit:
    """``count`` attempts per ``window``, parsed from text such as ``"5 per 5 minutes"``."""

    count: int
    window: timedelta

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        match = _RATE_RE.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a rate such as '5 per 5 minutes' or '20 per hour'")
        count, amount, unit = match.groups()
        seconds = int(amount or 1) * _UNIT_SECONDS[unit.lower()]
        if int(count) < 1 or seconds < 1:
            raise ValueError(f"{text!r} must allow at least one attempt in a positive window")
        return cls(int(count), timedelta(seconds=seconds))


# -- converters: each takes the raw config value and returns the typed one or raises -------


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = timedelta(seconds=value)
    else:
        raise TypeError("expected a datetime.timedelta or a number of seconds")
    if result < timedelta(0):
        raise ValueError("must not be negative")
    return result


def _positive_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("expected an integer")
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("expected an integer")
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _positive_float(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError("expected a number")
    if value <= 0:
        raise ValueError("must be greater than 0")
    return float(value)


def _non_negative_float(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError("expected a number")
    if value < 0:
        raise ValueError("must not be negative")
    return float(value)


def _share(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError("expected a number between 0 and 1, e.g. 0.5")
    if not 0 < value <= 1:
        raise ValueError("must be greater than 0 and at most 1")
    return float(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError("expected a non-empty string")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected True or False")
    return value


def _domain_set(value: Any) -> frozenset[str]:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise TypeError("expected a set or list of domain names, e.g. {'gmail.com'}")
    names = frozenset(str(item).strip().lower().rstrip(".") for item in value)
    if any(not name for name in names):
        raise ValueError("contains an empty domain name")
    return names


def _string_map(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError("expected a dict mapping a TLD to an RDAP base URL")
    result: dict[str, str] = {}
    for key, url in value.items():
        if not isinstance(key, str) or not isinstance(url, str):
            raise TypeError("keys and values must be strings")
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"{url!r} for {key!r} is not an http(s) URL")
        result[key.strip().lower().strip(".")] = url if url.endswith("/") else url + "/"
    return result


def _rate(value: Any) -> RateLimit:
    if isinstance(value, RateLimit):
        return value
    if not isinstance(value, str):
        raise TypeError("expected text such as '5 per 5 minutes'")
    return RateLimit.parse(value)


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(repr(c) for c in choices)}")
        return str(value)

    return convert


def _reset_evidence_mode(value: Any) -> str:
    # "required" was this key's strict mode before "evidence" named what it asks for.
    return _choice("evidence", "fallback", "off")("evidence" if value == "required" else value)


def _dns_resolvers(value: Any) -> tuple[tuple[str, int], ...] | None:
    """``None`` (the system's resolvers) or a list of ``"ip"``/``"ip:port"``/``"[ipv6]:port"``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError("expected None or a non-empty list such as ['127.0.0.1', '10.0.0.2:5353']")
    return tuple(_resolver_address(item) for item in value)


def _resolver_address(item: Any) -> tuple[str, int]:
    if not isinstance(item, str) or not item.strip():
        raise TypeError(f"{item!r} is not text such as '9.9.9.9' or '127.0.0.1:5353'")
    text = item.strip()
    host, port = text, "53"
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{item!r} is not '[IPv6]:port'")
            port = rest[1:]
    elif text.count(":") == 1:  # IPv4:port; a bare IPv6 address has several colons
        host, _, port = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{item!r}: {host!r} is not an IP address (names need a resolver)"
        ) from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{item!r}: {port!r} is not a port number")
    return str(address), int(port)


_DURATION_RE = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)


def _durations(value: Any) -> tuple[timedelta, ...]:
    if isinstance(value, str):
        parts: list[Any] = []
        for text in value.split(","):
            match = _DURATION_RE.match(text)
            if match is None:
                raise ValueError(f"{text.strip()!r} is not a duration such as '30 minutes'")
            parts.append(timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2].lower()]))
        value = parts
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError("expected durations such as '5 minutes, 30 minutes, 2 hours'")
    result = tuple(_duration(item) for item in value)
    if any(step <= timedelta(0) for step in result):
        raise ValueError("every lockout must last longer than 0")
    return result


def _optional_date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError("expected an ISO date such as '2024-01-01'") from None
    raise TypeError("expected a datetime.date, an ISO date string, or None")


def _key_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(k, str) for k in value):
        raise TypeError("expected a list of keys, newest first")
    return tuple(value)


def _optional_callable(value: Any) -> Callable[..., Any] | None:
    if value is not None and not callable(value):
        raise TypeError("expected a callable or None")
    return value  # type: ignore[no-any-return]


def _endpoint_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(v, str) and v for v in value
    ):
        raise TypeError("expected a list of endpoint names such as ['logout', 'auth.logout']")
    return tuple(value)


def _attr_or_callable(value: Any) -> str | Callable[[Any], str | None]:
    if callable(value):
        return value  # type: ignore[no-any-return]
    return _text(value)


def _optional_site_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("expected the site's address as text, e.g. 'https://example.com'")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("expected an absolute http(s) URL such as 'https://example.com'")
    if parts.query or parts.fragment:
        raise ValueError("expected a site address without '?query' or '#fragment'")
    return value.strip().rstrip("/")


def _optional_link_template(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("expected text such as 'https://app.example/reset?token={token}'")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("expected an absolute http(s) URL template")
    try:
        value.format(token="t")  # noqa: S106 - a placeholder, not a password
    except (KeyError, IndexError, ValueError):
        raise ValueError("the only placeholder allowed is {token}") from None
    if value.count("{token}") != 1:
        raise ValueError("expected exactly one {token} placeholder")
    return value


def _backend(value: Any) -> str:
    expected = "expected 'rdap', 'fastly', 'domainr', 'static' or a class as 'module:Class'"
    if not isinstance(value, str) or not value:
        raise TypeError(expected)
    # The same forms as `--backend`: 'package.module:Class', 'module:Class', 'module.Class'.
    if value not in {"rdap", "fastly", "domainr", "static"} and not {".", ":"} & set(value):
        raise ValueError(expected)
    return value


@dataclass(frozen=True)
class Option:
    """One config key: its settings attribute, default, converter and one-line meaning."""

    attr: str
    default: Any
    convert: Callable[[Any], Any]
    help: str


def _opt(attr: str, default: Any, convert: Callable[[Any], Any], help: str) -> Option:
    return Option(attr, default, convert, help)


OPTIONS: dict[str, Option] = {
    # -- integration -------------------------------------------------------------------
    "DOMAINGUARD_USER_EMAIL_ATTR": _opt(
        "user_email_attr",
        "email",
        _text,
        "Attribute of the host's user model holding its existing address (read by `adopt`).",
    ),
    "DOMAINGUARD_USER_CREATED_ATTR": _opt(
        "user_created_attr",
        None,
        _optional_text,
        "Mapped column of the host's user model holding when the user signed up (e.g. "
        "'created_at'): `adopt --verified` dates each adopted address's proof by it.",
    ),
    "DOMAINGUARD_URL_PREFIX": _opt(
        "url_prefix", "/domainguard", _text, "URL prefix of the extension's blueprint."
    ),
    "DOMAINGUARD_EXTERNAL_URL": _opt(
        "external_url",
        None,
        _optional_site_url,
        "The site's public address (e.g. 'https://example.com'): every mailed link is built "
        "on it, never on the request's Host header. None uses SERVER_NAME with "
        "PREFERRED_URL_SCHEME; with neither, init_app refuses outside debug and testing.",
    ),
    "DOMAINGUARD_RESET_URL": _opt(
        "reset_url",
        None,
        _optional_link_template,
        "Reset links for a front end of your own, e.g. 'https://app.example/reset?token={token}'; "
        "None links to the blueprint's reset page.",
    ),
    "DOMAINGUARD_VERIFY_URL": _opt(
        "verify_url",
        None,
        _optional_link_template,
        "Verification links for a front end of your own, e.g. "
        "'https://app.example/verify?token={token}'; None links to the blueprint's page.",
    ),
    "DOMAINGUARD_REGISTER_BLUEPRINT": _opt(
        "register_blueprint", True, _bool, "Register the extension's views and templates."
    ),
    "DOMAINGUARD_MAIL_SENDER": _opt(
        "mail_sender",
        None,
        _optional_text,
        "From address of the extension's mail; None uses MAIL_DEFAULT_SENDER.",
    ),
    "DOMAINGUARD_TRUSTED_DOMAINS": _opt(
        "trusted_domains",
        DEFAULT_TRUSTED_DOMAINS,
        _domain_set,
        "Registrable domains of large mail providers: never looked up, always safe.",
    ),
    # -- status sources ----------------------------------------------------------------
    "DOMAINGUARD_STATUS_BACKEND": _opt(
        "status_backend",
        "rdap",
        _backend,
        "Where domain status comes from: 'rdap', 'fastly', 'domainr', 'static' "
        "or your own class as 'module:Class' (as `--backend` takes it).",
    ),
    "DOMAINGUARD_STATIC_STATUS_FILE": _opt(
        "static_status_file",
        None,
        _optional_text,
        "JSON file of domain statuses for the 'static' backend (demo and tests).",
    ),
    "DOMAINGUARD_RDAP_BOOTSTRAP_URL": _opt(
        "rdap_bootstrap_url",
        "https://data.iana.org/rdap/dns.json",
        _text,
        "IANA RDAP bootstrap file (RFC 9224) mapping TLDs to RDAP servers.",
    ),
    "DOMAINGUARD_RDAP_BOOTSTRAP_TTL": _opt(
        "rdap_bootstrap_ttl",
        timedelta(days=1),
        _duration,
        "How long the cached bootstrap file is used before it is fetched again.",
    ),
    "DOMAINGUARD_RDAP_BOOTSTRAP_FILE": _opt(
        "rdap_bootstrap_file",
        None,
        _optional_text,
        "Where the bootstrap file is cached; None means the app's instance folder.",
    ),
    "DOMAINGUARD_RDAP_SERVERS": _opt(
        "rdap_servers",
        DEFAULT_RDAP_SERVERS,
        _string_map,
        "RDAP base URLs by TLD, overriding or completing the bootstrap file.",
    ),
    "DOMAINGUARD_FASTLY_API_KEY": _opt(
        "fastly_api_key", None, _optional_text, "Fastly API token for the 'fastly' backend."
    ),
    "DOMAINGUARD_FASTLY_URL": _opt(
        "fastly_url",
        "https://api.fastly.com/domain-management/v1/tools/status",
        _text,
        "Fastly domain status endpoint.",
    ),
    "DOMAINGUARD_DOMAINR_CLIENT_ID": _opt(
        "domainr_client_id", None, _optional_text, "Client id for the legacy 'domainr' backend."
    ),
    "DOMAINGUARD_DOMAINR_URL": _opt(
        "domainr_url",
        "https://api.domainr.com/v2/status",
        _text,
        "Legacy Domainr status endpoint.",
    ),
    "DOMAINGUARD_HTTP_TIMEOUT": _opt(
        "http_timeout", 10.0, _positive_float, "Seconds one status lookup may take."
    ),
    "DOMAINGUARD_MAX_RESPONSE_BYTES": _opt(
        "max_response_bytes",
        1024 * 1024,
        _positive_int,
        "Larger status answers are errors, never read whole.",
    ),
    "DOMAINGUARD_STATUS_ALLOW_PRIVATE": _opt(
        "status_allow_private",
        False,
        _bool,
        "Let URLs from the network (RDAP bootstrap entries, redirects) reach private, loopback "
        "and link-local addresses, over plain http too: tests and air-gapped mirrors only.",
    ),
    # -- DNS evidence ------------------------------------------------------------------
    "DOMAINGUARD_DNS_EVIDENCE": _opt(
        "dns_evidence",
        "fallback",
        _choice("fallback", "always", "off"),
        "Where the DNS counts: 'fallback' (domains whose TLD the status backend does not cover: "
        "DNS continuous with the address's proof is the evidence a reset needs), 'always' (also "
        "a second, independent signal beside the status source on every check), 'off'.",
    ),
    "DOMAINGUARD_DNS_RESOLVERS": _opt(
        "dns_resolvers",
        None,
        _dns_resolvers,
        "Recursive resolvers for DNS evidence, as 'ip' or 'ip:port' ('[ipv6]:port'); None uses "
        "the system's (/etc/resolv.conf).",
    ),
    "DOMAINGUARD_DNS_TIMEOUT": _opt(
        "dns_timeout",
        2.0,
        _positive_float,
        "Seconds one domain's DNS lookups (NS, MX and DS at once) may take in total.",
    ),
    # -- lifecycle policy --------------------------------------------------------------
    "DOMAINGUARD_GRACE": _opt(
        "grace",
        timedelta(days=30),
        _duration,
        "How long after a domain starts lapsing its addresses stay verified.",
    ),
    "DOMAINGUARD_WARN_WITHIN": _opt(
        "warn_within",
        timedelta(days=30),
        _duration,
        "Owners are warned when their domain expires within this window.",
    ),
    "DOMAINGUARD_CONFIRM_AFTER": _opt(
        "confirm_after",
        timedelta(hours=6),
        _duration,
        "An unsafe verdict unverifies only when seen again at least this long after the first.",
    ),
    # -- sweep -------------------------------------------------------------------------
    "DOMAINGUARD_MAX_UNVERIFY": _opt(
        "max_unverify",
        50,
        _positive_int,
        "A sweep that would unverify more addresses holds them all for review.",
    ),
    "DOMAINGUARD_RECHECK_AFTER": _opt(
        "recheck_after",
        timedelta(days=7),
        _duration,
        "Healthy domains are checked again after this long (spread with jitter).",
    ),
    "DOMAINGUARD_SWEEP_CONCURRENCY": _opt(
        "sweep_concurrency", 32, _positive_int, "Lookups in flight at once during a sweep."
    ),
    "DOMAINGUARD_SWEEP_PER_SERVER": _opt(
        "sweep_per_server", 8, _positive_int, "Lookups in flight at once against one server."
    ),
    "DOMAINGUARD_SWEEP_RATE": _opt(
        "sweep_rate",
        0.0,
        _non_negative_float,
        "Global lookups per second during a sweep; 0 means no limit beyond concurrency.",
    ),
    "DOMAINGUARD_SWEEP_LOOKUPS": _opt(
        "sweep_lookups",
        "auto",
        _choice("auto", "thread", "process"),
        "Where a sweep runs its lookups: 'thread' (beside the database work, sharing one "
        "interpreter), 'process' (a forked child on a core of its own, Linux only) or 'auto' "
        "(the process for 2000 due domains or more, with two cores and no other thread running).",
    ),
    "DOMAINGUARD_SWEEP_RETRIES": _opt(
        "sweep_retries",
        3,
        _non_negative_int,
        "Retries of a failed lookup within one sweep (exponential backoff with jitter).",
    ),
    "DOMAINGUARD_SWEEP_BATCH_SIZE": _opt(
        "sweep_batch_size",
        500,
        _positive_int,
        "Domains claimed and committed together; a crash loses at most one batch.",
    ),
    "DOMAINGUARD_SWEEP_LEASE": _opt(
        "sweep_lease",
        timedelta(minutes=15),
        _duration,
        "How long a sweeper owns the domains it claimed before others may take them.",
    ),
    "DOMAINGUARD_SWEEP_FAILING_SHARE": _opt(
        "sweep_failing_share",
        0.5,
        _share,
        "Share of a run's checked domains with failed lookups above which `sweep` exits 5 "
        "(most lookups failed: a source or network problem) instead of 1 (a few failed).",
    ),
    # -- jobs --------------------------------------------------------------------------
    "DOMAINGUARD_JOBS_WORKERS": _opt(
        "jobs_workers",
        4,
        _non_negative_int,
        "Threads per app process that run jobs from the job table (reset requests, mail); "
        "0 leaves the table to Celery or `flask domainguard jobs --drain`.",
    ),
    "DOMAINGUARD_JOBS_MAX_PENDING": _opt(
        "jobs_max_pending",
        1000,
        _positive_int,
        "Pending reset requests beyond which workers shed load: requests for unknown "
        "addresses first, then the newest (journalled as reset_shed).",
    ),
    "DOMAINGUARD_JOBS_LEASE": _opt(
        "jobs_lease",
        timedelta(minutes=2),
        _duration,
        "How long a worker owns a job it claimed; a job whose worker died runs again after it.",
    ),
    "DOMAINGUARD_JOBS_MAX_ATTEMPTS": _opt(
        "jobs_max_attempts",
        8,
        _positive_int,
        "Runs of a job (with exponential backoff between them) before it is marked failed.",
    ),
    "DOMAINGUARD_JOBS_POLL": _opt(
        "jobs_poll",
        5.0,
        _positive_float,
        "Seconds an idle in-process worker waits before looking for due jobs again "
        "(retries, and jobs that other processes wrote).",
    ),
    "DOMAINGUARD_JOBS_KEEP": _opt(
        "jobs_keep",
        timedelta(days=7),
        _duration,
        "How long finished jobs (done, failed, shed) stay in the table for `status` and support.",
    ),
    # -- verification and reset --------------------------------------------------------
    "DOMAINGUARD_VERIFY_WITHIN": _opt(
        "verify_within", timedelta(hours=24), _duration, "Lifetime of a verification link."
    ),
    "DOMAINGUARD_VERIFY_RESEND_LIMIT": _opt(
        "verify_resend_limit", "3 per hour", _rate, "Verification mails per address."
    ),
    "DOMAINGUARD_RESET_WITHIN": _opt(
        "reset_within", timedelta(hours=1), _duration, "Lifetime of a password-reset link."
    ),
    "DOMAINGUARD_UNDO_WITHIN": _opt(
        "undo_within",
        timedelta(days=7),
        _duration,
        "Lifetime of the \"this wasn't me\" link mailed to a user's other safe addresses after "
        "a password change, and how long after a reset a 2FA enrolment is reported with one.",
    ),
    "DOMAINGUARD_RESET_LIVE_CHECK": _opt(
        "reset_live_check",
        "evidence",
        _reset_evidence_mode,
        "What a reset needs: 'evidence' (a successful lookup now, or one younger than "
        "DOMAINGUARD_RESET_LIVE_CHECK_AFTER that judged the domain ok; a failed lookup refuses), "
        "'fallback' (weaker: a failed lookup falls back to the stored state, even none), 'off' "
        "(never looks up: stored state only). 'required' is the old name of 'evidence'.",
    ),
    "DOMAINGUARD_RESET_LIVE_CHECK_AFTER": _opt(
        "reset_live_check_after",
        timedelta(days=1),
        _duration,
        "How old a check that judged a domain ok may be and still count as evidence for a "
        "reset; anything older, or any other verdict, is looked up live.",
    ),
    "DOMAINGUARD_RESET_LIVE_TIMEOUT": _opt(
        "reset_live_timeout", 3.0, _positive_float, "Seconds a live lookup at reset may take."
    ),
    "DOMAINGUARD_RESET_LIMIT_PER_ACCOUNT": _opt(
        "reset_limit_per_account",
        "3 per hour",
        _rate,
        "Reset mails one client may cause to one address of an account. Only mails sent count, "
        "so requests from other clients, or refused ones, never use up the owner's own.",
    ),
    "DOMAINGUARD_RESET_LIMIT_PER_ADDRESS": _opt(
        "reset_limit_per_address",
        "10 per hour",
        _rate,
        "Reset mails to one address from all clients together (a bound on mail bombing).",
    ),
    "DOMAINGUARD_RESET_LIMIT_PER_CLIENT": _opt(
        "reset_limit_per_client", "20 per hour", _rate, "Reset requests per client address."
    ),
    "DOMAINGUARD_RESET_NOTICE_LIMIT": _opt(
        "reset_notice_limit",
        "1 per day",
        _rate,
        "Notices per account that a reset was refused for one of its addresses.",
    ),
    "DOMAINGUARD_RESET_PROCESSING": _opt(
        "reset_processing",
        "background",
        _choice("background", "inline"),
        "Where reset requests are decided and mailed: 'background' (a row in the job table, "
        "run by a worker, so every answer takes the same time) or 'inline' (in the request).",
    ),
    "DOMAINGUARD_MAIL_GUARD": _opt(
        "mail_guard",
        "all",
        _choice("all", "reset", "off"),
        "Flask-Mail safety net: 'all' drops any mail to addresses on unsafe domains and reset "
        "mail to unsafe addresses, 'reset' only the latter, 'off' nothing (and the Flask-Mail "
        "hook is not installed for it).",
    ),
    # -- two-factor authentication -----------------------------------------------------
    "DOMAINGUARD_TOTP_ISSUER": _opt(
        "totp_issuer",
        None,
        _optional_text,
        "Issuer shown in authenticator apps; None uses the app's name.",
    ),
    "DOMAINGUARD_TOTP_KEYS": _opt(
        "totp_keys",
        (),
        _key_list,
        "Fernet keys encrypting TOTP secrets, newest first; empty derives one from SECRET_KEY.",
    ),
    "DOMAINGUARD_2FA_REQUIRED_SINCE": _opt(
        "twofactor_required_since",
        date(2024, 1, 1),
        _optional_date,
        "Users who logged in on or after this date must enrol in 2FA; None disables the rule.",
    ),
    "DOMAINGUARD_2FA_GRACE_DAYS": _opt(
        "twofactor_grace_days",
        0,
        _non_negative_int,
        "Days a user who must enrol may keep going with a banner before enrolment is forced.",
    ),
    "DOMAINGUARD_2FA_EXEMPT": _opt(
        "twofactor_exempt",
        None,
        _optional_callable,
        "Callable(user) -> bool exempting users (service accounts) from the 2FA requirement.",
    ),
    "DOMAINGUARD_2FA_LIMIT": _opt(
        "twofactor_limit",
        "5 per 5 minutes",
        _rate,
        "2FA attempts per user (failed ones per client address) within a sliding window; "
        "reaching it starts a lockout.",
    ),
    "DOMAINGUARD_2FA_LOCKOUTS": _opt(
        "twofactor_lockouts",
        "5 minutes, 30 minutes, 2 hours",
        _durations,
        "How long successive 2FA lockouts of a user or client last; the last one repeats. "
        "The owner is told at the first one.",
    ),
    "DOMAINGUARD_2FA_LOCKOUT_MEMORY": _opt(
        "twofactor_lockout_memory",
        timedelta(days=1),
        _duration,
        "A lockout that starts within this time of the end of the last one takes the next "
        "duration of DOMAINGUARD_2FA_LOCKOUTS; later ones start from the first again.",
    ),
    "DOMAINGUARD_TRUST_DEVICE_DAYS": _opt(
        "trust_device_days",
        30,
        _non_negative_int,
        "Lifetime of the 'trust this device' cookie; 0 disables it.",
    ),
    "DOMAINGUARD_RECOVERY_CODES": _opt(
        "recovery_codes", 10, _positive_int, "Recovery codes issued at enrolment."
    ),
    "DOMAINGUARD_2FA_ALLOWED_ENDPOINTS": _opt(
        "twofactor_allowed_endpoints",
        ("logout",),
        _endpoint_list,
        "Endpoints a session waiting for its second factor may reach "
        "('logout' also matches 'auth.logout').",
    ),
    "DOMAINGUARD_2FA_FRESH_WITHIN": _opt(
        "twofactor_fresh_within",
        timedelta(minutes=10),
        _duration,
        "How recent password + 2FA must be for security changes (require_fresh_2fa).",
    ),
    "DOMAINGUARD_PASSWORD_HASH_ATTR": _opt(
        "password_hash_attr",
        "password_hash",
        _attr_or_callable,
        "User attribute (or callable(user) -> str) holding the password hash; "
        "binds trusted devices.",
    ),
}


@dataclass(frozen=True)
class Settings:
    """Validated, typed view of one app's ``DOMAINGUARD_*`` config (see :data:`OPTIONS`)."""

    user_email_attr: str
    user_created_attr: str | None
    url_prefix: str
    external_url: str | None
    reset_url: str | None
    verify_url: str | None
    register_blueprint: bool
    mail_sender: str | None
    trusted_domains: frozenset[str]
    status_backend: str
    static_status_file: str | None
    rdap_bootstrap_url: str
    rdap_bootstrap_ttl: timedelta
    rdap_bootstrap_file: str | None
    rdap_servers: Mapping[str, str]
    fastly_api_key: str | None
    fastly_url: str
    domainr_client_id: str | None
    domainr_url: str
    http_timeout: float
    max_response_bytes: int
    status_allow_private: bool
    dns_evidence: str
    dns_resolvers: tuple[tuple[str, int], ...] | None
    dns_timeout: float
    grace: timedelta
    warn_within: timedelta
    confirm_after: timedelta
    max_unverify: int
    recheck_after: timedelta
    sweep_concurrency: int
    sweep_lookups: str
    sweep_per_server: int
    sweep_rate: float
    sweep_retries: int
    sweep_batch_size: int
    sweep_lease: timedelta
    sweep_failing_share: float
    jobs_workers: int
    jobs_max_pending: int
    jobs_lease: timedelta
    jobs_max_attempts: int
    jobs_poll: float
    jobs_keep: timedelta
    verify_within: timedelta
    verify_resend_limit: RateLimit
    reset_within: timedelta
    undo_within: timedelta
    reset_live_check: str
    reset_live_check_after: timedelta
    reset_live_timeout: float
    reset_limit_per_account: RateLimit
    reset_limit_per_address: RateLimit
    reset_limit_per_client: RateLimit
    reset_notice_limit: RateLimit
    reset_processing: str
    mail_guard: str
    totp_issuer: str | None
    totp_keys: tuple[str, ...]
    twofactor_required_since: date | None
    twofactor_grace_days: int
    twofactor_exempt: Callable[..., Any] | None
    twofactor_limit: RateLimit
    twofactor_lockouts: tuple[timedelta, ...]
    twofactor_lockout_memory: timedelta
    trust_device_days: int
    recovery_codes: int
    twofactor_allowed_endpoints: tuple[str, ...]
    twofactor_fresh_within: timedelta
    password_hash_attr: str | Callable[[Any], str | None]


def apply_defaults(config: dict[str, Any]) -> None:
    """Set every key's default with ``setdefault``, as Flask extensions do."""
    for key, option in OPTIONS.items():
        config.setdefault(key, option.default)


def load_settings(config: Mapping[str, Any]) -> Settings:
    """Validate the ``DOMAINGUARD_*`` keys of ``config`` and return typed settings.

    :raises ConfigError: naming the key and how to fix it.
    """
    for key in config:
        if key.startswith(PREFIX) and key not in OPTIONS:
            close = difflib.get_close_matches(key, OPTIONS, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ConfigError(
                f"Unknown config key {key}.{hint} "
                "The known keys are listed in docs/configuration.md."
            )
    values: dict[str, Any] = {}
    for key, option in OPTIONS.items():
        raw = config.get(key, option.default)
        try:
            values[option.attr] = option.convert(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{key} = {raw!r} is invalid: {exc}. The default is {option.default!r}."
            ) from None
    return Settings(**values)
