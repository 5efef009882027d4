"""A status backend that reads a JSON file: for demos, tests and air-gapped installs.

The file maps domains to what a real backend would have seen::

    {
      "example.com": {"registered": true, "statuses": ["active"],
                      "expires_at": "2030-01-01T00:00:00Z",
                      "registered_at": "2001-01-01T00:00:00Z"},
      "gone.example": {"registered": false}
    }

Fields: ``registered`` (``true``, ``false`` or ``null``; required), ``statuses`` (list of
text), ``expires_at``/``registered_at``/``transferred_at`` (ISO 8601 or ``null``), ``error``
(text). A domain missing from the file is ``registered=None``. The file is read again whenever
its modification time or size changes, so a demo can edit it while the app runs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from .base import not_a_domain, parse_datetime, to_alabel
from .observation import Observation

__all__ = ["StaticBackend", "StaticStatusError", "load_static_statuses"]

logger = logging.getLogger(__name__)

SOURCE = "static"

_FIELDS = frozenset(
    {"registered", "statuses", "expires_at", "registered_at", "transferred_at", "error"}
)


class StaticStatusError(ValueError):
    """The static status file is missing or malformed; the message names file and problem."""


def _date(path: Path, domain: str, field: str, value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        raise StaticStatusError(
            f"{path}: {domain}.{field} = {value!r} is not an ISO 8601 date "
            "such as '2030-01-01T00:00:00Z' (years 1985-9999), nor null"
        )
    return parsed


def load_static_statuses(path: str | os.PathLike[str]) -> dict[str, Observation]:
    """Read and validate a static status file.

    :raises StaticStatusError: naming the file and what is wrong with it.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StaticStatusError(
            f"{file}: the static status file does not exist (DOMAINGUARD_STATIC_STATUS_FILE)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StaticStatusError(f"{file}: cannot be read: {exc}") from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StaticStatusError(f"{file}: not valid JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise StaticStatusError(f"{file}: must be a JSON object mapping domains to statuses")
    result: dict[str, Observation] = {}
    for key, entry in doc.items():
        domain = to_alabel(key)
        if domain is None:
            raise StaticStatusError(f"{file}: {key!r} is not a domain name")
        if not isinstance(entry, Mapping):
            raise StaticStatusError(
                f"{file}: {key}: expected an object such as {{'registered': true}}"
            )
        unknown = sorted(set(entry) - _FIELDS)
        if unknown:
            raise StaticStatusError(
                f"{file}: {key}: unknown field(s) {', '.join(unknown)}; "
                f"the fields are {', '.join(sorted(_FIELDS))}"
            )
        if "registered" not in entry:
            raise StaticStatusError(
                f"{file}: {key}: 'registered' (true, false or null) is required"
            )
        registered = entry["registered"]
        if registered is not None and not isinstance(registered, bool):
            raise StaticStatusError(f"{file}: {key}.registered must be true, false or null")
        statuses = entry.get("statuses", [])
        if statuses is None:
            statuses = []
        if not isinstance(statuses, list) or not all(isinstance(s, str) for s in statuses):
            raise StaticStatusError(f"{file}: {key}.statuses must be a list of text")
        error = entry.get("error")
        if error is not None and not isinstance(error, str):
            raise StaticStatusError(f"{file}: {key}.error must be text or null")
        if registered is None and not error:
            error = "the static status file says the status is unknown"
        if domain in result:
            raise StaticStatusError(f"{file}: {key!r} is listed twice")
        result[domain] = Observation(
            domain=domain,
            registered=registered,
            statuses=frozenset(s.strip().lower() for s in statuses if s.strip()),
            expires_at=_date(file, key, "expires_at", entry.get("expires_at")),
            registered_at=_date(file, key, "registered_at", entry.get("registered_at")),
            transferred_at=_date(file, key, "transferred_at", entry.get("transferred_at")),
            source=SOURCE,
            error=error,
        )
    return result


class StaticBackend:
    """Answer from a JSON file (see the module docstring for its format).

    :param path: the file (``DOMAINGUARD_STATIC_STATUS_FILE``).
    :raises StaticStatusError: at construction when the file is missing or malformed. A file
        that turns bad later gives failed observations (and a warning) until it is fixed.
    """

    name = SOURCE

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._data: dict[str, Observation] = {}
        self._error: str | None = None
        self._reload(force=True)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def _reload(self, *, force: bool = False) -> None:
        stamp = self._file_stamp()
        if not force and stamp == self._stamp and stamp is not None:
            return
        try:
            data = load_static_statuses(self.path)
        except StaticStatusError as exc:
            if force:
                raise
            if self._error != str(exc):
                logger.warning("static status file unusable: %s", exc)
            self._error = str(exc)
            self._stamp = stamp
            return
        self._data, self._error, self._stamp = data, None, stamp

    def lookup(self, domain: str) -> Observation:
        """The file's answer for ``domain`` (re-reading the file if it changed)."""
        self._reload()
        asked = to_alabel(domain) if isinstance(domain, str) else None
        if asked is None:
            return not_a_domain(domain, source=SOURCE)
        if self._error is not None:
            return Observation.failed(asked, self._error, source=SOURCE)
        found = self._data.get(asked)
        if found is None:
            return Observation.failed(asked, "not in the static status file", source=SOURCE)
        return found

    async def observe(
        self,
        domain: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float | None = None,
    ) -> Observation:
        """The file's answer for ``domain``; ``client`` and ``timeout`` are not used."""
        return self.lookup(domain)

    def covers(self, domain: str) -> bool:
        """The file speaks for every domain (one it does not list is "could not tell")."""
        return True

    def server_key(self, domain: str) -> str:
        """One "server": the file."""
        return SOURCE

    async def aclose(self) -> None:
        """Nothing to release."""
