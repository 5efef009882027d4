"""The address API: add, make primary, remove, look up, unverify. Each change is journalled."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from .. import signals
from ..dnsevidence import fingerprint_of, proof_fingerprint
from ..dnsverdict import Baseline
from ..emails import Address, InvalidAddress, parse_address
from ..journal import EventKind, transaction
from ..models import MYSQL_DIALECTS, UnverifyReason
from ..timeutil import utcnow

if TYPE_CHECKING:
    from ..context import Guard
    from ..journal import Transaction
    from ..models import EmailAddress


class AddressError(ValueError):
    """An address operation that cannot be done, with a message the user can act on."""


class AddressTaken(AddressError):
    """The address already belongs to an account."""


class LastVerifiedAddress(AddressError):
    """Removing the address would leave the user without a verified address."""


class UnknownAddress(AddressError):
    """No such address is stored."""


def ensure_domains(guard: Guard, names: Iterable[str]) -> None:
    """Create the missing :class:`~.models.Domain` rows for ``names``, due for a check at once.

    Safe under concurrent writers: ``INSERT ... ON CONFLICT DO NOTHING`` (MySQL: ``ON
    DUPLICATE KEY UPDATE`` with no change) where the database has it, a savepoint per row
    otherwise.
    """
    db = guard.db
    Domain = guard.models.Domain
    now = utcnow()
    rows = [
        {"name": name, "created_at": now, "next_check_at": now, "statuses": "", "failures": 0}
        for name in sorted(set(names))
    ]
    if not rows:
        return
    dialect = db.session.get_bind(mapper=sa.inspect(Domain)).dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
        db.session.execute(insert(Domain).on_conflict_do_nothing(), rows)
        return
    if dialect in MYSQL_DIALECTS:
        # A no-op update on a duplicate key: MySQL's spelling of DO NOTHING (INSERT IGNORE
        # would also swallow errors that are not duplicates).
        stmt = mysql_insert(Domain)
        db.session.execute(stmt.on_duplicate_key_update(name=stmt.inserted.name), rows)
        return
    for values in rows:  # pragma: no cover - databases without ON CONFLICT
        if db.session.get(Domain, values["name"]) is None:
            try:
                with db.session.begin_nested():
                    db.session.add(Domain(**values))
            except IntegrityError:
                pass  # another writer created it first


def add_address(
    guard: Guard,
    user: Any,
    raw: str,
    *,
    primary: bool = False,
    verified: bool = False,
    actor: str = "user",
    kind: EventKind = EventKind.ADDRESS_ADDED,
) -> EmailAddress:
    """Add an address to a user and journal it.

    The user's first address becomes primary even when ``primary`` is false. A verified one
    gets its domain's DNS fingerprint as its baseline where the DNS is consulted for that
    domain (``DOMAINGUARD_DNS_EVIDENCE``; one lookup, bounded by ``DOMAINGUARD_DNS_TIMEOUT``).

    :raises flask_domainguard.emails.InvalidAddress: when ``raw`` is not a usable address.
    :raises AddressTaken: when the address is already stored (for anyone).
    """
    parsed = parse_address(raw)
    if parsed.registrable is None:  # parse_address refuses these; keep the type checker honest
        raise InvalidAddress(f"{parsed.domain} is not a domain anyone can register.")
    user_id = guard.user_id_of(user)
    baseline = _proof_baseline(guard, parsed.registrable) if verified else None
    # Two writers may race to set a primary for one user; the unique index makes one of them
    # fail, and that one simply tries again against the new state.
    for attempt in range(3):
        try:
            return _insert_address(
                guard, user_id, parsed, parsed.registrable, primary, verified, actor, kind, baseline
            )
        except IntegrityError as exc:
            if find_address(guard, parsed.normalized) is not None:
                raise AddressTaken(f"{parsed.normalized} is already in use.") from exc
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _insert_address(
    guard: Guard,
    user_id: Any,
    parsed: Address,
    registrable: str,
    primary: bool,
    verified: bool,
    actor: str,
    kind: EventKind,
    baseline: Baseline | None = None,
) -> EmailAddress:
    models = guard.models
    db = guard.db
    now = utcnow()
    with transaction(db, models) as tx:
        if find_address(guard, parsed.normalized) is not None:
            raise AddressTaken(f"{parsed.normalized} is already in use.")
        ensure_domains(guard, [registrable])
        has_primary = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(models.EmailAddress)
            .where(models.EmailAddress.user_id == user_id, models.EmailAddress.primary)
        )
        make_primary = primary or not has_primary
        if make_primary and has_primary:
            _clear_primary(guard, user_id)
        row = models.EmailAddress(
            user_id=user_id,
            address=parsed.normalized,
            host=parsed.domain,
            registrable=registrable,
            primary=make_primary,
            verified_at=now if verified else None,
            created_at=now,
            **Baseline.columns(baseline),
        )
        db.session.add(row)
        db.session.flush()
        tx.record(
            kind,
            actor=actor,
            address=row,
            signal=signals.address_added,
            primary=make_primary,
            verified=verified,
        )
    return row


def _proof_baseline(guard: Guard, registrable: str) -> Baseline | None:
    """The DNS baseline for an address proved now, where the DNS is consulted for its domain;
    ``None`` when it is not or the lookup told nothing (first seen at a later check)."""
    fingerprint = fingerprint_of(proof_fingerprint(guard, registrable))
    return None if fingerprint is None else Baseline(fingerprint, utcnow())


def _clear_primary(guard: Guard, user_id: Any) -> None:
    EmailAddress = guard.models.EmailAddress
    # Flush the UPDATE before any INSERT/UPDATE that sets a new primary: the unique index
    # on (user_id) WHERE primary must never see two rows at once.
    guard.db.session.execute(
        sa.update(EmailAddress)
        .where(EmailAddress.user_id == user_id, EmailAddress.primary)
        .values(primary=False)
        .execution_options(synchronize_session="fetch")
    )


def resolve_address(guard: Guard, address: EmailAddress | str) -> EmailAddress:
    """The stored row for ``address`` (a row passes through).

    :raises UnknownAddress: when no such address is stored.
    """
    if isinstance(address, str):
        row = find_address(guard, address)
        if row is None:
            raise UnknownAddress(f"{address} is not a stored address.")
        return row
    return address


def set_primary(guard: Guard, address: EmailAddress | str, *, actor: str = "user") -> EmailAddress:
    """Make a verified address its user's primary address.

    :raises AddressError: when the address is not verified.
    """
    with transaction(guard.db, guard.models) as tx:
        row = resolve_address(guard, address)
        if row.primary:
            return row
        if not row.verified:
            raise AddressError(f"Verify {row.address} before making it your primary address.")
        _clear_primary(guard, row.user_id)
        row.primary = True
        tx.record(
            EventKind.PRIMARY_CHANGED, actor=actor, address=row, signal=signals.primary_changed
        )
    return row


def remove_address(guard: Guard, address: EmailAddress | str, *, actor: str = "user") -> None:
    """Remove an address; a removed primary hands over to the oldest other verified address.

    :raises LastVerifiedAddress: when it is the user's last verified address.
    """
    models = guard.models
    db = guard.db
    with transaction(db, models) as tx:
        row = resolve_address(guard, address)
        others = [a for a in addresses_of(guard, row.user_id) if a.id != row.id]
        other_verified = [a for a in others if a.verified]
        if row.verified and not other_verified:
            raise LastVerifiedAddress(
                f"{row.address} is your only verified address; add and verify another first."
            )
        was_primary = row.primary
        tx.record(
            EventKind.ADDRESS_REMOVED,
            actor=actor,
            address=row,
            signal=signals.address_removed,
            was_primary=was_primary,
        )
        db.session.flush()
        # Journal rows outlive the address (they keep its text). Done here rather than by the
        # foreign key's ON DELETE SET NULL, which SQLite ignores unless the host enabled it.
        Event = models.Event
        db.session.execute(
            sa.update(Event).where(Event.address_id == row.id).values(address_id=None)
        )
        db.session.delete(row)
        db.session.flush()
        if was_primary and others:
            successor = (other_verified or others)[0]
            successor.primary = True
            tx.record(
                EventKind.PRIMARY_CHANGED,
                actor=actor,
                address=successor,
                signal=signals.primary_changed,
            )


def find_address(guard: Guard, address: str) -> EmailAddress | None:
    """The stored row for ``address`` in any spelling (case, Unicode domain), or ``None``."""
    try:
        normalized = parse_address(address).normalized
    except InvalidAddress:
        return None
    Row = guard.models.EmailAddress
    row: EmailAddress | None = guard.db.session.scalar(
        sa.select(Row).where(Row.address == normalized)
    )
    return row


def addresses_of(guard: Guard, user: Any) -> list[EmailAddress]:
    """A user's addresses, primary first, then oldest first."""
    EmailAddress = guard.models.EmailAddress
    user_id = guard.user_id_of(user)
    rows = guard.db.session.scalars(
        sa.select(EmailAddress)
        .where(EmailAddress.user_id == user_id)
        .order_by(EmailAddress.primary.desc(), EmailAddress.created_at, EmailAddress.id)
    )
    return list(rows)


