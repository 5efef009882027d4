"""The extension's tables, created in the host's own Flask-SQLAlchemy ``db``.

The host's user table is never changed: our tables point at its primary key, whatever its
type (integer, string, UUID). Because that key's type is only known once the host hands us
its ``user_model``, the mapped classes are built per ``db`` by :func:`define_models` from the
typed column templates below, and each guard has its own at ``guard.models``::

    EmailAddress = guard.models.EmailAddress
    db.session.scalars(sa.select(EmailAddress).where(EmailAddress.verified_at.is_(None)))

Type checkers know the templates by the public names (``EmailAddress``, ``Domain``, ...), so
``from flask_domainguard.models import EmailAddress`` serves annotations under
``TYPE_CHECKING``. At run time that import fails at once with a message naming
``guard.models.EmailAddress``: a module-level name cannot know which app's guard is meant,
and an unmapped template would only fail later, inside a query.

Long because the mapped classes are built together per ``db`` (:func:`define_models`) and their
column templates must sit beside it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, declared_attr, mapped_column
from typing_extensions import TypeVar

from .timeutil import as_utc

if TYPE_CHECKING:
    from flask_sqlalchemy.pagination import Pagination
    from typing_extensions import Self

PREFIX = "domainguard_"

#: Databases DomainGuard runs on (SQLAlchemy dialect names; "mariadb" is the dialect of
#: ``mariadb://`` URLs, "mysql" that of ``mysql://`` URLs for MySQL 8 and MariaDB alike).
SUPPORTED_DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb")
MYSQL_DIALECTS = ("mysql", "mariadb")


def check_dialect(name: str) -> None:
    """Raise when the database is one DomainGuard has not been built and tested for.

    :raises RuntimeError: naming the supported databases.
    """
    if name not in SUPPORTED_DIALECTS:
        raise RuntimeError(
            f"DomainGuard does not support the {name!r} database: its rate limits, single-use "
            "tokens and sweep leases need SQLite, PostgreSQL, MySQL 8 or MariaDB 10.6+. "
            "Point SQLALCHEMY_DATABASE_URI at one of those."
        )


#: The host's user model, as ``DomainGuard[User]`` sees it. Defaults to ``Any`` so that a
#: bare ``DomainGuard`` annotation stays valid under ``mypy --strict``.
UserT = TypeVar("UserT", default=Any)

if TYPE_CHECKING:
    _RowT = TypeVar("_RowT")

    class HostQuery(sa.orm.Query[_RowT]):
        """Flask-SQLAlchemy's legacy ``Model.query`` typed by the row class (its own query
        class is untyped). New code can prefer ``db.session.scalars(sa.select(Row)...)``."""

        def get_or_404(self, ident: Any, description: str | None = None) -> _RowT: ...
        def first_or_404(self, description: str | None = None) -> _RowT: ...
        def one_or_404(self, description: str | None = None) -> _RowT: ...
        def paginate(
            self,
            *,
            page: int | None = None,
            per_page: int | None = None,
            max_per_page: int | None = None,
            error_out: bool = True,
            count: bool = True,
        ) -> Pagination: ...


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on databases with and without time zones (SQLite,
    MySQL/MariaDB).

    In the database it is exactly ``sa.DateTime(timezone=True)``, and that is how Alembic's
    autogenerate writes it: migrations then run as generated, with nothing of this package
    to import (see :meth:`__repr__`).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Alembic writes a type of a module outside SQLAlchemy as f"{type.__module__}.{type!r}",
        # which needs an import the generated file lacks. The schema is the plain column type,
        # so name it as migration files import SQLAlchemy ("import sqlalchemy as sa"). Only
        # this instance attribute changes; the class keeps its module for pickling and docs.
        self.__module__ = "sa"

    def __repr__(self) -> str:
        return "DateTime(timezone=True)"

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in MYSQL_DIALECTS:
            # MySQL's DATETIME drops (MariaDB) or rounds (MySQL) microseconds unless asked.
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        # SQLite and MySQL keep no offset; store naive UTC so comparisons in SQL stay correct.
        naive = dialect.name == "sqlite" or dialect.name in MYSQL_DIALECTS
        return value.replace(tzinfo=None) if naive else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class UnverifyReason(str, enum.Enum):
    """Why an address lost its verified state."""

    DOMAIN_RELEASED = "domain_released"
    DOMAIN_EXPIRED = "domain_expired"
    DOMAIN_REREGISTERED = "domain_reregistered"
    DNS_CHANGED = "dns_changed"
    """Its domain's name servers and mail servers all changed since the address was proved."""
    MANUAL = "manual"
    BOUNCE = "bounce"


