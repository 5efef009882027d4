"""A safety net under Flask-Mail: unsafe addresses do not receive mail, even if a host forgot.

Flask-Mail has no hook before a message leaves (its ``email_dispatched`` signal fires after
delivery), and every way of sending (``mail.send``, ``mail.send_message``,
``connection.send``, ``message.send``) ends in :meth:`flask_mail.Connection.send`. So that
one method is wrapped, once per process, by :func:`install_mail_guard`, which ``init_app``
calls only for an app whose ``DOMAINGUARD_MAIL_GUARD`` is not ``"off"``. The wrapper is
process-wide, so it still does nothing for apps without DomainGuard and applies each app's
own ``DOMAINGUARD_MAIL_GUARD``:

``"all"`` (default)
    Recipients that are stored addresses on a domain whose verdict is unsafe for them
    (released, expired, re-registered) are dropped from every message, and so are addresses
    that lost their verification to their domain, until their owner verifies them again
    (only DomainGuard's own verification link goes to them, inside
    :func:`verification_mail_scope`).
``"reset"``
    Only the reset rule below.
``"off"``
    Nothing (and such an app does not install the wrapper).

The reset rule: inside :func:`reset_mail_scope` (Guard opens it around the host's
decorated forgot-password view and around its own reset mail) every recipient must be a
stored, verified address on a domain not unsafe for it and, by default, with evidence: the
reset decision the scope was opened with allowed it, or a recent check judged its domain
``OK``. Who may receive what is :mod:`.recipients`' rule, the same one DomainGuard's own mail
obeys (:attr:`.recipients.Purpose.RESET` here, :attr:`~.recipients.Purpose.ANY` outside the
scope).
All others are dropped, and so is any recipient that does not parse as an address. A host
with its own reset flow wraps its send the same way::

    decision = guard.reset_decision(email)
    if decision.allowed:
        with guard.reset_mail_scope(decision):
            mail.send(message)

Dropped recipients are removed from the message; a message left without recipients is not
sent. Nothing is raised: an error here would turn into a different answer to a reset request,
which tells an attacker which addresses exist. A warning is logged (counts only).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, Protocol

import flask_mail
from flask_mail import sanitize_address

from ..addresses.store import find_address
from ..context import registered_state
from ..emails import InvalidAddress, parse_address
from .recipients import Purpose, may_receive, stored_recipients

if TYPE_CHECKING:
    from ..context import Guard
    from ..domainstate import DomainState
    from ..models import EmailAddress

log = logging.getLogger(__name__)

# None outside a reset scope; inside one, the address ids a reset decision just allowed.
_reset_scope: ContextVar[frozenset[int] | None] = ContextVar(
    "domainguard_reset_mail_scope", default=None
)
# The address ids whose verification link is being sent (see verification_mail_scope).
_verification_scope: ContextVar[frozenset[int]] = ContextVar(
    "domainguard_verification_mail_scope", default=frozenset()
)
# Rows the net judges instead of loading them one recipient at a time (recipients_loaded).
_loaded: ContextVar[dict[str, tuple[Any, DomainState]] | None] = ContextVar(
    "domainguard_loaded_recipients", default=None
)
_install_lock = threading.Lock()


class Vouching(Protocol):
    """What :func:`reset_mail_scope` reads of a reset decision
    (:class:`~flask_domainguard.reset.decision.ResetDecision` has it)."""

    @property
    def allowed(self) -> bool: ...

    @property
    def address(self) -> EmailAddress | None: ...


@contextmanager
def reset_mail_scope(decision: Vouching | None = None) -> Iterator[None]:
    """Within this block, Flask-Mail delivers only to addresses fit for a reset.

    :param decision: the allowed reset decision this mail follows: its address passes on
        the decision's live evidence. Without one, every recipient needs evidence in the
        stored state (see :func:`recipient_allowed`).
    """
    allowed = (
        frozenset({decision.address.id})
        if decision is not None and decision.allowed and decision.address is not None
        else frozenset()
    )
    token = _reset_scope.set(allowed)
    try:
        yield
    finally:
        _reset_scope.reset(token)


@contextmanager
def verification_mail_scope(row: EmailAddress) -> Iterator[None]:
    """Within this block the verification link for ``row`` passes the safety net, although
    ``row`` lost its verification to its domain (Guard's own re-verification: it checks
    the domain live first, and the link needs the owner logged in)."""
    token = _verification_scope.set(_verification_scope.get() | {row.id})
    try:
        yield
    finally:
        _verification_scope.reset(token)


@contextmanager
def recipients_loaded(guard: Guard, addresses: Iterable[str]) -> Iterator[None]:
    """Load the stored rows and domain states of ``addresses`` in one query for the mail sent
    in this block (a claim's notices): the net still judges each recipient by the same rule,
    on rows read just now, without two queries per recipient. Reset mail is not served from
    it (the reset rule reads evidence the rows alone do not hold)."""
    token = _loaded.set(stored_recipients(guard, addresses))
    try:
        yield
    finally:
        _loaded.reset(token)


def in_reset_scope() -> bool:
    """Whether the reset rule applies to mail sent now."""
    return _reset_scope.get() is not None


def _address_of(recipient: Any) -> str:
    if isinstance(recipient, (tuple, list)) and len(recipient) == 2:
        return str(recipient[1])
    return parseaddr(str(recipient))[1]


def _delivered_domain(recipient: Any) -> str | None:
    """The A-label domain Flask-Mail will deliver ``recipient`` to; ``None`` if unreadable.

    Flask-Mail encodes a Unicode domain with Python's IDNA 2003 codec and smtplib reads the
    envelope address back with :func:`~email.utils.parseaddr`. IDNA 2003 maps some letters
    that IDNA 2008 keeps (``straße.com`` goes to ``strasse.com``, another registrable domain),
    so the address judged must be the one the mail will reach.
    """
    try:
        return parse_address(parseaddr(sanitize_address(recipient))[1]).domain
    except Exception:
        return None


def recipient_allowed(guard: Guard, recipient: Any, *, strict: bool) -> bool:
    """Whether ``recipient`` (text, ``"Name <addr>"`` or ``(name, addr)``) may get this mail.

    A recipient that does not parse as an address is refused: what cannot be read cannot be
    checked (``"erin"@released.example`` is a real mailbox on a released domain). So is one
    that Flask-Mail would deliver to another domain than the one read here (IDNA 2003 against
    IDNA 2008: ``kontakt@straße.com`` is stored as ``xn--strae-oqa.com`` and sent to
    ``strasse.com``).

    :param strict: the reset rule: a stored, verified address whose domain is not unsafe for
        it, with evidence (``DOMAINGUARD_RESET_LIVE_CHECK = "evidence"``): a reset decision
        in this scope allowed it, or a recent check judged its domain ``OK`` for it.
    """
    raw = _address_of(recipient)
    try:
        parsed = parse_address(raw)
    except InvalidAddress:
        log.warning("withheld mail from a recipient that is not a valid address")
        return False
    if _delivered_domain(recipient) != parsed.domain:
        log.warning("withheld mail from a recipient that Flask-Mail would send to another domain")
        return False
    loaded = None if strict else (_loaded.get() or {}).get(parsed.normalized)
    if loaded is not None:
        row, state = loaded
        verifying = row.id in _verification_scope.get()
        return may_receive(guard, row, Purpose.ANY, verifying=verifying, state=state)
    with guard.db.session.no_autoflush:  # never flush the host's half-made changes from here
        row = find_address(guard, parsed.normalized)
        if strict:
            vouched = row is not None and row.id in (_reset_scope.get() or ())
            return may_receive(guard, row, Purpose.RESET, vouched=vouched)
        verifying = row is not None and row.id in _verification_scope.get()
        return may_receive(guard, row, Purpose.ANY, verifying=verifying)


def filter_message(guard: Guard, message: Any, *, strict: bool) -> int:
    """Drop the recipients of a Flask-Mail message that may not receive it.

    :returns: how many were dropped.
    """
    dropped = 0
    for attr in ("recipients", "cc", "bcc"):
        people = getattr(message, attr, None)
        if not people:
            continue
        kept = [r for r in people if recipient_allowed(guard, r, strict=strict)]
        dropped += len(people) - len(kept)
        setattr(message, attr, kept)
    return dropped


def _guard_for_current_app() -> Guard | None:
    state = registered_state()
    return None if state is None else state.guard


def install_mail_guard() -> None:
    """Wrap :meth:`flask_mail.Connection.send` once per process (idempotent)."""
    with _install_lock:
        original = flask_mail.Connection.send
        if getattr(original, "_domainguard", False):
            return

        @functools.wraps(original)
        def send(self: Any, message: Any, envelope_from: Any = None) -> None:
            guard = _guard_for_current_app()
            if guard is not None:
                mode = guard.settings.mail_guard
                strict = in_reset_scope()
                if mode == "all" or (mode == "reset" and strict):
                    dropped = filter_message(guard, message, strict=strict)
                    if dropped:
                        log.warning(
                            "withheld mail %r from %d unsafe recipient(s)",
                            "reset" if strict else "message",
                            dropped,
                        )
                    if not message.send_to:
                        return None
            original(self, message, envelope_from)
            return None

        send._domainguard = True  # type: ignore[attr-defined]
        flask_mail.Connection.send = send  # type: ignore[method-assign]
