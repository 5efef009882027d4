"""Who may receive a password reset: :func:`reset_decision` and its :class:`ResetDecision`.

One rule for the three ways in (:mod:`.flow`): a reset goes only to a known, verified address
whose domain affirmative evidence shows safe for it *now* (a live lookup when the last check
is stale). The decision's ``reason`` is for the host's logs, never for the requester.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic

import sqlalchemy as sa

from ..addresses.store import find_address
from ..dnsverdict import Baseline
from ..emails import InvalidAddress, parse_address
from ..livecheck import check_domain
from ..mail.recipients import is_safe_recipient
from ..models import UserT
from ..verdict import Verdict

if TYPE_CHECKING:
    from ..context import Guard
    from ..models import EmailAddress

#: Longest address text read from a form: RFC 5321 allows 254 characters in a path.
MAX_ADDRESS_LENGTH = 320

# Reasons of a ResetDecision. The host logs them; it never shows them to the requester.
ALLOWED = "allowed"
UNKNOWN_ADDRESS = "unknown_address"
UNVERIFIED = "unverified"
#: No successful, recent observation shows the domain safe for the address (the lookup failed).
NO_EVIDENCE = "no_evidence"
RATE_LIMITED = "rate_limited"
#: Prefix of the domain reasons: ``domain_released``, ``domain_expired``, ``domain_reregistered``.
DOMAIN_PREFIX = "domain_"


@dataclass(frozen=True)
class ResetDecision(Generic[UserT]):
    """Whether a password reset may be mailed to an address, and why (never shown).

    :param allowed: mail the reset.
    :param reason: ``allowed``, ``unknown_address``, ``unverified``, ``domain_released``,
        ``domain_expired``, ``domain_reregistered``, ``no_evidence`` or ``rate_limited``.
    :param user: the host's user owning the address, or ``None`` when unknown.
    :param address: the :class:`~flask_domainguard.models.EmailAddress` row, or ``None``.
    :param verdict: the domain verdict the decision rests on, when one was needed.
    """

    allowed: bool
    reason: str
    user: UserT | None
    address: EmailAddress | None
    verdict: Verdict | None = None


def parse_requested(raw: str) -> tuple[str, str | None]:
    """The normalised address and its registrable domain (``None`` when ``raw`` does not
    parse: it is then only trimmed and lower-cased, so it still finds nothing)."""
    try:
        parsed = parse_address(raw)
    except InvalidAddress:
        return raw.strip().lower()[:MAX_ADDRESS_LENGTH], None
    return parsed.normalized, parsed.registrable


def lookup_row(guard: Guard, normalized: str) -> EmailAddress | None:
    """The stored row for an address :func:`parse_requested` normalised, or ``None``."""
    # find_address re-parses; querying the normalised text directly keeps the work the same
    # for addresses that parse and for those that do not.
    Row = guard.models.EmailAddress
    row: EmailAddress | None = guard.db.session.scalar(
        sa.select(Row).where(Row.address == normalized)
    )
    return row


def reset_decision(guard: Guard, address: str) -> ResetDecision[UserT]:
    """Decide whether a password reset may be mailed to ``address`` (any spelling).

    Allowed only for a stored, verified address on a domain that affirmative evidence shows
    safe for it: a live lookup now, or a check younger than
    ``DOMAINGUARD_RESET_LIVE_CHECK_AFTER`` that judged it ``OK`` for this address (any other
    stored verdict is looked up again). A domain registered again after the address was
    verified, sold after it was seen lapsing, released or expired is refused at once, without
    the sweep's confirmation. A lookup that fails leaves no evidence: refused as
    ``no_evidence`` (with ``DOMAINGUARD_RESET_LIVE_CHECK = "fallback"`` the stored state
    decides instead). Trusted providers are never looked up.

    Records a successful live observation on the Domain row (and commits); never unverifies.
    """
    normalized, registrable = parse_requested(address)
    row = lookup_row(guard, normalized)
    if row is None:
        # The same primary-key lookups a known address costs, so the database's answer time
        # says nothing about whether the address exists.
        if registrable is not None:
            guard.db.session.get(guard.models.Domain, registrable)
        return ResetDecision(False, UNKNOWN_ADDRESS, None, None)
    user = guard.get_user(row.user_id)
    if user is None:  # pragma: no cover - rows go with their user (ON DELETE CASCADE)
        return ResetDecision(False, UNKNOWN_ADDRESS, None, None)
    if row.verified_at is None:
        return ResetDecision(False, UNVERIFIED, user, row)
    check = check_domain(
        guard,
        row.registrable,
        verified_at=row.verified_at,
        baseline=Baseline.of(row),
        actor="reset",
    )
    if check.verdict.unsafe:
        return ResetDecision(
            False, DOMAIN_PREFIX + check.verdict.kind.value, user, row, check.verdict
        )
    if not check.evidence and guard.settings.reset_live_check == "evidence":
        return ResetDecision(False, NO_EVIDENCE, user, row, check.verdict)
    return ResetDecision(True, ALLOWED, user, row, check.verdict)


def safe_to_mail(guard: Guard, address: str) -> bool:
    """Whether ``address`` is stored, verified and on a domain not unsafe by its last check.

    No live lookup (that is :func:`reset_decision`): cheap enough for every outgoing mail.
    """
    row = find_address(guard, address)
    return row is not None and is_safe_recipient(guard, row)