#: Unverify reasons that put the domain, not the mailbox, in doubt.
DOMAIN_REASONS = frozenset(
    {
        UnverifyReason.DOMAIN_RELEASED,
        UnverifyReason.DOMAIN_EXPIRED,
        UnverifyReason.DOMAIN_REREGISTERED,
        UnverifyReason.DNS_CHANGED,
    }
)


def _enum(cls: type[enum.Enum], name: str) -> sa.Enum:
    # Stored as the value strings with a CHECK-free VARCHAR so new members need no migration.
    return sa.Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda members: [m.value for m in members],
    )


#: Table options for MySQL/MariaDB (ignored elsewhere): full Unicode, and binary comparison
#: as on SQLite and PostgreSQL, whatever the database's default collation (often a
#: case-insensitive one, under which distinct tokens or names could compare equal).
TABLE_OPTIONS = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _not_mysql(
    ddl: Any,
    target: Any,
    bind: Any,
    tables: Any = None,
    state: Any = None,
    *,
    dialect: Dialect,
    compiler: Any = None,
    checkfirst: bool = False,
) -> bool:
    return dialect.name not in MYSQL_DIALECTS


def _one_primary_on_mysql(user_pk: sa.Column[Any]) -> Any:
    """MySQL/MariaDB have no partial index: the one-primary rule there is a unique index on a
    virtual column that holds the user id of the primary address and NULL for the others."""

    def create(target: sa.Table, connection: sa.Connection, **kw: Any) -> None:
        if connection.dialect.name not in MYSQL_DIALECTS:
            return
        user_id_type = user_pk.type.compile(dialect=connection.dialect)
        connection.execute(
            sa.text(
                f"ALTER TABLE {target.name} ADD COLUMN primary_user_id {user_id_type} "
                "AS (CASE WHEN is_primary THEN user_id END) VIRTUAL, "
                f"ADD UNIQUE INDEX {PREFIX}one_primary_per_user (primary_user_id)"
            )
        )

    return create


class _Row:
    """Typing aid: the mapped subclasses accept their columns as keyword arguments and have
    Flask-SQLAlchemy's ``query`` (``guard.models.EmailAddress.query.filter_by(...)``)."""

    if TYPE_CHECKING:
        query: ClassVar[HostQuery[Self]]

        def __init__(self, **columns: Any) -> None: ...


class _EmailAddress(_Row):
    """One address of one user; at most one primary per user (enforced by a partial index)."""

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    address: Mapped[str] = mapped_column(sa.String(320), unique=True)
    """The normalised address (:attr:`flask_domainguard.emails.Address.normalized`)."""
    host: Mapped[str] = mapped_column(sa.String(253))
    """The A-label host part."""
    primary: Mapped[bool] = mapped_column("is_primary", sa.Boolean, default=False, nullable=False)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    unverified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    unverify_reason: Mapped[UnverifyReason | None] = mapped_column(
        _enum(UnverifyReason, "domainguard_unverify_reason"), nullable=True
    )
    expiry_warned_for: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """The expiry date the owner was last warned about (one warning per expiry date)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # The DNS fingerprint of the domain at this address's proof (its baseline), kept with the
    # address so a newer address on the domain never replaces it. See dnsverdict.py.
    dns_baseline_ns: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    dns_baseline_mx: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    dns_baseline_ds: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    dns_baseline_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When the baseline was recorded; ``None``: no baseline yet."""
    dns_baseline_kind: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    """``verification`` (recorded with the proof) or ``first_seen`` (at a later check)."""

    if TYPE_CHECKING:  # the columns are added by define_models
        user_id: Mapped[Any]
        registrable: Mapped[str]

    @property
    def verified(self) -> bool:
        """Whether the address is verified now."""
        return self.verified_at is not None

    def __repr__(self) -> str:
        state = "verified" if self.verified else "unverified"
        return f"<EmailAddress {self.address} {state}{' primary' if self.primary else ''}>"


