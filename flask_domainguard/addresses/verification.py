"""Address verification: a mailed link, a confirmation step, a live domain check.

The flow::

    guard.send_verification(address)        # rate-limited; mails a link valid 24 h
    GET  /domainguard/verify/<token>        # a page with a button (mail scanners stop here)
    POST /domainguard/verify/<token>        # confirm_verification(): live check, then verified

A verification token is bound to the address row's id, its normalised text and the moment
it was last unverified, and is spent when used: a link mailed before the address lost its
verified state cannot bring it back.

Before an address is marked verified its domain is looked up live (PyPI learned that a stale
status re-unverified users right after they re-verified). A new verification is refused when
anyone else could register or restore the domain now (released, expired). An address that
was unverified *because of its domain*, or by hand (an administrator, or "this wasn't me"
after a reset through it), is held to more: only its owner, logged in, with 2FA and a fresh
second factor (a user without 2FA enrols first), may re-verify it, and only on evidence that
the domain is safe: a successful lookup now, or a recent check that judged it ``OK``. The
owner's other safe addresses are told when it comes back.
"""

from __future__ import annotations

import enum
import logging
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from flask import current_app, has_request_context, request

from .. import jobs, signals, tokens
from ..dnsevidence import fingerprint_of
from ..dnsverdict import VERIFICATION, Baseline
from ..domainstate import load_state
from ..journal import EventKind, transaction
from ..links import verify_link
from ..livecheck import DomainCheck, check_domain
from ..mail.outgoing import notify_user, send_mail
from ..mail.recipients import address_verdict
from ..mail.safetynet import verification_mail_scope
from ..models import DOMAIN_REASONS, UnverifyReason
from ..ratelimit import RateLimiter
from ..timeutil import utcnow
from ..twofactor.devices import twofactor_enabled
from ..twofactor.fresh import freshness
from ..users import logged_in_user
from ..verdict import VerdictKind
from .standing import REASON_TEXT, dns_moved, needs_owner
from .store import AddressError, resolve_address, unverify

if TYPE_CHECKING:
    from ..context import Guard
    from ..models import EmailAddress

log = logging.getLogger(__name__)

#: Kinds that mean someone other than the owner can register or restore the name right now.
_UP_FOR_GRABS = frozenset({VerdictKind.RELEASED, VerdictKind.EXPIRED})


