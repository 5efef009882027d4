"""Who may receive what: the one rule that DomainGuard's own mail and the Flask-Mail safety
net (:mod:`.safetynet`) both apply.

Every reading starts from the same judgement: an address's domain is unsafe *for that
address* when its stored facts, judged against the address's own proof date and DNS baseline,
say so (:func:`domain_unsafe_for`; trusted providers never are; a newer address on the domain
changes nothing). The purposes then ask for more or less (:class:`Purpose`):

``ANY``
    Any mail a host sends (the safety net's ``"all"`` mode). Addresses DomainGuard does not
    store are not its to judge; an unverified one is judged for a proof made now (only a name
    up for grabs is unsafe for it); one that lost its verification *to its domain* receives
    only its own verification link (:func:`.safetynet.verification_mail_scope`).
``NOTICE``
    Mail about an account (notices, "this wasn't me" links): a stored, verified address whose
    domain is not unsafe for it. The unsafe address itself never hears about it: its domain
    may belong to the attacker now.
``RESET``
    A password reset: ``NOTICE``, and, with ``DOMAINGUARD_RESET_LIVE_CHECK = "evidence"``,
    evidence that the domain is still the owner's: a reset decision vouched for it (a live
    lookup just now), or a recent check judged its domain ``OK`` for it
    (:func:`has_reset_evidence`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .. import domainstate
from ..dnsevidence import EVIDENCE, role_for
from ..dnsverdict import BASELINE_COLUMNS, Baseline
from ..domainstate import STATE_COLUMNS, DomainState, load_state, policy_of, verdict_for
from ..models import DOMAIN_REASONS
from ..sqlcompat import in_chunks
from ..timeutil import as_utc, utcnow

if TYPE_CHECKING:
    from ..context import Guard
    from ..models import EmailAddress
    from ..verdict import Verdict


class Purpose(enum.Enum):
    """What a mail is for; each asks more of its recipient than the one before."""

    ANY = "any"
    NOTICE = "notice"
    RESET = "reset"


def address_verdict(
    guard: Guard,
    state: DomainState,
    verified_at: datetime | None,
    now: datetime,
    baseline: Baseline | None = None,
) -> Verdict:
    """The stored verdict for one address on ``state``'s domain, by its own proof date and
    DNS baseline.

    An unverified address (``verified_at`` ``None``) has no proof to measure a change of hands
    against; mail to it reaches whoever holds the domain now, so it is judged for a proof
    made now (only a name up for grabs, released or expired, is unsafe for it).
    """
    if verified_at is None:
        return verdict_for(state, now, now, policy_of(guard.settings))
    return verdict_for(state, as_utc(verified_at), now, policy_of(guard.settings), baseline)


def domain_unsafe_for(guard: Guard, row: Any, *, state: DomainState | None = None) -> bool:
    """Whether ``row``'s domain is unsafe *for this address* by the stored facts.

    :param row: an :class:`~flask_domainguard.models.EmailAddress`, or a result row with its
        ``registrable``, ``verified_at`` and ``dns_baseline_*`` columns.
    :param state: the domain's stored state when the caller loaded it already (one query for
        many addresses); loaded here otherwise.
    """
    if row.registrable in guard.settings.trusted_domains:
        return False
    if state is None:
        state = load_state(guard, row.registrable)
    return address_verdict(guard, state, row.verified_at, utcnow(), Baseline.of(row)).unsafe


def has_reset_evidence(guard: Guard, row: EmailAddress) -> bool:
    """Whether the stored state alone is evidence that ``row`` may receive a reset: verified,
    and a trusted provider or a recent check that judged its domain ``OK`` for it."""
    if row.verified_at is None:
        return False
    if row.registrable in guard.settings.trusted_domains:
        return True
    settings = guard.settings
    return domainstate.has_reset_evidence(
        load_state(guard, row.registrable),
        row.verified_at,
        utcnow(),
        within=settings.reset_live_check_after,
        policy=policy_of(settings),
        baseline=Baseline.of(row),
        dns_evidence=role_for(guard, row.registrable) == EVIDENCE,
    )


def may_receive(
    guard: Guard,
    row: Any,
    purpose: Purpose,
    *,
    vouched: bool = False,
    verifying: bool = False,
    state: DomainState | None = None,
) -> bool:
    """Whether the stored address ``row`` (``None``: not stored) may receive a mail for
    ``purpose``; see the module's documentation for the rule.

    :param vouched: (``RESET``) an allowed reset decision, made on a live lookup, names ``row``.
    :param verifying: (``ANY``) the mail is ``row``'s own verification link.
    :param state: ``row``'s domain state, when the caller loaded it already.
    """
    if purpose is Purpose.ANY:
        if row is None or row.registrable in guard.settings.trusted_domains:
            return True
        if row.verified_at is None and row.unverify_reason in DOMAIN_REASONS:
            # Its old proof is gone with its verification, so the stored facts cannot be
            # judged against it; a proof made now would find a new registrant's domain safe.
            return verifying
        return not domain_unsafe_for(guard, row, state=state)
    if row is None or row.verified_at is None or domain_unsafe_for(guard, row, state=state):
        return False
    if purpose is Purpose.NOTICE or guard.settings.reset_live_check != "evidence":
        return True
    return vouched or has_reset_evidence(guard, row)


def is_safe_recipient(guard: Guard, row: EmailAddress) -> bool:
    """Whether ``row`` may receive mail about its account (:attr:`Purpose.NOTICE`).

    A domain never checked counts as safe here (notices such as "password changed"); a
    reset needs more (:attr:`Purpose.RESET`).
    """
    return may_receive(guard, row, Purpose.NOTICE)


def safe_addresses(guard: Guard, user_id: Any, *, exclude_id: int | None = None) -> list[str]:
    """The user's addresses that may receive mail about the account (:attr:`Purpose.NOTICE`),
    primary first; one query for the addresses and their domains."""
    # One user asked, so every row is theirs (whatever type the key came back as).
    return [
        address
        for pairs in safe_addresses_of(guard, [user_id]).values()
        for address_id, address in pairs
        if address_id != exclude_id
    ]


def _with_states(
    guard: Guard, *where: sa.ColumnElement[bool], order_by: Iterable[Any] = ()
) -> Iterator[tuple[Any, DomainState]]:
    """The stored addresses matching ``where``, each with its domain's stored state, in one
    query: result rows with the columns :func:`may_receive` reads (``id``, ``user_id``,
    ``address``, ``registrable``, ``verified_at``, ``unverify_reason``, ``dns_baseline_*``)."""
    Address = guard.models.EmailAddress
    Domain = guard.models.Domain
    # The Domain's columns under their own names (none clashes with the address columns),
    # so each result row reads as a Domain row too.
    rows = guard.db.session.execute(
        sa.select(
            Address.id,
            Address.user_id,
            Address.address,
            Address.registrable,
            Address.verified_at,
            Address.unverify_reason,
            *(getattr(Address, column) for column in BASELINE_COLUMNS),
            *(getattr(Domain, column) for column in STATE_COLUMNS),
        )
        .join(Domain, Domain.name == Address.registrable, isouter=True)
        .where(*where)
        .order_by(*order_by)
    )
    for row in rows:
        yield (
            row,
            (DomainState.of(row) if row.name is not None else DomainState(name=row.registrable)),
        )


def safe_addresses_of(guard: Guard, user_ids: Iterable[Any]) -> dict[Any, list[tuple[int, str]]]:
    """:func:`safe_addresses` of many users in one query (a sweep batch's): each user's safe
    ``(address id, address)`` pairs, primary first; users without one are left out."""
    wanted = list(dict.fromkeys(user_ids))
    if not wanted:
        return {}
    Address = guard.models.EmailAddress
    safe: dict[Any, list[tuple[int, str]]] = {}
    # The users of one expiring domain are unbounded: a statement per chunk of them (each
    # user's rows stay in one statement, in order).
    for chunk in in_chunks(wanted):
        rows = _with_states(
            guard,
            Address.user_id.in_(chunk),
            Address.verified_at.is_not(None),
            order_by=(Address.user_id, Address.primary.desc(), Address.id),
        )
        for row, state in rows:
            if may_receive(guard, row, Purpose.NOTICE, state=state):
                safe.setdefault(row.user_id, []).append((row.id, row.address))
    return safe


def stored_recipients(guard: Guard, addresses: Iterable[str]) -> dict[str, tuple[Any, DomainState]]:
    """The stored rows of ``addresses`` (normalized; result rows as :func:`_with_states`
    gives them) and their domains' states, in one query; addresses nobody stored are left
    out."""
    wanted = list(dict.fromkeys(addresses))
    if not wanted:
        return {}
    Address = guard.models.EmailAddress
    return {
        row.address: (row, state) for row, state in _with_states(guard, Address.address.in_(wanted))
    }
