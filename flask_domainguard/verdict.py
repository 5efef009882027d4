"""The lifecycle policy: what an observation means for an address. Pure: no I/O, no clock.

:func:`judge` turns an :class:`~flask_domainguard.status.observation.Observation` into a
:class:`Verdict` by the table in section 4 of the design guide, checked in this order:

1. lookup failed, ``error`` set, an ``unknown`` flag, ``registered=None``: ``UNKNOWN``;
2. not registered: ``RELEASED``;
3. created after the address was verified, transferred after a lapse was seen (and after
   the address was verified), or remembered to have changed hands after a lapse since the
   address was verified (``changed_hands_at``): ``REREGISTERED``;
4. ``pending delete`` without ``redemption period``, or Domainr ``deleting``: ``EXPIRED``;
5. lapsing: ``IN_GRACE`` until lapse start + grace, ``EXPIRED`` from then on;
6. expiring within the warn window: ``EXPIRING_SOON``;
7. anything else registered: ``OK``.

Time boundaries: a moment equal to a limit belongs to the later stage. An expiration date
equal to ``now`` has passed, and a grace period that ends exactly at ``now`` has ended.

Long because the lifecycle policy is one pure function and its helpers: split, its order of rules
would be harder to read and to review.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .status.observation import Observation


class VerdictKind(str, enum.Enum):
    """Where a registrable domain stands in its lifecycle."""

    OK = "ok"
    EXPIRING_SOON = "expiring_soon"
    IN_GRACE = "in_grace"
    EXPIRED = "expired"
    RELEASED = "released"
    REREGISTERED = "reregistered"
    DNS_CHANGED = "dns_changed"
    """The domain's name servers and mail servers all differ from those recorded when the
    address was proved (:mod:`flask_domainguard.dnsverdict`): it may have changed hands."""
    UNKNOWN = "unknown"


#: Kinds that make an address unfit to receive a password reset.
UNSAFE_KINDS = frozenset(
    {VerdictKind.EXPIRED, VerdictKind.RELEASED, VerdictKind.REREGISTERED, VerdictKind.DNS_CHANGED}
)

#: How grave each kind is, for picking one verdict among several (an address's status and DNS
#: verdicts, a domain's addresses): the most severe wins.
SEVERITY = {
    VerdictKind.UNKNOWN: 0,
    VerdictKind.OK: 1,
    VerdictKind.EXPIRING_SOON: 2,
    VerdictKind.IN_GRACE: 3,
    VerdictKind.EXPIRED: 4,
    VerdictKind.RELEASED: 5,
    VerdictKind.DNS_CHANGED: 6,
    VerdictKind.REREGISTERED: 7,
}


@dataclass(frozen=True, kw_only=True)
class Policy:
    """The tunable parts of the lifecycle policy.

    :param grace: how long a lapsing name stays ``IN_GRACE`` (``DOMAINGUARD_GRACE``).
    :param warn_within: how soon before expiry to warn (``DOMAINGUARD_WARN_WITHIN``).
    """

    grace: timedelta = timedelta(days=30)
    warn_within: timedelta = timedelta(days=30)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What an observation means.

    :param kind: the lifecycle stage.
    :param unsafe: whether addresses on the domain must not receive resets.
    :param until: when ``IN_GRACE`` turns ``EXPIRED``, or when an ``EXPIRING_SOON`` domain expires.
    :param reason: one readable sentence for logs, reports and the journal.
    """

    kind: VerdictKind
    unsafe: bool
    until: datetime | None
    reason: str


# -- status vocabulary ----------------------------------------------------------------------

#: RDAP status names (RFC 8056 mapping of EPP statuses, RFC 9083 registry), canonical spelling.
_RDAP_STATUSES = frozenset(
    {
        "validated",
        "renew prohibited",
        "update prohibited",
        "transfer prohibited",
        "delete prohibited",
        "proxy",
        "private",
        "removed",
        "obscured",
        "associated",
        "active",
        "inactive",
        "locked",
        "pending create",
        "pending renew",
        "pending transfer",
        "pending update",
        "pending delete",
        "add period",
        "auto renew period",
        "renew period",
        "transfer period",
        "redemption period",
        "pending restore",
        "client delete prohibited",
        "client hold",
        "client renew prohibited",
        "client transfer prohibited",
        "client update prohibited",
        "server delete prohibited",
        "server hold",
        "server renew prohibited",
        "server transfer prohibited",
        "server update prohibited",
    }
)