class VerificationError(AddressError):
    """Verification cannot go ahead; the message is meant for the address's owner.

    :param code: a short machine-readable reason (``"rate_limited"``, ``"domain_unsafe"``,
        ``"login_required"``, ``"twofactor_required"``, ``"second_factor_required"``,
        ``"lookup_failed"``, ``"already_verified"``).
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class VerificationRateLimited(VerificationError):
    """Too many verification mails for this address lately."""


class VerificationRefused(VerificationError):
    """The domain is unsafe, or the owner must log in (with 2FA) to re-verify."""


class Outcome(str, enum.Enum):
    """What :func:`confirm_verification` did."""

    VERIFIED = "verified"
    REVERIFIED = "reverified"
    ALREADY_VERIFIED = "already_verified"


# -- the 2FA seam --------------------------------------------------------------------------


def has_fresh_second_factor(guard: Guard, user: Any) -> bool:
    """Whether ``user`` passed the 2FA step recently, or has no second factor at all.

    ``guard.has_fresh_second_factor(user)`` wins when a host or a later version defines it.
    Otherwise the 2FA gate's session record decides (:func:`.twofactor.fresh.freshness`,
    within ``DOMAINGUARD_2FA_FRESH_WITHIN``), which only speaks for the logged-in user: for
    anyone else, or outside a request, a user with 2FA counts as not fresh (fail closed).
    """
    checker = getattr(guard, "has_fresh_second_factor", None)
    if callable(checker):
        return bool(checker(user))
    if not twofactor_enabled(guard, user):
        return True
    me = logged_in_user()
    if me is None or guard.user_id_of(me) != guard.user_id_of(user):
        return False
    return freshness()[1]


# -- tokens --------------------------------------------------------------------------------


def _binding_text(row: EmailAddress) -> str:
    # created_at: a row removed and added again may get the same id back (SQLite reuses the
    # highest rowid), but it is another row and the old link must not verify it.
    unverified = row.unverified_at.isoformat() if row.unverified_at else ""
    return f"{row.address}|{row.created_at.isoformat()}|{unverified}"


def verification_token(row: EmailAddress) -> str:
    """A verification token for ``row`` (needs an app context for ``SECRET_KEY``)."""
    return tokens.issue(
        tokens.VERIFY, {"a": row.id, "b": tokens.bind(tokens.VERIFY, _binding_text(row))}
    )


def read_verification_token(guard: Guard, token: str) -> tuple[EmailAddress, tokens.Token]:
    """The address a verification token names, if the token is still good.

    :raises flask_domainguard.tokens.TokenError: tampered, expired, spent, or the address
        was removed, changed or unverified again since the token was issued.
    """
    checked = tokens.read(tokens.VERIFY, token, lifetime=guard.settings.verify_within)
    row_id = checked.claims.get("a")
    row = guard.db.session.get(guard.models.EmailAddress, row_id) if type(row_id) is int else None
    bound = row is not None and tokens.bound_to(
        tokens.VERIFY, _binding_text(row), checked.claims.get("b")
    )
    if row is None or not bound or tokens.is_used(guard, checked):
        raise tokens.TokenError("This link is invalid or was already used. Ask for a new one.")
    return row, checked


# -- sending -------------------------------------------------------------------------------


def send_verification(
    guard: Guard,
    address: EmailAddress | str,
    *,
    actor: str = "user",
    rate_limit: bool = True,
    check: DomainCheck | None = None,
) -> EmailAddress:
    """Mail a verification link to ``address`` and journal it.

    A domain whose stored verdict is unsafe is looked up live first, so an owner who renewed
    can verify again at once; while it stays unsafe nothing is mailed (the mailbox may be
    someone else's now).

    :raises UnknownAddress: no such stored address.
    :raises VerificationError: already verified (``code="already_verified"``).
    :raises VerificationRateLimited: more than ``DOMAINGUARD_VERIFY_RESEND_LIMIT`` mails.
    :raises VerificationRefused: the domain is unsafe (``code="domain_unsafe"``).

    :param rate_limit: count the mail against ``DOMAINGUARD_VERIFY_RESEND_LIMIT`` (an
        operator's ``reverify --send`` does not).
    :param check: a live check of the address's domain the caller just made (not repeated).
    """
    row = resolve_address(guard, address)
    moved = row.verified_at is not None and dns_moved(guard, row)
    if row.verified_at is not None and not moved:
        raise VerificationError(f"{row.address} is already verified.", code="already_verified")
    settings = guard.settings
    if rate_limit and not RateLimiter(guard).hit(
        f"verify-send:{row.id}", settings.verify_resend_limit
    ):
        raise VerificationRateLimited(
            f"Too many verification mails for {row.address} lately; try again later.",
            code="rate_limited",
        )
    if moved:
        # Its DNS moved away from its proof: it receives nothing anyway, and the sweep would
        # unverify it after its confirmation. Unverified now, the link below needs its owner
        # logged in (with 2FA) and records the new DNS as the address's baseline.
        with transaction(guard.db, guard.models) as tx:
            unverify(tx, row, UnverifyReason.DNS_CHANGED, actor=actor, domain=row.registrable)
    if row.registrable not in settings.trusted_domains:
        state = load_state(guard, row.registrable)
        stored_unsafe = address_verdict(guard, state, None, utcnow()).unsafe
        if check is None and (stored_unsafe or row.unverify_reason in DOMAIN_REASONS):
            check = check_domain(
                guard, row.registrable, verified_at=utcnow(), force=True, actor="verification"
            )
        if check is not None:
            refusal = domain_refusal(guard, row, check)
            if refusal is not None:
                journal_refusal(guard, row, refusal, actor=actor)
                raise refusal
    # Queued with its journal row, then delivered at once: a mail server that is down, or a
    # crash, leaves the job to the workers, who retry it (the link is made when it is sent).
    # A link that cannot be built at all is a configuration error: say so now, not in a worker.
    verify_link(verification_token(row))
    payload: dict[str, Any] = {"address_id": row.id}
    if has_request_context():
        payload["url_root"] = request.url_root
    with transaction(guard.db, guard.models) as tx:
        job_id = jobs.enqueue(guard, jobs.VERIFICATION_MAIL, payload, address=row.address)
        tx.record(
            EventKind.VERIFICATION_SENT,
            actor=actor,
            address=row,
            signal=signals.verification_sent,
            job=job_id,
        )
    jobs.deliver_now(guard, [job_id])
    return row


@jobs.register(jobs.VERIFICATION_MAIL)
def _run_verification_mail(guard: Guard, run: jobs.JobRun) -> None:
    """Mail the link, unless the address was verified (or removed) since the job was queued."""
    payload = run.job.payload
    row = guard.db.session.get(guard.models.EmailAddress, payload.get("address_id"))
    if row is None or row.verified_at is not None or row.address != run.job.address:
        return
    url_root = payload.get("url_root")
    # A link without DOMAINGUARD_EXTERNAL_URL or SERVER_NAME (debug and testing only) takes
    # the host of the request that asked for the mail.
    context: Any = (
        current_app.test_request_context("/", base_url=url_root)
        if url_root and not has_request_context()
        else nullcontext()
    )
    with context:
        link = verify_link(verification_token(row))
        run.record_attempt(recipients=1, address=row, template="verify_address")
        with verification_mail_scope(row):
            send_mail(
                guard,
                [row.address],
                "verify_address",
                address=row.address,
                link=link,
                valid_for=guard.settings.verify_within,
                reverify=row.unverified_at is not None,
                app_name=current_app.name,
            )


# -- confirming ----------------------------------------------------------------------------


def _owner_refusal(guard: Guard, row: EmailAddress, user: Any) -> VerificationRefused | None:
    """Why ``user`` may not re-verify ``row`` (which :func:`needs_owner`), or ``None``."""
    owner = user is not None and bool(getattr(user, "is_authenticated", False))
    if not owner or guard.user_id_of(user) != row.user_id:
        return VerificationRefused(
            f"{row.address} lost its verification because of its domain or a security "
            "report. Log in to your account, then open the link again to verify it.",
            code="login_required",
        )
    checker = getattr(guard, "has_fresh_second_factor", None)
    # A host with its own 2FA decides through its checker alone. Otherwise: whoever holds the
    # mailbox now may hold the password too (a reset got through), and only a second factor
    # tells the owner apart.
    if not callable(checker) and not twofactor_enabled(guard, user):
        return VerificationRefused(
            "Set up two-factor authentication for your account first, then open the "
            "link again to verify this address.",
            code="twofactor_required",
        )
    if not has_fresh_second_factor(guard, user):
        return VerificationRefused(
            "Confirm your second factor again, then open the link once more.",
            code="second_factor_required",
        )
    return None


def domain_refusal(
    guard: Guard, row: EmailAddress, check: DomainCheck
) -> VerificationRefused | None:
    """Why ``check`` forbids verifying ``row`` now, or ``None`` when it allows it."""
    name = check.domain
    if check.trusted:
        return None
    strict = needs_owner(row)
    verdict = check.verdict
    # A new verification fears only a name anyone can take now; REREGISTERED relative to an
    # old verification is moot for a new one. An address that lost its verification to its
    # domain must show a domain that is not unsafe in any way.
    unsafe = verdict.unsafe if strict else verdict.kind in _UP_FOR_GRABS
    if unsafe:
        return VerificationRefused(
            f"{name} cannot be used for verification right now: {verdict.reason}",
            code="domain_unsafe",
        )
    # ...and on evidence, as a reset needs it: a failed lookup never brings it back.
    if strict and not check.evidence:
        return VerificationRefused(
            f"We could not confirm that {name} is safe again. Please try again later.",
            code="lookup_failed",
        )
    return None


def journal_refusal(
    guard: Guard, row: EmailAddress, refusal: VerificationError, *, actor: str
) -> None:
    with transaction(guard.db, guard.models) as tx:
        tx.record(
            EventKind.VERIFICATION_REFUSED,
            actor=actor,
            address=row,
            signal=signals.verification_refused,
            reason=refusal.code,
        )


def confirm_verification(guard: Guard, token: str, *, user: Any = None) -> Outcome:
    """Verify the address a token names (the POST of the confirmation page).

    :param user: the logged-in user (``flask_login.current_user``), or ``None``.
    :raises flask_domainguard.tokens.TokenError: a bad, expired or spent token.
    :raises VerificationRefused: the domain is unsafe, or an address that
        :func:`needs_owner` is not being re-verified by its owner, logged in, with 2FA and a
        fresh second factor.
    """
    row, checked = read_verification_token(guard, token)
    if row.verified_at is not None:
        return Outcome.ALREADY_VERIFIED
    actor = "user"
    owner_needed = needs_owner(row)
    if owner_needed:
        refusal = _owner_refusal(guard, row, user)
        if refusal is not None:
            journal_refusal(guard, row, refusal, actor=actor)
            raise refusal

    # Judged for the proof about to be made: a change of hands before it is the new owner's,
    # and the DNS seen now becomes the address's baseline.
    check = check_domain(
        guard, row.registrable, verified_at=utcnow(), force=True, actor="verification"
    )
    fingerprint = fingerprint_of(check.observation.dns if check.observation else None)
    refused = domain_refusal(guard, row, check)
    if refused is not None:
        journal_refusal(guard, row, refused, actor=actor)
        raise refused

    reverified = row.unverified_at is not None
    with transaction(guard.db, guard.models) as tx:
        guard.db.session.refresh(row)
        if row.verified_at is not None:
            return Outcome.ALREADY_VERIFIED
        if not tokens.consume(guard, checked):
            raise tokens.TokenError("This link was already used. Ask for a new one.")
        previous_reason = row.unverify_reason
        row.verified_at = utcnow()
        row.unverify_reason = None
        # A new proof, a new baseline (or none, to be first seen, when the DNS was not read).
        baseline = None if fingerprint is None else Baseline(fingerprint, row.verified_at)
        for column, value in Baseline.columns(baseline).items():
            setattr(row, column, value)
        details: dict[str, Any] = {
            "domain_verdict": check.verdict.kind.value,
            "reverified": reverified,
            "dns_baseline": VERIFICATION if baseline is not None else None,
        }
        if reverified:
            details["previous_reason"] = previous_reason.value if previous_reason else None
        # One signal for both (docs/signals.md); the journal tells them apart by kind.
        tx.record(
            EventKind.ADDRESS_REVERIFIED if reverified else EventKind.ADDRESS_VERIFIED,
            actor=actor,
            address=row,
            signal=signals.address_verified,
            **details,
        )
    if owner_needed:
        _tell_other_addresses(guard, row, previous_reason)
    return Outcome.REVERIFIED if reverified else Outcome.VERIFIED


def _tell_other_addresses(guard: Guard, row: EmailAddress, reason: UnverifyReason | None) -> None:
    """Tell the owner's other safe addresses that ``row`` receives resets again."""
    try:
        notify_user(
            guard,
            row.user_id,
            "address_reverified",
            exclude_id=row.id,
            address=row.address,
            why=REASON_TEXT.get(reason, "it lost its verification") if reason else None,
            app_name=current_app.name,
        )
    except Exception:
        # Verified either way; a mail server outage must not undo or hide it.
        log.exception("could not send the address-reverified notice")
