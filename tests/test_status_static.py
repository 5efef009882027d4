"""The static status file backend."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from flask_domainguard.status import observe_sync
from flask_domainguard.status.observation import Observation
from flask_domainguard.status.static import StaticBackend, StaticStatusError

UTC = timezone.utc

GOOD = {
    "example.com": {
        "registered": True,
        "statuses": ["active", "Client Hold"],
        "expires_at": "2030-01-01T00:00:00Z",
        "registered_at": "2001-01-01T00:00:00+01:00",
        "transferred_at": None,
    },
    "gone.example": {"registered": False},
    "Bücher.example": {"registered": None, "error": "registry maintenance"},
    "dunno.example": {"registered": None},
}


def write(path: Path, doc: Any) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def test_answers_from_the_file(tmp_path: Path) -> None:
    backend = StaticBackend(write(tmp_path / "s.json", GOOD))
    assert backend.lookup("EXAMPLE.com.") == Observation(
        domain="example.com",
        registered=True,
        statuses=frozenset({"active", "client hold"}),
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        registered_at=datetime(2000, 12, 31, 23, 0, tzinfo=UTC),
        source="static",
    )
    assert backend.lookup("gone.example") == Observation(
        domain="gone.example", registered=False, source="static"
    )
    idn = backend.lookup("xn--bcher-kva.example")
    assert idn.registered is None and idn.error == "registry maintenance"
    assert backend.lookup("dunno.example").error
    missing = asyncio.run(backend.observe("other.example"))
    assert missing.registered is None and missing.error == "not in the static status file"
    assert observe_sync(backend, "gone.example").registered is False
    assert backend.server_key("a.com") == "static"
    assert backend.lookup("nope").error == "'nope' is not a domain name"


def test_reread_when_the_file_changes(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", GOOD)
    backend = StaticBackend(path)
    assert backend.lookup("example.com").registered is True
    write(path, {"example.com": {"registered": False}})
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    assert backend.lookup("example.com").registered is False

    # A file that turns bad gives failed lookups, then recovers once fixed.
    write(path, "{broken")
    os.utime(path, ns=(2, 2))
    broken = backend.lookup("example.com")
    assert broken.registered is None and broken.error and str(path) in broken.error
    write(path, GOOD)
    os.utime(path, ns=(3, 3))
    assert backend.lookup("example.com").registered is True

    path.unlink()
    gone = backend.lookup("example.com")
    assert gone.registered is None and gone.error and "does not exist" in gone.error


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ({"com": {"registered": True}}, "'com' is not a domain name"),
        ({"a.com": True}, "a.com: expected an object"),
        ({"a.com": {}}, "'registered' (true, false or null) is required"),
        ({"a.com": {"registered": "yes"}}, "a.com.registered must be true, false or null"),
        ({"a.com": {"registered": True, "status": []}}, "unknown field(s) status"),
        ({"a.com": {"registered": True, "statuses": "active"}}, "statuses must be a list"),
        ({"a.com": {"registered": True, "expires_at": "soon"}}, "a.com.expires_at = 'soon'"),
        ({"a.com": {"registered": True, "expires_at": "294247-01-01"}}, "expires_at"),
        ({"a.com": {"registered": None, "error": 5}}, "error must be text"),
        ({"a.com": {"registered": True}, "A.com": {"registered": False}}, "listed twice"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path: Path, doc: Any, fragment: str) -> None:
    path = write(tmp_path / "statuses.json", doc)
    with pytest.raises(StaticStatusError) as info:
        StaticBackend(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StaticStatusError, match="does not exist"):
        StaticBackend(tmp_path / "nope.json")