def unverify(
    tx: Transaction,
    row: EmailAddress,
    reason: UnverifyReason,
    *,
    actor: str,
    **details: Any,
) -> bool:
    """Unverify ``row`` inside ``tx`` (journal row and signal included).

    :returns: ``False`` when the address was not verified (nothing changed).
    """
    if row.verified_at is None:
        return False
    now = utcnow()
    verified_at = row.verified_at
    row.verified_at = None
    row.unverified_at = now
    row.unverify_reason = reason
    tx.record(
        EventKind.ADDRESS_UNVERIFIED,
        actor=actor,
        address=row,
        signal=signals.address_unverified,
        reason=reason.value,
        verified_at=verified_at.isoformat(),
        **details,
    )
    return True


def unverify_address(
    guard: Guard,
    address: EmailAddress | str,
    *,
    reason: UnverifyReason | str,
    actor: str,
    **details: Any,
) -> bool:
    """Unverify a stored address in its own transaction: a bounce, an administrator's call.

    :param reason: an :class:`~.models.UnverifyReason` or its value (``"bounce"``, ``"manual"``).
    :param actor: who decided, for the journal (``admin:<name>``, ``bounce:<provider>``).
    :returns: ``False`` when the address was not verified (nothing changed, nothing journalled).
    :raises UnknownAddress: no such stored address.
    :raises ValueError: an unknown reason, or an empty actor.
    """
    try:
        why = UnverifyReason(reason)
    except ValueError:
        known = ", ".join(r.value for r in UnverifyReason)
        raise ValueError(f"unknown unverify reason {reason!r}; known: {known}") from None
    if not actor.strip():
        raise ValueError("actor must say who unverified the address, e.g. 'admin:carol'")
    with transaction(guard.db, guard.models) as tx:
        row = resolve_address(guard, address)
        return unverify(tx, row, why, actor=actor.strip()[:120], **details)