# Keyed by the name with every separator removed, so "pendingDelete", "PENDING_DELETE",
# "pending-delete" and "pendingdelete" all find "pending delete". EPP's "ok" is RDAP's
# "active" (RFC 8056, section 2); some servers pass the EPP value through unchanged.
_CANONICAL: dict[str, str] = {name.replace(" ", ""): name for name in _RDAP_STATUSES}
_CANONICAL["ok"] = "active"
_LONGEST_NAME = max(len(name.split()) for name in _RDAP_STATUSES)

# Domainr/Fastly flags that say somebody holds the name. One of them to the right of
# `inactive` in the same flag string outranks it (the rightmost flag is the most important).
_HOLDING_FLAGS = frozenset({"active", "parked", "marketed", "expiring", "deleting", "transferable"})

# Only these sources speak Domainr's vocabulary, where `inactive` means "available to
# register". In RDAP `inactive` means "registered, but without delegation information".
_DOMAINR_SOURCES = frozenset({"fastly", "domainr"})

_HOLDS = frozenset({"client hold", "server hold"})
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[\s_\-]+")

_UTC = timezone.utc
# Registries did not exist before 1985 (the first .com was created that March), and
# datetime stops at 9999: anything outside is a parser or registry artefact, not a fact.
_FIRST_YEAR = 1985
_LAST_YEAR = 9999


def _tokens(raw: str) -> list[str]:
    """Split one raw status into canonical names, keeping their order.

    An element may be a single RDAP name in any common spelling, or a whole Domainr flag
    string such as ``"undelegated inactive"``; multi-word RDAP names are matched longest
    first so that ``"client hold"`` stays one name while ``"undelegated inactive"`` becomes two.
    """
    words = _SEPARATORS.split(_CAMEL_BOUNDARY.sub(" ", raw).lower().strip())
    words = [word for word in words if word]
    names: list[str] = []
    i = 0
    while i < len(words):
        for size in range(min(_LONGEST_NAME, len(words) - i), 0, -1):
            canonical = _CANONICAL.get("".join(words[i : i + size]))
            if canonical is not None:
                names.append(canonical)
                i += size
                break
        else:
            names.append(words[i])
            i += 1
    return names


#: Status strings longer than this are split afresh each time rather than remembered.
_CACHED_STATUS_LENGTH = 80


@functools.lru_cache(maxsize=1024)
def _cached_tokens(raw: str) -> tuple[str, ...]:
    return tuple(_tokens(raw))


def _read_statuses(statuses: Iterable[object]) -> list[list[str]]:
    """Normalise every status element; non-strings are ignored rather than trusted.

    A sweep reads the same few dozen status strings for every domain, several times each:
    short ones are split once per process (a bounded cache; a hostile server's long or
    numerous strings only evict each other).
    """
    return [
        list(_cached_tokens(raw)) if len(raw) <= _CACHED_STATUS_LENGTH else _tokens(raw)
        for raw in statuses
        if isinstance(raw, str)
    ]


def _flags_say_available(elements: list[list[str]]) -> bool:
    """Whether Domainr's ``inactive`` (available to register) is the deciding flag.

    Within one flag string the rightmost flag wins, so ``"active inactive"`` is available
    and ``"inactive active"`` is not. Flags in separate set elements have no order: there a
    holding flag anywhere makes the answer contradictory, and ``registered`` decides instead.
    """
    for index, names in enumerate(elements):
        for position, name in enumerate(names):
            if name != "inactive":
                continue
            to_the_right = names[position + 1 :]
            elsewhere = [n for other, e in enumerate(elements) if other != index for n in e]
            if not _HOLDING_FLAGS.intersection(to_the_right) and not _HOLDING_FLAGS.intersection(
                elsewhere
            ):
                return True
    return False


