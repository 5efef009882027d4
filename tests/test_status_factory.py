"""create_backend(): picking a status backend from the settings."""

from __future__ import annotations

import asyncio
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flask_domainguard.config import ConfigError, Settings, load_settings
from flask_domainguard.status import (
    DomainrBackend,
    FastlyBackend,
    Observation,
    RdapBackend,
    StaticBackend,
    StatusBackend,
    create_backend,
)
from flask_domainguard.status.rdap import BOOTSTRAP_CACHE_NAME


class HostBackend:
    """A host's own backend, as the docs describe it."""

    name = "host"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def observe(
        self,
        domain: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float | None = None,
    ) -> Observation:
        return Observation(domain=domain, registered=True, source=self.name)

    def server_key(self, domain: str) -> str:
        return "host"

    async def aclose(self) -> None:
        pass


class NotABackend:
    def __init__(self, settings: Settings) -> None:
        pass


@pytest.fixture
def host_module() -> Iterator[str]:
    module = types.ModuleType("domainguard_tests.host_backends")
    module.HostBackend = HostBackend  # type: ignore[attr-defined]
    module.NotABackend = NotABackend  # type: ignore[attr-defined]
    module.Nested = types.SimpleNamespace(Backend=HostBackend)  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        yield module.__name__
    finally:
        del sys.modules[module.__name__]


def test_rdap_is_the_default(tmp_path: Path) -> None:
    backend = create_backend(load_settings({}), instance_path=tmp_path)
    assert isinstance(backend, RdapBackend) and isinstance(backend, StatusBackend)
    assert backend._resolve_cache_path() == tmp_path / BOOTSTRAP_CACHE_NAME
    explicit = tmp_path / "elsewhere.json"
    settings = load_settings({"DOMAINGUARD_RDAP_BOOTSTRAP_FILE": str(explicit)})
    chosen = create_backend(settings, instance_path=tmp_path)
    assert isinstance(chosen, RdapBackend) and chosen._resolve_cache_path() == explicit


def test_by_name(tmp_path: Path) -> None:
    statuses = tmp_path / "s.json"
    statuses.write_text(json.dumps({"a.com": {"registered": True}}))
    settings = load_settings(
        {
            "DOMAINGUARD_FASTLY_API_KEY": "k",
            "DOMAINGUARD_DOMAINR_CLIENT_ID": "c",
            "DOMAINGUARD_STATIC_STATUS_FILE": str(statuses),
        }
    )
    assert isinstance(create_backend(settings, name="fastly"), FastlyBackend)
    assert isinstance(create_backend(settings, name="domainr"), DomainrBackend)
    static = create_backend(settings, name="static")
    assert isinstance(static, StaticBackend)
    assert asyncio.run(static.observe("a.com")).registered is True
    configured = load_settings(
        {"DOMAINGUARD_STATUS_BACKEND": "fastly", "DOMAINGUARD_FASTLY_API_KEY": "k"}
    )
    assert isinstance(create_backend(configured), FastlyBackend)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("fastly", "DOMAINGUARD_FASTLY_API_KEY"),
        ("domainr", "DOMAINGUARD_DOMAINR_CLIENT_ID"),
        ("static", "DOMAINGUARD_STATIC_STATUS_FILE"),
    ],
)
def test_missing_settings(name: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        create_backend(load_settings({}), name=name)


def test_bad_static_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "s.json"
    bad.write_text("[]")
    settings = load_settings({"DOMAINGUARD_STATIC_STATUS_FILE": str(bad)})
    with pytest.raises(ConfigError, match="must be a JSON object"):
        create_backend(settings, name="static")


@pytest.mark.parametrize(
    "path", ["{module}:HostBackend", "{module}.HostBackend", "{module}:Nested.Backend"]
)
def test_dotted_path(host_module: str, path: str) -> None:
    settings = load_settings({})
    backend = create_backend(settings, name=path.format(module=host_module))
    assert isinstance(backend, HostBackend) and backend.settings is settings


def test_dotted_path_from_settings(host_module: str) -> None:
    settings = load_settings({"DOMAINGUARD_STATUS_BACKEND": f"{host_module}:HostBackend"})
    assert isinstance(create_backend(settings), HostBackend)


def test_a_top_level_module_colon_class_is_accepted_in_settings_as_on_the_command_line() -> None:
    module = types.ModuleType("flat_host_backends")
    module.HostBackend = HostBackend  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        settings = load_settings({"DOMAINGUARD_STATUS_BACKEND": "flat_host_backends:HostBackend"})
        assert isinstance(create_backend(settings), HostBackend)
    finally:
        del sys.modules[module.__name__]
    with pytest.raises(ConfigError, match="module:Class"):
        load_settings({"DOMAINGUARD_STATUS_BACKEND": "whois"})


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        (
            "no_such_package_xyz.backends:Thing",
            "cannot import module 'no_such_package_xyz.backends'",
        ),
        ("{module}:Missing", "has no 'Missing'"),
        ("{module}.NotABackend", "lacks name, observe()"),
        ("{module}:", "is not a backend"),
        ("whois", "is not a backend"),
    ],
)
def test_dotted_path_errors(host_module: str, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_backend(load_settings({}), name=path.format(module=host_module))
    assert fragment in str(info.value)