class _Domain(_Row):
    """One registrable domain: the last observation, the verdict and the sweep schedule."""

    name: Mapped[str] = mapped_column(sa.String(253), primary_key=True)
    registered: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    statuses: Mapped[str] = mapped_column(sa.String(500), default="", nullable=False)
    """Observed statuses, space separated with ``|`` between names (names contain spaces)."""
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    registered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    transferred_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    source: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    verdict: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    verdict_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    verdict_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    unsafe_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When an unsafe verdict was first seen in the current run of unsafe checks."""
    lapse_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When a lapse signal was first seen; cleared once the domain is seen renewed."""
    changed_hands_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When the domain was seen changing hands after a lapse (never cleared): addresses
    verified before it are ``reregistered`` until verified again."""
    dns_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When the DNS was last read successfully (``DOMAINGUARD_DNS_EVIDENCE``)."""
    dns_delegated: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    dns_ns: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    """Name servers seen then, space separated (as the MX and DS columns)."""
    dns_mx: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    dns_ds: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    dns_lapse_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When the domain was first seen without a delegation; cleared once seen delegated."""
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    failures: Mapped[int] = mapped_column(sa.Integer, default=0, nullable=False)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    @property
    def status_set(self) -> frozenset[str]:
        """The observed statuses as a set."""
        return frozenset(s for s in self.statuses.split("|") if s)

    def __repr__(self) -> str:
        return f"<Domain {self.name} {self.verdict or 'unchecked'}>"


class _Event(_Row):
    """The journal: one row per security-relevant state change, written in its transaction."""

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(64), index=True)
    address: Mapped[str | None] = mapped_column(sa.String(320), nullable=True, index=True)
    """The address concerned, as text: it outlives a removed address row."""
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict, nullable=False)
    actor: Mapped[str] = mapped_column(sa.String(120), nullable=False)
    """Who caused it: ``user``, ``sweep``, ``admin:<name>``, ``system``, ``requester``."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)

    if TYPE_CHECKING:  # added by define_models
        user_id: Mapped[Any]
        address_id: Mapped[int | None]

    def __repr__(self) -> str:
        return f"<Event {self.kind} {self.address or ''} by {self.actor}>"


class _UserState(_Row):
    """Per-user facts the host's table does not hold: last login (for the 2FA rule)."""

    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    twofactor_required_from: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When the user was first told to enrol (start of the 2FA grace window)."""
    # -- after a reset (issue 13): sessions, password changes, "this wasn't me" -------------
    session_epoch: Mapped[int] = mapped_column(
        sa.Integer, default=0, server_default="0", nullable=False
    )
    """Raised to end every session and remember cookie of the user at once."""
    password_fingerprint: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    """A digest of the password hash as last seen, so a change nobody announced shows."""
    reset_mailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When a reset link was last mailed for the user (a change after it completed a reset)."""
    reset_mailed_via: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    """The address id that reset link went to."""
    password_reset_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When a reset last changed the password."""
    password_reset_via: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    """The address id of that reset."""
    password_locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """Set by "this wasn't me": the password of that moment no longer logs in; a reset ends it."""

    if TYPE_CHECKING:  # added by define_models
        user_id: Mapped[Any]


class _TOTPDevice(_Row):
    """A user's TOTP secret, encrypted at rest; active once confirmed."""

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    secret_encrypted: Mapped[str] = mapped_column(sa.Text, nullable=False)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_step: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    """The last accepted time step: a code from it or earlier is a replay."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    if TYPE_CHECKING:  # added by define_models
        user_id: Mapped[Any]


class _RecoveryCode(_Row):
    """One single-use recovery code, stored hashed."""

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    if TYPE_CHECKING:  # added by define_models
        user_id: Mapped[Any]


class _RateCounter(_Row):
    """A fixed-window attempt counter shared by every worker process through the database."""

    key: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    count: Mapped[int] = mapped_column(sa.Integer, nullable=False)


class _Attempt(_Row):
    """One second-factor attempt of a (hashed) user or client key, for the sliding window."""

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class _Lockout(_Row):
    """The current or last lockout of a (hashed) key and how far it has escalated."""

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    level: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class _UsedToken(_Row):
    """Digests of single-use tokens already spent, kept until they would have expired."""

    digest: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class _HeldAction(_Row):
    """An unverification the circuit breaker held for a person to review."""

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    address_id: Mapped[int] = mapped_column(sa.Integer, nullable=False, index=True)
    domain: Mapped[str] = mapped_column(sa.String(253), nullable=False)
    reason: Mapped[UnverifyReason] = mapped_column(
        _enum(UnverifyReason, "domainguard_held_reason"), nullable=False
    )
    verdict_reason: Mapped[str] = mapped_column(sa.Text, nullable=False)
    held_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolution: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    """``None`` while held for review; ``planned`` while a sweep run decides (see
    :mod:`flask_domainguard.sweep`); then ``applied``, ``dismissed`` or ``obsolete``."""
    run_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, index=True)
    """The sweep run that planned it: the circuit breaker counts a run's actions by it."""


