"""The one way feature modules reach the extension: the :class:`Guard` protocol and its lookup.

Feature modules (sweep, reset, two-factor, mail, ...) take a ``guard: Guard`` argument or call
:func:`current_guard`; they never import :mod:`flask_domainguard.extension`, which imports
them. This keeps the package's import graph free of cycles (``tests/test_imports.py`` walks
it): the extension sits on top, this module and the data layer (config, models, status) at
the bottom, and each feature in between depends only on what is below it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from flask import Flask, current_app

from .config import Settings
from .models import Models
from .status.base import StatusBackend

#: The key of DomainGuard's per-app state in ``app.extensions``.
EXTENSION_KEY = "domainguard"

#: ``password_setter(user, new_password)`` stores a new password the host's way.
PasswordSetter = Callable[[Any, str], None]
#: ``password_checker(user, password) -> bool`` checks a password the host's way.
PasswordChecker = Callable[[Any, str], bool]


class Guard(Protocol):
    """What feature modules need from :class:`~flask_domainguard.DomainGuard`.

    The host's database and user model, the mapped classes, the current app's settings and
    status backend, and the password hooks the host registered.
    """

    db: Any
    models: Models
    user_model: type[Any]
    password_setter: PasswordSetter | None
    password_checker: PasswordChecker | None

    @property
    def settings(self) -> Settings:
        """The current app's validated settings."""
        ...

    def user_id_of(self, user: Any) -> Any:
        """The primary key of a host user object (or the key itself, passed through)."""
        ...

    def get_user(self, user_id: Any) -> Any:
        """Load a host user by primary key, or ``None``."""
        ...

    def status_backend(self, name: str | None = None) -> StatusBackend:
        """The current app's status backend (``DOMAINGUARD_STATUS_BACKEND`` unless ``name``)."""
        ...


@dataclass
class AppState:
    """What DomainGuard keeps per app (several apps may share one guard)."""

    guard: Guard
    settings: Settings
    backends: dict[str, StatusBackend] = field(default_factory=dict)


def app_state(app: Flask | None = None) -> AppState:
    """DomainGuard's state on ``app`` (default: the current app).

    :raises RuntimeError: when DomainGuard is not registered on the app.
    """
    state = registered_state(app)
    if state is None:
        raise RuntimeError("DomainGuard is not registered on this app: call guard.init_app(app).")
    return state


def registered_state(app: Flask | None = None) -> AppState | None:
    """DomainGuard's state on ``app`` (default: the current app), or ``None`` without it."""
    state: AppState | None = (app or current_app).extensions.get(EXTENSION_KEY)
    return state


def current_guard(app: Flask | None = None) -> Guard:
    """The guard registered on ``app`` (default: the current app).

    :raises RuntimeError: when DomainGuard is not registered on the app.
    """
    return app_state(app).guard


def current_settings(app: Flask | None = None) -> Settings:
    """The validated settings of ``app`` (default: the current app)."""
    return app_state(app).settings
