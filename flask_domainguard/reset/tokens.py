"""Reset tokens: issued for the mail, read by the reset page, spent by :func:`complete_reset`.

A token is bound to the user, the address it was mailed to and the user's password hash, so
a changed password kills every link issued before; it is single-use, and dies with the
address's standing (unverified, or its domain found unsafe since).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic

from .. import passwords, tokens
from ..journal import transaction
from ..mail.recipients import is_safe_recipient
from ..models import UserT
from ..users import password_hash_of

if TYPE_CHECKING:
    from ..context import Guard
    from ..models import EmailAddress


def _password_hash(guard: Guard, user: Any) -> str:
    return password_hash_of(guard, user) or ""


def _binding_text(guard: Guard, user: Any, row: EmailAddress) -> str:
    # The password hash is in here, so a changed password (by this reset or any other way)
    # kills every reset link issued before the change.
    return f"{guard.user_id_of(user)}|{row.address}|{_password_hash(guard, user)}"


def reset_token(guard: Guard, user: Any, row: EmailAddress) -> str:
    """A reset token for ``user`` mailed to ``row``: bound to both and to the password hash."""
    return tokens.issue(
        tokens.RESET,
        {
            "u": str(guard.user_id_of(user)),
            "a": row.id,
            "b": tokens.bind(tokens.RESET, _binding_text(guard, user, row)),
        },
    )


@dataclass(frozen=True)
class ResetGrant(Generic[UserT]):
    """A reset token that checked out: whose password it may set, and the address it went to."""

    user: UserT
    address: EmailAddress
    token: tokens.Token


def read_reset_token(guard: Guard, token: str) -> ResetGrant[UserT]:
    """Check a reset token: signature, age, bindings, single use, and the address still safe.

    :raises flask_domainguard.tokens.TokenError: when any of these fail (one message for all
        but "expired").
    """
    checked = tokens.read(tokens.RESET, token, lifetime=guard.settings.reset_within)
    invalid = tokens.TokenError("This link is no longer valid. Ask for a new one.")
    row_id = checked.claims.get("a")
    row = guard.db.session.get(guard.models.EmailAddress, row_id) if type(row_id) is int else None
    if row is None or str(row.user_id) != checked.claims.get("u"):
        raise invalid
    user = guard.get_user(row.user_id)
    if user is None:
        raise invalid
    if not tokens.bound_to(tokens.RESET, _binding_text(guard, user, row), checked.claims.get("b")):
        raise invalid
    # The address may have lost its standing since the mail went out (the sweep unverified
    # it, its domain was found unsafe): the link dies with it.
    if not is_safe_recipient(guard, row) or tokens.is_used(guard, checked):
        raise invalid
    return ResetGrant(user, row, checked)


def complete_reset(guard: Guard, token: str, new_password: str) -> Any:
    """Set a new password through ``guard.password_setter``; the token is spent with it.

    Never logs the user in: they log in with the new password, and 2FA, as always. What
    follows every password change follows (:func:`flask_domainguard.passwords.password_changed`):
    other sessions end, the other safe addresses get a "this wasn't me" link.

    :returns: the user.
    :raises flask_domainguard.tokens.TokenError: the token is not (or no longer) good.
    :raises ValueError: the host's setter refused the password (its message is shown).
    :raises RuntimeError: no password setter is registered.
    """
    setter = guard.password_setter
    if setter is None:
        raise RuntimeError(
            "DomainGuard's reset pages need to know how to store a password: register it with "
            "@guard.set_password_setter (def store(user, new_password): ...)."
        )
    grant = read_reset_token(guard, token)
    with transaction(guard.db, guard.models) as tx:
        if not tokens.consume(guard, grant.token):
            raise tokens.TokenError("This link was already used. Ask for a new one.")
        setter(grant.user, new_password)
        change = passwords.record_change(tx, guard, grant.user, actor="user", via=grant.address)
    # Other sessions end, the other safe addresses get "this wasn't me" (guard.password_changed).
    passwords.after_change(guard, grant.user, change)
    return grant.user