class _Job(_Row):
    """One unit of work in the durable job table (the transactional outbox).

    Written in the same transaction as the state change that causes it; workers claim rows
    with leases, run them, retry them with backoff and mark them done (see
    :mod:`flask_domainguard.jobs`). The payload never holds a token or a secret.
    """

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    """``reset_request``, ``verification_mail``, ``expiry_warning`` or ``unverify_notice``."""
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict, nullable=False)
    address: Mapped[str | None] = mapped_column(sa.String(320), nullable=True)
    """The normalised address a reset request names (whether or not it is stored): the
    shedder finds requests for unknown addresses by it."""
    dedupe_key: Mapped[str | None] = mapped_column(sa.String(128), nullable=True, unique=True)
    """Set while the job waits for its first run: a second request for the same work joins it
    (:attr:`requests`) instead of adding a row."""
    requests: Mapped[int] = mapped_column(sa.Integer, default=1, nullable=False)
    """How many requests this job answers (coalesced requests for the same address)."""
    state: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    """``pending`` (waiting, or running under a lease), ``done``, ``failed`` (gave up after
    ``DOMAINGUARD_JOBS_MAX_ATTEMPTS``) or ``shed`` (dropped under load, see the journal)."""
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, nullable=False)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When the job left the ``pending`` state (done, failed or shed)."""

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.kind} {self.state}>"


class _SweepRun(_Row):
    """One sweep run: when it started and ended, and what it reported (``flask domainguard
    status``). A run killed before its end keeps ``finished_at`` empty."""

    run_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    outcome: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    """``running``, then the exit code's name (``ok``, ``lookups_failed``, ...) or ``crashed``."""
    exit_code: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    report: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict, nullable=False)
    """The run's ``--json`` report."""


_TEMPLATES: dict[str, type[_Row]] = {
    "EmailAddress": _EmailAddress,
    "Domain": _Domain,
    "Event": _Event,
    "UserState": _UserState,
    "TOTPDevice": _TOTPDevice,
    "RecoveryCode": _RecoveryCode,
    "RateCounter": _RateCounter,
    "UsedToken": _UsedToken,
    "HeldAction": _HeldAction,
    "Job": _Job,
    "SweepRun": _SweepRun,
    "Attempt": _Attempt,
    "Lockout": _Lockout,
}

if TYPE_CHECKING:
    # The names annotations use; at run time they resolve through guard.models instead.
    EmailAddress = _EmailAddress
    Domain = _Domain
    Event = _Event
    UserState = _UserState
    TOTPDevice = _TOTPDevice
    RecoveryCode = _RecoveryCode
    RateCounter = _RateCounter
    UsedToken = _UsedToken
    HeldAction = _HeldAction
    Job = _Job
    SweepRun = _SweepRun
    Attempt = _Attempt
    Lockout = _Lockout


class MappedClassError(ImportError):
    """A mapped class was imported from this module instead of taken from ``guard.models``."""


