"""The operator's re-verification (``flask domainguard reverify``): a live lookup of an
address's domain, judged as a verification would, and optionally a new link."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..livecheck import check_domain
from ..timeutil import utcnow
from .store import resolve_address
from .verification import (
    VerificationRefused,
    domain_refusal,
    journal_refusal,
    send_verification,
)

if TYPE_CHECKING:
    from ..context import Guard


@dataclass(frozen=True)
class ReverifyReport:
    """What ``flask domainguard reverify`` found and did.

    :param exit_code: 0 safe (and mailed, with ``send``); 3 unsafe; 4 the lookup failed.
    :param lookup_error: what went wrong when the live lookup failed (``verdict`` and
        ``reason`` then come from the stored state).
    """

    address: str
    domain: str
    verified: bool
    unverify_reason: str | None
    verdict: str
    reason: str
    looked_up: bool
    safe: bool
    sent: bool
    refusal: str | None
    exit_code: int
    lookup_error: str | None = None

    def rows(self) -> list[tuple[str, Any]]:
        """``name  value`` rows for :func:`flask_domainguard.cli.print_table`."""
        return [
            ("address", self.address),
            ("domain", self.domain),
            ("verified", "yes" if self.verified else f"no ({self.unverify_reason or 'never'})"),
            ("verdict", self.verdict),
            ("reason", self.reason),
            ("looked up", self._looked_up_text()),
            ("safe to verify", "yes" if self.safe else f"no ({self.refusal})"),
            ("link sent", "yes" if self.sent else "no"),
        ]

    def _looked_up_text(self) -> str:
        if not self.looked_up:
            return "no (trusted provider)"
        if self.lookup_error:
            return f"yes, and it failed: {self.lookup_error} (verdict from the stored state)"
        return "yes"


def reverify(guard: Guard, address: str, *, send: bool, actor: str) -> ReverifyReport:
    """Look an address's domain up live, judge it as a verification would, and optionally mail
    a new verification link (not rate-limited: an operator asked).

    :raises UnknownAddress: no such stored address.
    """
    row = resolve_address(guard, address)
    check = check_domain(guard, row.registrable, verified_at=utcnow(), force=True, actor=actor)
    refusal = domain_refusal(guard, row, check)
    if refusal is None and check.failed and not check.trusted:
        # An operator is told plainly that nothing was learnt, even where a user would be
        # let through on the stored state.
        refusal = VerificationRefused("the lookup failed", code="lookup_failed")
    safe = refusal is None
    sent = False
    if send and row.verified_at is None:
        if safe:
            send_verification(guard, row, actor=actor, rate_limit=False, check=check)
            sent = True
        elif refusal is not None:
            journal_refusal(guard, row, refusal, actor=actor)
    if safe:
        code = 0
    elif refusal is not None and refusal.code == "lookup_failed":
        code = 4
    else:
        code = 3
    return ReverifyReport(
        address=row.address,
        domain=row.registrable,
        verified=row.verified_at is not None,
        unverify_reason=row.unverify_reason.value if row.unverify_reason else None,
        verdict=check.verdict.kind.value,
        reason=check.verdict.reason,
        looked_up=check.looked_up,
        safe=safe,
        sent=sent,
        refusal=refusal.code if refusal is not None else None,
        exit_code=code,
        lookup_error=(check.observation.error or "no answer")
        if check.failed and check.observation is not None
        else None,
    )