# -- time ---------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime | None:
    """``value`` as aware UTC (naive counts as UTC); ``None`` if it cannot be converted."""
    try:
        if value.utcoffset() is None:
            return value.replace(tzinfo=_UTC)
        return value.astimezone(_UTC)
    except (OverflowError, ValueError, TypeError):
        # datetime.min at +01:00 is before year 1 in UTC; a broken tzinfo may raise anything.
        return None


def plausible_moment(value: object) -> datetime | None:
    """``value`` as aware UTC when it is a datetime in 1985-9999; otherwise ``None``.

    Dates outside that range are parser or registry artefacts and count as absent.
    """
    if not isinstance(value, datetime):
        return None
    converted = _utc(value)
    if converted is None or not _FIRST_YEAR <= converted.year <= _LAST_YEAR:
        return None
    return converted


def _shift(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, clamped to the datetime range instead of overflowing."""
    try:
        return moment + delta
    except OverflowError:
        edge = datetime.max if delta > timedelta(0) else datetime.min
        return edge.replace(tzinfo=_UTC)


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def _minute(moment: datetime) -> str:
    return f"{moment.date().isoformat()} {moment:%H:%M} UTC"


def _pair(first: datetime, second: datetime) -> tuple[str, str]:
    """Two moments for one sentence: days, or minutes when they share a day."""
    if first.date() == second.date():
        return _minute(first), _minute(second)
    return _day(first), _day(second)


# -- reading an observation -------------------------------------------------------------------


@dataclass(frozen=True)
class _Reading:
    """What the policy needs from one observation, independent of the address."""

    unknown: str | None  # why nothing can be concluded, as a clause; None when something can
    released: bool
    expired: str | None  # reason when the owner can no longer restore the name
    lapse: str | None  # what shows the registration lapsing, as a clause
    expires_at: datetime | None  # plausible expiration date, aware UTC


def _unknown(obs: Observation, name: str, names: set[str]) -> str | None:
    """Why nothing can be concluded from ``obs``, as a clause; ``None`` when something can."""
    if obs.error is not None:
        # Any error, even an empty string, marks the lookup as failed: never act on it.
        detail = " ".join(str(obs.error).split()).rstrip(".") or "no detail"
        return f"The lookup of {name} failed ({detail})"
    if obs.registered is None:
        return f"The status source could not tell whether {name} is registered"
    if "unknown" in names:
        # Domainr answers `unknown` when an upstream registry did not answer; whatever else
        # the observation claims (even registered=True) was then inferred from nothing.
        return f"The status source answered 'unknown' for {name}"
    return None


def _read(obs: Observation, now: datetime) -> _Reading:
    name = obs.domain or "the domain"
    elements = _read_statuses(obs.statuses or ())
    names = {n for element in elements for n in element}
    expires_at = plausible_moment(obs.expires_at)

    unknown = _unknown(obs, name, names)

    # When the backend's reading and Domainr's flags disagree, the reading that protects the
    # account wins: a wrongly refused reset is cheap to undo (and the shell only unverifies
    # after two checks), a takeover is not. Hence flags can turn registered=True into
    # RELEASED, but registered=False is never turned back into registered.
    released = not obs.registered or (
        str(obs.source).strip().lower() in _DOMAINR_SOURCES and _flags_say_available(elements)
    )

    expired: str | None = None
    redemption = "redemption period" in names or "pending restore" in names
    if "pending delete" in names and not redemption:
        # `pending restore` counts as redemption: the former owner is restoring the name
        # (RFC 3915), so the name is not past the point of no return yet.
        expired = (
            f"{name} is pending deletion after its redemption period, "
            "so its owner can no longer restore it."
        )
    elif "deleting" in names:
        expired = f"The status source reports {name} as being deleted."

    lapse: str | None = None
    if expires_at is not None and expires_at <= now:
        lapse = f"its registration expired on {_day(expires_at)}"
    elif "redemption period" in names:
        lapse = "it is in the redemption period"
    elif "pending restore" in names:
        lapse = "its former owner is restoring it from the redemption period"
    elif "expiring" in names:
        lapse = "the status source reports it as expiring"
    elif "auto renew period" in names and names & _HOLDS:
        # `auto renew period` alone follows every Verisign renewal, and a hold alone can be
        # a dispute or abuse case; together they mean the registrar suspended an unpaid name.
        lapse = "it is on hold in the auto-renew grace period"

    return _Reading(
        unknown=unknown, released=released, expired=expired, lapse=lapse, expires_at=expires_at
    )


def is_conclusive(obs: Observation) -> bool:
    """Whether ``obs`` tells anything: ``False`` for failed, ``unknown`` or undecided lookups.

    An inconclusive observation must change nothing that a later judgement rests on.
    """
    names = {n for element in _read_statuses(obs.statuses or ()) for n in element}
    return _unknown(obs, obs.domain or "the domain", names) is None


def is_lapse_signal(obs: Observation, now: datetime) -> bool:
    """Whether ``obs`` shows its domain lapsing, expired or released at ``now``.

    The sweep records ``lapse_seen_at`` the first time this is true, and should clear it
    when a successful lookup shows no lapse (the owner renewed). A failed or ``unknown``
    lookup returns ``False`` but says nothing either way, so it should leave any recorded
    ``lapse_seen_at`` untouched. Pure, like :func:`judge`.

    :param obs: the observation.
    :param now: the moment of judgement; naive values are taken as UTC.
    """
    reading = _read(obs, _now(now))
    if reading.unknown is not None:
        return False
    return reading.released or reading.expired is not None or reading.lapse is not None


def is_up_for_grabs(obs: Observation, now: datetime) -> bool:
    """Whether ``obs`` shows a name its owner can no longer keep: released, or past the point
    of restore (``pending delete`` without redemption, Domainr ``deleting``). Pure.

    Whoever holds such a name *later* registered it anew, even where the source shows no
    registration date (Fastly and Domainr give flags only).
    """
    reading = _read(obs, _now(now))
    return reading.unknown is None and (reading.released or reading.expired is not None)


def shows_renewal(obs: Observation, now: datetime) -> bool:
    """Whether ``obs`` shows its registration renewed at ``now``: a plausible expiration date
    after ``now``, outside the auto-renew period. Pure.

    Inside that period a future date proves nothing: Verisign moves it a year on at expiry
    whether or not anyone paid, and a registrar may lift its hold to sell the name.
    """
    expires = plausible_moment(obs.expires_at)
    if expires is None or expires <= _now(now):
        return False
    names = {n for element in _read_statuses(obs.statuses or ()) for n in element}
    return "auto renew period" not in names


def _now(now: datetime) -> datetime:
    converted = _utc(now)
    # A `now` that cannot be converted (datetime.min with a positive offset) is taken as
    # UTC wall time: off by at most a day, and judge must never raise.
    return converted if converted is not None else now.replace(tzinfo=_UTC)


# -- the policy --------------------------------------------------------------------------------


def judge(
    obs: Observation,
    *,
    now: datetime,
    verified_at: datetime | None = None,
    lapse_seen_at: datetime | None = None,
    changed_hands_at: datetime | None = None,
    policy: Policy | None = None,
) -> Verdict:
    """Judge ``obs`` at ``now`` by the lifecycle policy; never raises, does no I/O.

    :param obs: what a status backend saw.
    :param now: the moment of judgement; naive datetimes here and in ``obs`` count as UTC.
    :param verified_at: when the address was last verified; ``None`` skips the
        re-registration check (there is nothing to compare the creation date with).
    :param lapse_seen_at: when a lapse signal (:func:`is_lapse_signal`) was first seen.
    :param changed_hands_at: when the domain was last seen to change hands after a lapse (a
        transfer or registration dated after ``lapse_seen_at``), remembered by
        :mod:`flask_domainguard.domainstate` even when a later answer no longer shows it.
        An address verified before it (or of unknown proof date) is ``REREGISTERED``.
    :param policy: grace period and warning window; the defaults when ``None``.
    """
    policy = policy if policy is not None else Policy()
    now = _now(now)
    name = obs.domain or "the domain"
    reading = _read(obs, now)

    if reading.unknown is not None:
        return _verdict(
            VerdictKind.UNKNOWN,
            None,
            f"{reading.unknown}, so nothing is concluded until it is checked again.",
        )

    if reading.released:
        return _verdict(
            VerdictKind.RELEASED,
            None,
            f"{name} is not registered, so anyone can register it and receive its mail.",
        )

    # Dates outside 1985-9999 count as absent, for our own records as for the registry's.
    registered_at = plausible_moment(obs.registered_at)
    verified = plausible_moment(verified_at)
    # Strictly later: a creation at the very instant of verification is the registration
    # the user proved control of. Creation dates in the future are kept, since a registry's
    # clock a little ahead of ours must not hide a re-registration made minutes ago.
    if registered_at is not None and verified is not None and registered_at > verified:
        created, proved = _pair(registered_at, verified)
        return _verdict(
            VerdictKind.REREGISTERED,
            None,
            f"{name} was registered again on {created}, "
            f"after the address was verified on {proved}.",
        )

    transferred_at = plausible_moment(obs.transferred_at)
    seen = plausible_moment(lapse_seen_at)
    # Strictly later, for the same reason; a transfer before the lapse was seen is an
    # ordinary change of registrar by the owner who verified the address, and one before the
    # address was verified was made before its owner proved control of the mailbox.
    if (
        transferred_at is not None
        and seen is not None
        and transferred_at > seen
        and (verified is None or transferred_at > verified)
    ):
        moved, noticed = _pair(transferred_at, seen)
        return _verdict(
            VerdictKind.REREGISTERED,
            None,
            f"{name} was transferred on {moved}, after it was seen lapsing on {noticed}, "
            "so it may now belong to someone else.",
        )

    changed = plausible_moment(changed_hands_at)
    if changed is not None and (verified is None or changed > verified):
        return _verdict(
            VerdictKind.REREGISTERED,
            None,
            f"{name} changed hands on {_day(changed)} after it was seen lapsing, "
            "so it may now belong to someone else.",
        )

    if reading.expired is not None:
        return _verdict(VerdictKind.EXPIRED, None, reading.expired)

    if reading.lapse is not None:
        start = _lapse_start(reading.expires_at, seen, now)
        ends = _shift(start, policy.grace)
        if now >= ends:
            return _verdict(
                VerdictKind.EXPIRED,
                None,
                f"{name} has been lapsing since {_day(start)} ({reading.lapse}) "
                f"and its grace period ended on {_day(ends)}.",
            )
        return _verdict(
            VerdictKind.IN_GRACE,
            ends,
            f"{name} has been lapsing since {_day(start)} ({reading.lapse}) "
            f"and counts as expired from {_day(ends)} unless it is renewed.",
        )

    expires_at = reading.expires_at
    # Lapse signals were handled above, so an expiration date here is in the future. The
    # far edge is inclusive: a name expiring exactly `warn_within` from now is warned about.
    if expires_at is not None and expires_at <= _shift(now, policy.warn_within):
        return _verdict(
            VerdictKind.EXPIRING_SOON,
            expires_at,
            f"{name} expires on {_day(expires_at)} unless its owner renews it.",
        )

    if expires_at is not None:
        return _verdict(VerdictKind.OK, None, f"{name} is registered until {_day(expires_at)}.")
    return _verdict(VerdictKind.OK, None, f"{name} is registered and shows no sign of lapsing.")


def _lapse_start(expires_at: datetime | None, seen: datetime | None, now: datetime) -> datetime:
    """When the lapse began: the earliest evidence, or ``now`` when there is none.

    The guide takes a past expiration date first and ``lapse_seen_at`` otherwise. When both
    exist and the lapse was seen *before* the listed expiration (Verisign moves the date a
    year forward on auto-renew whether or not anyone paid), the lapse had begun by the time
    it was seen, so the earlier of the two is used: it never grants extra grace. A future
    expiration date proves nothing for the same reason and is ignored here.
    """
    candidates: list[datetime] = []
    if expires_at is not None and expires_at <= now:
        candidates.append(expires_at)
    if seen is not None:
        # A lapse cannot have been seen after now; a record from a clock ahead of ours
        # would otherwise push the grace period's end into the future.
        candidates.append(min(seen, now))
    return min(candidates) if candidates else now


def _verdict(kind: VerdictKind, until: datetime | None, reason: str) -> Verdict:
    return Verdict(kind=kind, unsafe=kind in UNSAFE_KINDS, until=until, reason=reason)
