"""livecheck: live lookups at reset and verification time, and what they leave on the Domain row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from freezegun import freeze_time

from flask_domainguard.domainstate import DomainState, policy_of, record, verdict_for
from flask_domainguard.journal import EventKind
from flask_domainguard.livecheck import check_domain, lookup
from flask_domainguard.status.observation import Observation
from flask_domainguard.verdict import VerdictKind
from tests.guard_helpers import (
    COUNTING,
    FAILING,
    OK,
    CountingBackend,
    add,
    events,
    set_domain,
    write_status,
)

UTC = timezone.utc
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.settings(DOMAINGUARD_STATUS_BACKEND=COUNTING)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[Any]:
    CountingBackend.calls.clear()
    with freeze_time(NOW) as clock:
        yield clock


def obs(**fields: Any) -> Observation:
    base: dict[str, Any] = {
        "domain": "example-shop.com",
        "registered": True,
        "statuses": frozenset({"active"}),
        "expires_at": NOW + timedelta(days=400),
        "registered_at": datetime(2001, 1, 1, tzinfo=UTC),
        "source": "rdap",
    }
    return Observation(**{**base, **fields})


def domain(guard: Any, name: str = "example-shop.com") -> Any:
    row = guard.db.session.get(guard.models.Domain, name)
    guard.db.session.refresh(row)
    return row


def test_record_observation_stores_the_facts_and_journals_changes(
    guard: Any, make_user: Any
) -> None:
    add(guard, make_user(), "a@example-shop.com")
    state = record(guard, "example-shop.com", obs(), actor="reset")
    assert state.verdict == VerdictKind.OK.value
    row = domain(guard)
    assert (row.registered, row.status_set, row.source, row.checked_at) == (
        True,
        frozenset({"active"}),
        "rdap",
        NOW,
    )
    assert row.verdict == "ok" and row.unsafe_since is None and row.lapse_seen_at is None
    record(guard, "example-shop.com", obs(), actor="reset")
    assert len(events(guard, EventKind.DOMAIN_VERDICT)) == 1, "unchanged verdict, no new row"


def test_unsafe_verdict_starts_the_confirmation_clock(
    guard: Any, make_user: Any, frozen: Any
) -> None:
    add(guard, make_user(), "a@example-shop.com")
    row = domain(guard)
    row.next_check_at = NOW + timedelta(days=7)
    guard.db.session.commit()
    record(guard, "example-shop.com", obs(registered=False), actor="reset")
    row = domain(guard)
    assert row.verdict == "released"
    assert row.unsafe_since == NOW
    assert row.lapse_seen_at == NOW
    assert row.next_check_at == NOW + guard.settings.confirm_after
    frozen.tick(timedelta(hours=1))
    record(guard, "example-shop.com", obs(registered=False), actor="reset")
    assert domain(guard).unsafe_since == NOW, "the first sighting is kept"
    record(guard, "example-shop.com", obs(), actor="reset")
    row = domain(guard)
    assert row.unsafe_since is None and row.lapse_seen_at is None and row.verdict == "ok"


def test_domain_verdict_is_judged_for_the_earliest_verified_address(
    guard: Any, make_user: Any
) -> None:
    add(guard, make_user(), "old@example-shop.com", verified_at=datetime(2010, 1, 1, tzinfo=UTC))
    add(guard, make_user(), "new@example-shop.com", verified_at=datetime(2024, 1, 1, tzinfo=UTC))
    state = record(
        guard, "example-shop.com", obs(registered_at=datetime(2020, 1, 1, tzinfo=UTC)), actor="x"
    )
    assert state.verdict == VerdictKind.REREGISTERED.value


def test_failed_lookup_leaves_the_row_alone(app: Flask, guard: Any, make_user: Any) -> None:
    add(guard, make_user(), "a@example-shop.com")
    set_domain(guard, "example-shop.com", checked_at=NOW - timedelta(days=5))
    write_status(app, {})
    check = check_domain(guard, "example-shop.com", verified_at=NOW - timedelta(days=9))
    assert check.looked_up and check.failed
    assert check.verdict.kind is VerdictKind.OK  # the stored state...
    assert not check.evidence  # ...five days old: no evidence for a reset
    assert check.observation is not None and check.observation.registered is None
    assert domain(guard).checked_at == NOW - timedelta(days=5)


@pytest.mark.settings(DOMAINGUARD_RESET_LIVE_CHECK="off")
def test_force_looks_up_even_when_resets_do_not(app: Flask, guard: Any, make_user: Any) -> None:
    add(guard, make_user(), "a@example-shop.com")
    write_status(app, {"example-shop.com": OK})
    assert not check_domain(guard, "example-shop.com", verified_at=None).looked_up
    assert check_domain(guard, "example-shop.com", verified_at=None, force=True).looked_up
    assert CountingBackend.calls == ["example-shop.com"]


def test_trusted_domains_are_never_looked_up(guard: Any) -> None:
    check = check_domain(guard, "gmail.com", verified_at=None, force=True)
    assert check.trusted and not check.looked_up and not check.verdict.unsafe
    assert CountingBackend.calls == []


def test_stored_verdict_never_kinder_than_the_stored_summary(guard: Any, make_user: Any) -> None:
    add(guard, make_user(), "a@example-shop.com")
    # Facts that would read OK, with the sweep's verdict 'expired' (e.g. from another source).
    row = set_domain(
        guard,
        "example-shop.com",
        checked_at=NOW,
        verdict="expired",
        expires_at=NOW + timedelta(days=300),
    )
    verdict = verdict_for(DomainState.of(row), None, NOW, policy_of(guard.settings))
    assert verdict.kind is VerdictKind.EXPIRED and verdict.unsafe


@pytest.mark.settings(DOMAINGUARD_STATUS_BACKEND=FAILING)
def test_a_raising_backend_gives_a_failed_observation_without_its_message(guard: Any) -> None:
    result = lookup(guard, "example-shop.com", timeout=1)
    assert result.registered is None
    assert result.error == "lookup failed (RuntimeError)"
    assert "SECRET" not in (result.error or "")


class FlakyOnceBackend(CountingBackend):
    """Fails the first lookup of each domain (a 503 from the registry), then answers."""

    async def observe(
        self, domain: str, *, client: Any = None, timeout: float | None = None
    ) -> Any:
        first = domain not in CountingBackend.calls
        CountingBackend.calls.append(domain)
        if first:
            return Observation.failed(domain, "HTTP 503", source="static")
        return await self.inner.observe(domain)


@pytest.mark.settings(DOMAINGUARD_STATUS_BACKEND="tests.test_livecheck:FlakyOnceBackend")
def test_a_quick_failure_is_tried_once_more(app: Flask, guard: Any, make_user: Any) -> None:
    """With resets refused on a failed lookup, one retry keeps a flaky source from refusing
    honest users: a 503 followed by an answer is evidence."""
    add(guard, make_user(), "a@example-shop.com")
    write_status(app, {"example-shop.com": OK})
    assert guard.reset_decision("a@example-shop.com").allowed
    assert CountingBackend.calls == ["example-shop.com"] * 2
