"""flask-domainguard: stop account takeover by domain resurrection.

A user's email domain lapses, an attacker registers it and asks for a password reset.
DomainGuard sends resets only to verified addresses on safe domains, sweeps every
registrable domain for its lifecycle, and requires 2FA of active users.
"""

from __future__ import annotations

from .addresses.standing import AddressState
from .addresses.store import AddressError, AddressTaken, LastVerifiedAddress, UnknownAddress
from .addresses.verification import Outcome as VerificationOutcome
from .addresses.verification import (
    VerificationError,
    VerificationRateLimited,
    VerificationRefused,
)
from .config import DEFAULT_TRUSTED_DOMAINS, ConfigError
from .emails import Address, InvalidAddress, parse_address, registrable_domain
from .extension import DomainGuard
from .journal import EventKind
from .models import UnverifyReason
from .reset.decision import ResetDecision
from .reset.tokens import ResetGrant
from .status.observation import Observation
from .tokens import TokenError, TokenExpired
from .twofactor.requirement import Requirement, RequirementState, UserWithout2FA
from .verdict import Policy, Verdict, VerdictKind, judge

__all__ = [
    "DEFAULT_TRUSTED_DOMAINS",
    "Address",
    "AddressError",
    "AddressState",
    "AddressTaken",
    "ConfigError",
    "DomainGuard",
    "EventKind",
    "InvalidAddress",
    "LastVerifiedAddress",
    "Observation",
    "Policy",
    "Requirement",
    "RequirementState",
    "ResetDecision",
    "ResetGrant",
    "TokenError",
    "TokenExpired",
    "UnknownAddress",
    "UnverifyReason",
    "UserWithout2FA",
    "Verdict",
    "VerdictKind",
    "VerificationError",
    "VerificationOutcome",
    "VerificationRateLimited",
    "VerificationRefused",
    "judge",
    "parse_address",
    "registrable_domain",
]
