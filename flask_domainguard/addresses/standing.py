"""How an address stands: verified or not and why, whether it receives resets, and what its
owner must do to bring it back (:func:`address_state`, for account pages)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..dnsverdict import Baseline
from ..domainstate import load_state
from ..mail.recipients import address_verdict, is_safe_recipient
from ..models import DOMAIN_REASONS, UnverifyReason
from ..timeutil import utcnow
from ..verdict import VerdictKind
from .store import resolve_address

if TYPE_CHECKING:
    from ..context import Guard
    from ..models import EmailAddress

#: Reasons after which only the logged-in owner with 2FA may verify the address again: the
#: domain's, and a person's decision (an administrator, or "this wasn't me" after a reset
#: through the address, whose mailbox the attacker may read).
OWNER_REASONS = DOMAIN_REASONS | {UnverifyReason.MANUAL}


@dataclass(frozen=True)
class AddressState:
    """How an address stands, for a host's account page (see :func:`address_state`).

    :param address: the normalised address.
    :param primary: whether it is the user's primary address.
    :param verified: whether it is verified now.
    :param receives_resets: verified and on a domain not unsafe by the last check.
    :param domain_verdict: the stored verdict for this address (``"ok"``, ``"expired"``, ...) or
        ``None`` when never checked; trusted providers report ``"trusted"``.
    :param unverify_reason: why it lost its verified state (``"domain_expired"``, ...).
    :param needs_login: re-verifying takes the owner logged in with 2FA (a domain reason, or
        unverified by hand).
    :param label: one sentence for the owner.
    :param needs_verification: a (new) verification link is what the address needs now: it
        is unverified, or verified while its domain's name servers and mail servers have all
        changed since (re-verifying, logged in, records the new ones as its baseline).
    """

    address: str
    primary: bool
    verified: bool
    receives_resets: bool
    domain_verdict: str | None
    unverify_reason: str | None
    needs_login: bool
    label: str
    needs_verification: bool = False


def dns_moved(guard: Guard, row: EmailAddress) -> bool:
    """Whether the stored state finds ``row``'s domain DNS-changed for it: its name servers
    and mail servers all differ from the address's baseline."""
    if row.verified_at is None or row.registrable in guard.settings.trusted_domains:
        return False
    state = load_state(guard, row.registrable)
    verdict = address_verdict(guard, state, row.verified_at, utcnow(), Baseline.of(row))
    return verdict.kind is VerdictKind.DNS_CHANGED


def needs_owner(row: EmailAddress) -> bool:
    """Whether re-verifying ``row`` takes its owner, logged in with 2FA: it was unverified for
    its domain or by hand (:data:`OWNER_REASONS`)."""
    return row.unverify_reason in OWNER_REASONS


#: Why an address lost its verified state, in words for its owner.
REASON_TEXT = {
    UnverifyReason.DOMAIN_RELEASED: "its domain was released and could be registered by anyone",
    UnverifyReason.DOMAIN_EXPIRED: "its domain expired",
    UnverifyReason.DOMAIN_REREGISTERED: "its domain was registered again after you verified it",
    UnverifyReason.DNS_CHANGED: "the name servers and mail servers of its domain all changed "
    "after you verified it",
    UnverifyReason.MANUAL: (
        "it was unverified by hand (by an administrator, or after a password change through it "
        "was reported as not yours)"
    ),
    UnverifyReason.BOUNCE: "mail to it bounced",
}


def address_state(guard: Guard, address: EmailAddress | str) -> AddressState:
    """How an address stands, in words and flags, for the owner's account page.

    ::

        {% for row in guard.addresses_of(current_user) %}
          {% set state = guard.address_state(row) %}
          <li>{{ state.address }}: {{ state.label }}</li>
        {% endfor %}
    """
    row = resolve_address(guard, address)
    trusted = row.registrable in guard.settings.trusted_domains
    verdict: str | None = "trusted"
    if not trusted:
        state = load_state(guard, row.registrable)
        # This address's own verdict: the domain's summary may be about an older address.
        own = address_verdict(guard, state, row.verified_at, utcnow(), Baseline.of(row))
        checked = state.checked_at is not None or state.dns is not None
        verdict = own.kind.value if checked else None
    safe = is_safe_recipient(guard, row)
    reason = row.unverify_reason
    moved = row.verified_at is not None and verdict == VerdictKind.DNS_CHANGED.value
    if row.verified_at is not None and safe:
        label = "Verified: password resets can be sent here."
    elif moved:
        label = (
            f"Verified, but the name servers and mail servers of {row.registrable} have all "
            "changed since you verified it: password resets are not sent here. If you moved "
            "them, verify the address again while logged in; that records the new ones."
        )
    elif row.verified_at is not None:
        label = (
            f"Verified, but its domain {row.registrable} looks unsafe ({verdict}): password "
            "resets are not sent here. Renew the domain or add another address."
        )
    elif reason is not None:
        label = f"Unverified because {REASON_TEXT.get(reason, reason.value)}."
        if reason is UnverifyReason.DNS_CHANGED:
            label += (
                " If you moved them yourself, verify it again while logged in: that records "
                "the new ones."
            )
        elif reason in DOMAIN_REASONS:
            label += " Once the domain is yours again, verify it while logged in."
        elif reason in OWNER_REASONS:
            label += " Verify it again while logged in, with two-factor authentication."
        else:
            label += " Verify it again to receive password resets."
    else:
        label = "Not verified yet: password resets are not sent here until you verify it."
    return AddressState(
        address=row.address,
        primary=row.primary,
        verified=row.verified_at is not None,
        receives_resets=safe,
        domain_verdict=verdict,
        unverify_reason=reason.value if reason is not None else None,
        needs_login=needs_owner(row) or moved,
        label=label,
        needs_verification=row.verified_at is None or moved,
    )
