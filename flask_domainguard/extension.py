"""The :class:`DomainGuard` extension object: configuration, models and wiring into an app.

Long because :class:`DomainGuard`'s methods are the public API: each is a documented one-line door
into a feature package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

import sqlalchemy as sa
from flask import Flask, current_app
from flask_mail import Mail

from . import passwords, users
from .addresses import standing, verification
from .addresses import store as address_store
from .background import jobs_for
from .cli import domainguard_cli
from .config import Settings, apply_defaults, load_settings
from .context import EXTENSION_KEY, AppState, PasswordChecker, PasswordSetter, app_state
from .links import check_link_base, external_link
from .mail.safetynet import install_mail_guard, reset_mail_scope
from .models import Models, UserT, check_dialect, define_models
from .reset import decision, flow, hostview
from .reset import tokens as reset_tokens
from .status import create_backend
from .twofactor import devices, gate, requirement
from .twofactor.fresh import require_fresh_2fa
from .views import register_views

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from flask.typing import ResponseReturnValue

    from .addresses.standing import AddressState
    from .addresses.verification import Outcome
    from .models import EmailAddress, UnverifyReason
    from .reset.decision import ResetDecision
    from .reset.tokens import ResetGrant
    from .status.base import StatusBackend

log = logging.getLogger(__name__)

# A decorated view's parameters and return type, kept by the decorators below.
_P = ParamSpec("_P")
_R = TypeVar("_R")


class DomainGuard(Generic[UserT]):
    """Guard a Flask app's password resets against resurrected email domains.

    ::

        db = SQLAlchemy(app)
        guard = DomainGuard(app, db=db, user_model=User)

    or, with an application factory, ``guard = DomainGuard(db=db, user_model=User)`` at module
    level and ``guard.init_app(app)`` in the factory (after ``db.init_app(app)``).

    :param app: the app to set up now, or ``None`` to call :meth:`init_app` later.
    :param db: the host's ``flask_sqlalchemy.SQLAlchemy`` instance; our tables live in it.
    :param user_model: the host's user model; its table is never changed. Type checkers see
        ``DomainGuard[User]``, so :meth:`get_user` and ``ResetDecision.user`` are ``User``.
    """

    def __init__(self, app: Flask | None = None, *, db: Any, user_model: type[UserT]) -> None:
        self.db = db
        self.user_model = user_model
        self.models: Models = define_models(db, user_model)
        pk = self.models.user_pk
        self._user_pk_attr: str = sa.inspect(user_model).get_property_by_column(pk).key
        self.password_setter: PasswordSetter | None = None
        self.password_checker: PasswordChecker | None = None
        if app is not None:
            self.init_app(app)

    # -- setup ---------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Validate ``DOMAINGUARD_*`` config and register models, CLI, views and hooks on ``app``.

        :raises RuntimeError: when DomainGuard is already registered on ``app``, ``db`` is not,
            or the database is not one DomainGuard supports (SQLite, PostgreSQL, MySQL/MariaDB).
        :raises flask_domainguard.config.ConfigError: for an unknown key or a bad value, or
            when neither ``DOMAINGUARD_EXTERNAL_URL`` nor ``SERVER_NAME`` says where mailed
            links point (allowed only with ``app.debug`` or ``app.testing``).
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "DomainGuard is already registered on this app. Create one DomainGuard and "
                "call init_app(app) once per app."
            )
        if app.extensions.get("sqlalchemy") is not self.db:
            raise RuntimeError(
                "The db passed to DomainGuard is not registered on this app. Call "
                "db.init_app(app) before guard.init_app(app)."
            )
        with app.app_context():
            # The engine exists once db.init_app ran; making it does not connect.
            check_dialect(app.extensions["sqlalchemy"].engine.dialect.name)
        apply_defaults(app.config)
        settings = load_settings(app.config)
        check_link_base(app, settings)
        app.extensions[EXTENSION_KEY] = AppState(guard=self, settings=settings)
        if settings.reset_live_check != "evidence":
            log.warning(
                "DOMAINGUARD_RESET_LIVE_CHECK = %r: password resets may be mailed without "
                "evidence that the address's domain is still its owner's (the default "
                "'evidence' refuses them when a lookup fails)",
                settings.reset_live_check,
            )

        if app.config.get("WTF_CSRF_ENABLED") is False and not app.testing:
            log.warning(
                "WTF_CSRF_ENABLED = False turns off the CSRF checks of DomainGuard's forms and "
                "of guarded_reset_request too: its reset, 2FA and undo forms can be posted "
                "from other sites"
            )

        if "mail" not in app.extensions:
            Mail(app)

        if settings.mail_guard != "off":
            # Once per process, and only when an app asks for it; the wrapper still checks
            # each app's own setting (a no-op for apps without DomainGuard or with "off").
            install_mail_guard()

        app.cli.add_command(domainguard_cli)

        register_views(app, settings)

        gate.init_app(app, self)

        # A process that starts after another died drains what that one left in the job table.
        app.before_request(lambda: jobs_for().start_if_work())

    # -- per-app state -------------------------------------------------------------------

    @staticmethod
    def _state(app: Flask | None = None) -> AppState:
        return app_state(app)

    @property
    def settings(self) -> Settings:
        """The current app's validated settings."""
        return self._state().settings

    def status_backend(self, name: str | None = None) -> StatusBackend:
        """The current app's status backend (``DOMAINGUARD_STATUS_BACKEND`` unless ``name``)."""
        state = self._state()
        key = name or state.settings.status_backend
        backend = state.backends.get(key)
        if backend is None:
            backend = create_backend(
                state.settings, name=key, instance_path=current_app.instance_path
            )
            state.backends[key] = backend
        return backend

    def set_password_setter(self, setter: PasswordSetter) -> PasswordSetter:
        """Register how the host stores a new password (usable as a decorator)."""
        self.password_setter = setter
        return setter

    def set_password_checker(self, checker: PasswordChecker) -> PasswordChecker:
        """Register how the host checks a password (usable as a decorator).

        Without one, werkzeug's ``check_password_hash`` reads ``DOMAINGUARD_PASSWORD_HASH_ATTR``.
        """
        self.password_checker = checker
        return checker

    def external_link(self, endpoint: str, **values: Any) -> str:
        """An absolute URL for ``endpoint`` on ``DOMAINGUARD_EXTERNAL_URL`` (or ``SERVER_NAME``).

        For links a host mails itself (its own reset page): never built on the request's
        ``Host`` header, and usable outside requests. See :mod:`flask_domainguard.links`.
        """
        return external_link(endpoint, **values)

    # -- users ---------------------------------------------------------------------------

    def user_id_of(self, user: Any) -> Any:
        """The primary key of a host user object (or the key itself, passed through)."""
        if isinstance(user, self.user_model):
            return getattr(user, self._user_pk_attr)
        return user

    def get_user(self, user_id: Any) -> UserT | None:
        """Load a host user by primary key, or ``None``."""
        user: UserT | None = self.db.session.get(self.user_model, user_id)
        return user

    # -- addresses (see :mod:`flask_domainguard.addresses.store`) ------------------------

    def add_address(
        self, user: Any, address: str, *, primary: bool = False, verified: bool = False
    ) -> EmailAddress:
        """Add ``address`` to ``user``; see :func:`.addresses.store.add_address`."""
        return address_store.add_address(
            self, user, address, primary=primary, verified=verified, actor="user"
        )

    def set_primary(self, address: EmailAddress | str) -> EmailAddress:
        """Make a verified address its user's primary one."""
        return address_store.set_primary(self, address)

    def remove_address(self, address: EmailAddress | str) -> None:
        """Remove an address; never the user's last verified one."""
        address_store.remove_address(self, address)

    def unverify(
        self,
        address: EmailAddress | str,
        *,
        reason: UnverifyReason | str,
        actor: str,
        **details: Any,
    ) -> bool:
        """Unverify ``address`` (a bounce, an administrator's decision); journalled, signalled.

        The address stops receiving resets and notices at once; its owner verifies it again
        with a new link. See :func:`flask_domainguard.addresses.store.unverify_address`.

        :returns: ``False`` when it was not verified (nothing changed).
        """
        return address_store.unverify_address(self, address, reason=reason, actor=actor, **details)

    def find_address(self, address: str) -> EmailAddress | None:
        """The stored row for ``address`` (any spelling), or ``None``."""
        return address_store.find_address(self, address)

    def addresses_of(self, user: Any) -> list[EmailAddress]:
        """A user's addresses, primary first, then oldest first."""
        return address_store.addresses_of(self, user)

    # -- two-factor authentication (see :mod:`flask_domainguard.twofactor`) --------------

    def twofactor_enabled(self, user: Any) -> bool:
        """Whether ``user`` (or a user id) has confirmed TOTP 2FA."""
        return devices.twofactor_enabled(self, user)

    def is_second_factor_pending(self) -> bool:
        """Whether the current session passed the password but not yet the 2FA step."""
        return gate.is_second_factor_pending()

    def twofactor_requirement(self, user: Any) -> requirement.Requirement:
        """Where ``user`` stands against ``DOMAINGUARD_2FA_REQUIRED_SINCE`` (nothing recorded)."""
        return requirement.requirement(self, user, tell=False)

    def active_users_without_2fa(self) -> list[requirement.UserWithout2FA]:
        """Users who must enrol in 2FA and have not, oldest deadline first."""
        return requirement.active_users_without_2fa(self)

    def check_password(self, user: Any, password: str) -> bool:
        """Check ``password`` with :attr:`password_checker` or the stored password hash."""
        return users.check_password(self, user, password)

    def reset_twofactor(self, user: Any, *, actor: str, reason: str) -> bool:
        """Remove ``user``'s 2FA for account recovery, journalled as ``admin:<actor>``."""
        return devices.admin_reset(self, user, actor=actor, reason=reason)

    @overload
    def require_fresh_2fa(
        self, view: Callable[_P, _R], *, within: timedelta | None = None
    ) -> Callable[_P, _R | ResponseReturnValue]: ...

    @overload
    def require_fresh_2fa(
        self, view: None = None, *, within: timedelta | None = None
    ) -> Callable[[Callable[_P, _R]], Callable[_P, _R | ResponseReturnValue]]: ...

    def require_fresh_2fa(
        self, view: Callable[_P, _R] | None = None, *, within: timedelta | None = None
    ) -> Any:
        """Decorate a view that changes security settings: password + fresh 2FA first.

        Use it as ``@guard.require_fresh_2fa`` or
        ``@guard.require_fresh_2fa(within=timedelta(minutes=5))``, below ``@login_required``;
        ``within`` defaults to ``DOMAINGUARD_2FA_FRESH_WITHIN``. HTML clients go to the
        confirmation page and come back; JSON clients get 401 ``reauthentication_required``.
        """
        if view is None:
            return require_fresh_2fa(within=within)
        return require_fresh_2fa(view, within=within)

    # -- verification (see :mod:`flask_domainguard.addresses.verification`) --------------

    def send_verification(
        self, address: EmailAddress | str, *, actor: str = "user"
    ) -> EmailAddress:
        """Mail a verification link to ``address`` (rate-limited per address, journalled).

        :raises flask_domainguard.addresses.verification.VerificationError: already
            verified, too many mails (``VerificationRateLimited``) or an unsafe domain
            (``VerificationRefused``); ``str(exc)`` is a message for the owner.
        """
        return verification.send_verification(self, address, actor=actor)

    def confirm_verification(self, token: str, *, user: Any = None) -> Outcome:
        """Verify the address a verification token names (after a live domain check).

        :param user: the logged-in user; needed for addresses unverified for a domain reason.
        """
        return verification.confirm_verification(self, token, user=user)

    def address_state(self, address: EmailAddress | str) -> AddressState:
        """How an address stands (verified, receives resets, a sentence for its owner)."""
        return standing.address_state(self, address)

    # -- password reset (see :mod:`flask_domainguard.reset`) ------------------------------

    def reset_decision(self, address: str) -> ResetDecision[UserT]:
        """Whether a password reset may be mailed to ``address``; never show ``reason``."""
        return decision.reset_decision(self, address)

    def safe_to_mail(self, address: str) -> bool:
        """Whether ``address`` is stored, verified and on a domain not unsafe (no lookup)."""
        return decision.safe_to_mail(self, address)

    def reset_mail_scope(
        self, decision: ResetDecision | None = None
    ) -> AbstractContextManager[None]:
        """A block in which Flask-Mail delivers only to addresses fit for a reset: the
        ``decision``'s address, or addresses with recent evidence of a safe domain."""
        return reset_mail_scope(decision)

    def send_reset_mail(
        self, target: ResetDecision[Any] | str, *, template: str = "reset_password", **context: Any
    ) -> bool:
        """Mail a reset link to the blueprint's reset page if allowed; ``False`` if refused."""
        return flow.send_reset_mail(self, target, template=template, **context)

    def guarded_reset_request(
        self,
        *,
        field: str = "email",
        template_or_response: str | Callable[[], ResponseReturnValue],
        csrf: bool = True,
    ) -> Callable[[Callable[_P, _R]], Callable[_P, _R | ResponseReturnValue]]:
        """Decorate the host's forgot-password view so only allowed requests reach it.

        See :func:`flask_domainguard.reset.hostview.guarded_reset_request`.
        """
        return hostview.guarded_reset_request(
            self, field=field, template_or_response=template_or_response, csrf=csrf
        )

    def request_reset(
        self, address: str, *, client: str | None = None
    ) -> ResetDecision[UserT] | None:
        """Handle a reset request as the blueprint's page does (mail sent by DomainGuard).

        :returns: the decision when processed now, ``None`` when handed to the background.
        """
        return flow.submit_reset_request(self, address, client=client)[0]

    def reset_token(self, user: Any, address: EmailAddress) -> str:
        """A reset token for ``user``, mailed to ``address``, for a host's own reset page."""
        return reset_tokens.reset_token(self, user, address)

    def read_reset_token(self, token: str) -> ResetGrant[UserT]:
        """Check a reset token without spending it (raises ``reset_tokens.TokenError``)."""
        return reset_tokens.read_reset_token(self, token)

    def password_changed(
        self, user: UserT, *, actor: str, via: EmailAddress | str | None = None
    ) -> None:
        """Call after storing a new password in a flow of your own (reset or change page).

        Every other session and remember cookie of ``user`` ends (the caller's own session,
        when it is ``user``'s, goes on); the journal and a signal record it; the user's other
        safe addresses get a notice with a "this wasn't me" link; a lock that link set is
        lifted. DomainGuard's own reset pages call it themselves. See
        :mod:`flask_domainguard.passwords`.

        :param actor: who changed it: ``user``, ``admin:<name>``, ``system``.
        :param via: the address the reset link went to, when a reset completed.
        """
        passwords.password_changed(self, user, actor=actor, via=via)

    def complete_reset(self, token: str, new_password: str) -> UserT:
        """Spend a reset token and store ``new_password`` with :attr:`password_setter`."""
        user: UserT = reset_tokens.complete_reset(self, token, new_password)
        return user

    def wait_for_background(self, timeout: float | None = None) -> bool:
        """Wait until the job table holds no job due or running (reset requests, mail),
        running them in this process's workers; ``True`` when that happened in time."""
        return jobs_for().join(timeout)
