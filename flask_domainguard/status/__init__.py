"""Domain status backends: what a registry or status API says about a registrable domain.

:func:`create_backend` picks one from the settings (``DOMAINGUARD_STATUS_BACKEND``).
"""

from __future__ import annotations

import importlib
import os

from ..config import ConfigError, Settings
from .base import StatusBackend, observe_sync
from .fastly import DomainrBackend, FastlyBackend, parse_fastly_status
from .observation import Observation
from .rdap import RdapBackend, parse_rdap_domain
from .static import StaticBackend, StaticStatusError

__all__ = [
    "DomainrBackend",
    "FastlyBackend",
    "Observation",
    "RdapBackend",
    "StaticBackend",
    "StaticStatusError",
    "StatusBackend",
    "create_backend",
    "observe_sync",
    "parse_fastly_status",
    "parse_rdap_domain",
]

BUILTIN_BACKENDS = ("rdap", "fastly", "domainr", "static")


def create_backend(
    settings: Settings,
    *,
    name: str | None = None,
    instance_path: str | os.PathLike[str] | None = None,
) -> StatusBackend:
    """Build the status backend named by ``name`` or ``settings.status_backend``.

    :param name: ``"rdap"``, ``"fastly"``, ``"domainr"``, ``"static"``, or a host's own class
        as ``"package.module:Class"`` or ``"package.module.Class"``, constructed with
        ``settings``.
    :param instance_path: the Flask app's instance folder, where the RDAP backend caches the
        bootstrap file unless ``DOMAINGUARD_RDAP_BOOTSTRAP_FILE`` says otherwise.
    :raises ConfigError: when the backend's settings are missing or the class cannot be loaded.
    """
    choice = name if name is not None else settings.status_backend
    if choice == "rdap":
        return RdapBackend(settings, instance_path=instance_path)
    if choice == "fastly":
        return FastlyBackend(settings)  # raises ConfigError without a key
    if choice == "domainr":
        return DomainrBackend(settings)
    if choice == "static":
        if not settings.static_status_file:
            raise ConfigError(
                "DOMAINGUARD_STATUS_BACKEND = 'static' needs DOMAINGUARD_STATIC_STATUS_FILE, "
                "the JSON file of domain statuses."
            )
        try:
            return StaticBackend(settings.static_status_file)
        except StaticStatusError as exc:
            raise ConfigError(f"DOMAINGUARD_STATIC_STATUS_FILE: {exc}") from None
    return _load_custom(choice, settings)


def _load_custom(path: str, settings: Settings) -> StatusBackend:
    options = f"use one of {', '.join(repr(b) for b in BUILTIN_BACKENDS)} or 'package.module:Class'"
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"DOMAINGUARD_STATUS_BACKEND = {path!r} is not a backend: {options}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"DOMAINGUARD_STATUS_BACKEND = {path!r}: cannot import module {module_name!r} ({exc})."
        ) from exc
    target: object = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"DOMAINGUARD_STATUS_BACKEND = {path!r}: module {module_name!r} has no {attr!r}."
            ) from None
    if not callable(target):
        raise ConfigError(f"DOMAINGUARD_STATUS_BACKEND = {path!r} is not a class or factory.")
    backend = target(settings)
    if not isinstance(backend, StatusBackend):
        raise ConfigError(
            f"DOMAINGUARD_STATUS_BACKEND = {path!r} built {type(backend).__name__!r}, which "
            "lacks name, observe(), server_key() or aclose() "
            "(see flask_domainguard.status.StatusBackend)."
        )
    return backend