def __getattr__(name: str) -> Any:
    if name in _TEMPLATES:
        raise MappedClassError(
            f"flask_domainguard.models.{name} is not a mapped class: DomainGuard maps its "
            f"tables per guard, in your db. Use guard.models.{name} (e.g. "
            f"{name} = guard.models.{name}, then sa.select({name})); for type annotations "
            f"only, import it under `if TYPE_CHECKING:`.",
            name=name,
            path=__file__,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Models:
    """The mapped classes bound to one host ``db``."""

    EmailAddress: type[EmailAddress]
    Domain: type[Domain]
    Event: type[Event]
    UserState: type[UserState]
    TOTPDevice: type[TOTPDevice]
    RecoveryCode: type[RecoveryCode]
    RateCounter: type[RateCounter]
    UsedToken: type[UsedToken]
    HeldAction: type[HeldAction]
    Job: type[Job]
    SweepRun: type[SweepRun]
    Attempt: type[Attempt]
    Lockout: type[Lockout]
    user_model: type[Any]
    user_pk: sa.Column[Any]


#: Models by ``id(db)``; the db is kept too, so its id cannot be reused by a later db.
_registry: dict[int, tuple[Any, Models]] = {}


def _user_pk_column(user_model: type[Any]) -> sa.Column[Any]:
    mapper = sa.inspect(user_model, raiseerr=False)
    if mapper is None:
        raise TypeError(
            f"user_model={user_model!r} is not a mapped SQLAlchemy model; pass the host's "
            "User class (a db.Model subclass)."
        )
    keys = mapper.primary_key
    if len(keys) != 1:
        raise TypeError(
            f"{user_model.__name__} has a composite primary key; DomainGuard needs a single "
            "primary key column on the user model."
        )
    return cast("sa.Column[Any]", keys[0])


def define_models(db: Any, user_model: type[Any]) -> Models:
    """Build (once per ``db``) the extension's mapped classes in ``db``'s metadata.

    :param db: the host's ``flask_sqlalchemy.SQLAlchemy`` instance.
    :param user_model: the host's user model; our tables reference its primary key.
    """
    entry = _registry.get(id(db))
    cached = entry[1] if entry is not None and entry[0] is db else None
    if cached is not None:
        if cached.user_model is not user_model:
            raise ValueError(
                "DomainGuard models were already defined on this db for "
                f"{cached.user_model.__name__}; one db serves one user model."
            )
        return cached

    user_pk = _user_pk_column(user_model)
    user_table = user_pk.table.name
    fk_target = f"{user_table}.{user_pk.name}"

    def user_fk(*, unique: bool = False, nullable: bool = False, ondelete: str = "CASCADE") -> Any:
        return mapped_column(
            "user_id",
            user_pk.type.copy(),
            sa.ForeignKey(fk_target, ondelete=ondelete),
            nullable=nullable,
            unique=unique,
            index=not unique,
        )

    base = db.Model

    class EmailAddressRow(_EmailAddress, base):  # type: ignore[valid-type,misc]
        __tablename__ = PREFIX + "email_address"
        user_id: Mapped[Any] = user_fk()
        registrable: Mapped[str] = mapped_column(
            sa.String(253), sa.ForeignKey(PREFIX + "domain.name"), nullable=False, index=True
        )

        @declared_attr.directive
        def __table_args__(cls) -> tuple[Any, ...]:
            only_primary = sa.text("is_primary")
            return (
                # At most one primary address per user, enforced by the database (on MySQL
                # by _one_primary_on_mysql instead).
                sa.Index(
                    PREFIX + "one_primary_per_user",
                    "user_id",
                    unique=True,
                    sqlite_where=only_primary,
                    postgresql_where=only_primary,
                ).ddl_if(callable_=_not_mysql),
                TABLE_OPTIONS,
            )

    class DomainRow(_Domain, base):  # type: ignore[valid-type,misc]
        __tablename__ = PREFIX + "domain"
        __table_args__ = (
            sa.Index(PREFIX + "domain_due", "next_check_at", "lease_until"),
            TABLE_OPTIONS,
        )

    class EventRow(_Event, base):  # type: ignore[valid-type,misc]
        __tablename__ = PREFIX + "event"
        __table_args__ = TABLE_OPTIONS
        user_id: Mapped[Any] = user_fk(nullable=True, ondelete="SET NULL")
        address_id: Mapped[int | None] = mapped_column(
            sa.Integer,
            sa.ForeignKey(PREFIX + "email_address.id", ondelete="SET NULL"),
            nullable=True,
            index=True,
        )

    class UserStateRow(_UserState, base):  # type: ignore[valid-type,misc]
        __tablename__ = PREFIX + "user_state"
        __table_args__ = TABLE_OPTIONS
        user_id: Mapped[Any] = mapped_column(
            user_pk.type.copy(),
            sa.ForeignKey(fk_target, ondelete="CASCADE"),
            primary_key=True,
        )

    class TOTPDeviceRow(_TOTPDevice, base):  # type: ignore[valid-type,misc]
        __tablename__ = PREFIX + "totp_device"
        __table_args__ = TABLE_OPTIONS
        user_id: Mapped[Any] = user_fk(unique=True)

    class RecoveryCodeRow(_RecoveryCode, base):  # type: ignore[valid-type,misc]
        __tablename__ = PREFIX + "recovery_code"
        __table_args__ = TABLE_OPTIONS
        user_id: Mapped[Any] = user_fk()

    class RateCounterRow(_RateCounter, base):  # type: ignore[valid-type,misc]
        __tablename__ = PREFIX + "rate_counter"
        __table_args__ = TABLE_OPTIONS

    class UsedTokenRow(_UsedToken, base):  # type: ignore[valid-type,misc]
        __tablename__ = PREFIX + "used_token"
        __table_args__ = TABLE_OPTIONS

    class HeldActionRow(_HeldAction, base):  # type: ignore[valid-type,misc]
        __tablename__ = PREFIX + "held_action"
        __table_args__ = TABLE_OPTIONS

    sa.event.listen(EmailAddressRow.__table__, "after_create", _one_primary_on_mysql(user_pk))

    class JobRow(_Job, base):  # type: ignore[valid-type,misc]
        __tablename__ = PREFIX + "job"
        # Claims read pending rows in order of when they may run.
        __table_args__ = (sa.Index(PREFIX + "job_due", "state", "not_before"),)

    class SweepRunRow(_SweepRun, base):  # type: ignore[valid-type,misc]
        __tablename__ = PREFIX + "sweep_run"

    class AttemptRow(_Attempt, base):  # type: ignore[valid-type,misc]
        __tablename__ = PREFIX + "attempt"
        __table_args__ = (sa.Index(PREFIX + "attempt_key_at", "key", "at"),)

    class LockoutRow(_Lockout, base):  # type: ignore[valid-type,misc]
        __tablename__ = PREFIX + "lockout"

    for row, name in (
        (EmailAddressRow, "EmailAddress"),
        (DomainRow, "Domain"),
        (EventRow, "Event"),
        (UserStateRow, "UserState"),
        (TOTPDeviceRow, "TOTPDevice"),
        (RecoveryCodeRow, "RecoveryCode"),
        (RateCounterRow, "RateCounter"),
        (UsedTokenRow, "UsedToken"),
        (HeldActionRow, "HeldAction"),
        (JobRow, "Job"),
        (SweepRunRow, "SweepRun"),
        (AttemptRow, "Attempt"),
        (LockoutRow, "Lockout"),
    ):
        row.__name__ = row.__qualname__ = name

    models = Models(
        EmailAddress=EmailAddressRow,
        Domain=DomainRow,
        Event=EventRow,
        UserState=UserStateRow,
        TOTPDevice=TOTPDeviceRow,
        RecoveryCode=RecoveryCodeRow,
        RateCounter=RateCounterRow,
        UsedToken=UsedTokenRow,
        HeldAction=HeldActionRow,
        Job=JobRow,
        SweepRun=SweepRunRow,
        Attempt=AttemptRow,
        Lockout=LockoutRow,
        user_model=user_model,
        user_pk=user_pk,
    )
    _registry[id(db)] = (db, models)
    return models
