"""reset_decision(): each rule, the ctx scenario, live lookups and their failure modes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from freezegun import freeze_time

from flask_domainguard import signals
from flask_domainguard.journal import EventKind
from flask_domainguard.models import UnverifyReason
from tests.guard_helpers import (
    COUNTING,
    FAILING,
    OK,
    PENDING_DELETE,
    RELEASED,
    CountingBackend,
    FailingBackend,
    add,
    events,
    set_domain,
    write_status,
)

UTC = timezone.utc
NOW = datetime(2022, 5, 14, 18, 52, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(autouse=True)
def _reset_counters() -> Iterator[None]:
    CountingBackend.calls.clear()
    FailingBackend.calls.clear()
    yield


@pytest.fixture
def frozen() -> Iterator[Any]:
    with freeze_time(NOW) as clock:
        yield clock


pytestmark = pytest.mark.settings(DOMAINGUARD_STATUS_BACKEND=COUNTING)


def test_ctx_scenario_is_refused_by_the_live_check(
    app: Flask, guard: Any, make_user: Any, frozen: Any
) -> None:
    """PyPI's ctx, May 2022: verified in 2014, domain re-registered 12 minutes before the
    reset, the last sweep check days old and happy. No sweep runs; the reset is refused."""
    user = make_user()
    row = add(guard, user, "maintainer@figlief.com", verified_at=at("2014-03-02T10:00:00"))
    set_domain(
        guard,
        "figlief.com",
        checked_at=NOW - timedelta(days=4),
        verdict="ok",
        registered_at=at("2010-06-01T00:00:00"),
        expires_at=at("2022-05-20T00:00:00"),
    )
    write_status(
        app,
        {
            "figlief.com": {
                "registered": True,
                "statuses": ["active"],
                "registered_at": "2022-05-14T18:40:00Z",
                "expires_at": "2023-05-14T18:40:00Z",
            }
        },
    )
    decision = guard.reset_decision("Maintainer@FIGLIEF.com")
    assert not decision.allowed
    assert decision.reason == "domain_reregistered"
    assert decision.address is not None and decision.address.id == row.id
    assert decision.user is not None and decision.user.id == user.id
    assert decision.verdict is not None and decision.verdict.unsafe
    assert CountingBackend.calls == ["figlief.com"]
    domain = guard.db.session.get(guard.models.Domain, "figlief.com")
    assert domain.verdict == "reregistered"
    assert domain.checked_at == NOW
    assert domain.registered_at == at("2022-05-14T18:40:00")
    assert domain.unsafe_since == NOW
    assert domain.next_check_at <= NOW + guard.settings.confirm_after
    # Refusing needs no confirmation, but unverifying is the sweep's job, with its own rule.
    guard.db.session.refresh(row)
    assert row.verified_at is not None
    assert [e.details["verdict"] for e in events(guard, EventKind.DOMAIN_VERDICT)] == [
        "reregistered"
    ]


def test_unknown_address_is_refused_without_a_lookup(guard: Any, frozen: Any) -> None:
    decision = guard.reset_decision("nobody@figlief.com")
    assert (decision.allowed, decision.reason, decision.user, decision.address) == (
        False,
        "unknown_address",
        None,
        None,
    )
    assert guard.reset_decision("not an address").reason == "unknown_address"
    assert CountingBackend.calls == []


def test_unverified_address_is_refused(guard: Any, make_user: Any, frozen: Any) -> None:
    user = make_user()
    add(guard, user, "fresh@example-shop.com", verified=False)
    decision = guard.reset_decision("fresh@example-shop.com")
    assert not decision.allowed and decision.reason == "unverified"
    assert decision.user.id == user.id
    assert CountingBackend.calls == []


def test_trusted_providers_are_never_looked_up(
    app: Flask, guard: Any, make_user: Any, frozen: Any
) -> None:
    add(guard, make_user(), "someone@gmail.com")
    # Even a status file claiming gmail.com is released is never consulted.
    write_status(app, {"gmail.com": RELEASED})
    for _ in range(3):
        decision = guard.reset_decision("someone@gmail.com")
        assert decision.allowed and decision.reason == "allowed"
    assert CountingBackend.calls == []


def test_fresh_check_is_not_repeated_and_stale_check_is(
    app: Flask, guard: Any, make_user: Any, frozen: Any
) -> None:
    add(guard, make_user(), "a@example-shop.com", verified_at=at("2020-01-01T00:00:00"))
    write_status(app, {"example-shop.com": OK})
    set_domain(guard, "example-shop.com", checked_at=NOW - timedelta(hours=23))
    assert guard.reset_decision("a@example-shop.com").allowed
    assert CountingBackend.calls == []

    frozen.tick(timedelta(hours=1))  # now exactly a day after the last check: stale
    assert guard.reset_decision("a@example-shop.com").allowed
    assert CountingBackend.calls == ["example-shop.com"]
    # The lookup refreshed checked_at, so the next request does not look up again.
    assert guard.reset_decision("a@example-shop.com").allowed
    assert CountingBackend.calls == ["example-shop.com"]


def test_never_checked_domain_is_looked_up(
    app: Flask, guard: Any, make_user: Any, frozen: Any
) -> None:
    add(guard, make_user(), "a@example-shop.com")
    write_status(app, {"example-shop.com": RELEASED})
    decision = guard.reset_decision("a@example-shop.com")
    assert not decision.allowed and decision.reason == "domain_released"
    assert CountingBackend.calls == ["example-shop.com"]


def test_stored_observation_is_judged_with_the_address_verified_at(
    guard: Any, make_user: Any, frozen: Any
) -> None:
    """A fresh check (no lookup) that shows a creation after the address's verification."""
    add(guard, make_user(), "old@example-shop.com", verified_at=at("2014-01-01T00:00:00"))
    add(guard, make_user(), "new@example-shop.com", verified_at=at("2022-01-01T00:00:00"))
    set_domain(
        guard,
        "example-shop.com",
        checked_at=NOW - timedelta(hours=1),
        verdict="ok",
        registered_at=at("2021-06-01T00:00:00"),
        expires_at=at("2030-01-01T00:00:00"),
    )
    old = guard.reset_decision("old@example-shop.com")
    assert not old.allowed and old.reason == "domain_reregistered"
    # A stored verdict other than OK is never reused as evidence: it was looked up again
    # (the lookup failed twice, a quick failure is retried once: the domain is not in the
    # status file) and the stored facts decided.
    assert CountingBackend.calls == ["example-shop.com"] * 2
    # Verified after the new registration: this address is the new owner's, and safe; its
    # own verdict on the fresh check is OK, which is evidence without a lookup.
    assert guard.reset_decision("new@example-shop.com").allowed
    assert CountingBackend.calls == ["example-shop.com"] * 2


def test_stored_grace_runs_out_with_time_alone(guard: Any, make_user: Any, frozen: Any) -> None:
    add(guard, make_user(), "a@example-shop.com", verified_at=at("2015-01-01T00:00:00"))
    set_domain(
        guard,
        "example-shop.com",
        checked_at=NOW - timedelta(hours=2),
        verdict="in_grace",
        expires_at=NOW - timedelta(days=31),
        statuses=("client hold", "auto renew period"),
    )
    decision = guard.reset_decision("a@example-shop.com")
    assert not decision.allowed and decision.reason == "domain_expired"
    # An in-grace check is no evidence however fresh: looked up (and failed, twice) first.
    assert CountingBackend.calls == ["example-shop.com"] * 2


def test_stored_released_verdict_is_honoured(guard: Any, make_user: Any, frozen: Any) -> None:
    add(guard, make_user(), "a@example-shop.com")
    set_domain(
        guard,
        "example-shop.com",
        checked_at=NOW - timedelta(hours=1),
        verdict="released",
        registered=False,
        statuses=(),
    )
    assert guard.reset_decision("a@example-shop.com").reason == "domain_released"


def test_live_pending_delete_is_refused_as_expired(
    app: Flask, guard: Any, make_user: Any, frozen: Any
) -> None:
    add(guard, make_user(), "a@example-shop.com", verified_at=at("2015-01-01T00:00:00"))
    write_status(app, {"example-shop.com": PENDING_DELETE})
    assert guard.reset_decision("a@example-shop.com").reason == "domain_expired"


@pytest.mark.settings(DOMAINGUARD_RESET_LIVE_CHECK="fallback")
def test_failed_lookup_falls_back_to_stored_state(
    app: Flask, guard: Any, make_user: Any, frozen: Any
) -> None:
    """The weaker 'fallback': a domain missing from the status file (registered=None)."""
    add(guard, make_user(), "ok@example-shop.com")
    add(guard, make_user(), "gone@vanished-shop.com")
    checked = NOW - timedelta(days=3)
    set_domain(guard, "example-shop.com", checked_at=checked, expires_at=at("2030-01-01T00:00:00"))
    set_domain(
        guard,
        "vanished-shop.com",
        checked_at=checked,
        verdict="released",
        registered=False,
        statuses=(),
    )
    write_status(app, {})
    ok = guard.reset_decision("ok@example-shop.com")
    assert ok.allowed and ok.reason == "allowed"
    assert guard.reset_decision("gone@vanished-shop.com").reason == "domain_released"
    assert sorted(CountingBackend.calls) == sorted(["example-shop.com", "vanished-shop.com"] * 2)
    # A failed lookup is no check: the stored state, and its age, stay as they were.
    assert guard.db.session.get(guard.models.Domain, "example-shop.com").checked_at == checked


def test_failed_lookup_is_no_evidence_by_default(
    app: Flask, guard: Any, make_user: Any, frozen: Any
) -> None:
    """Attack case 1: the lookup fails and the stored check is stale or missing. The
    default refuses (``no_evidence``) instead of reading the failure as safe."""
    add(guard, make_user(), "stale@example-shop.com")
    add(guard, make_user(), "never@never-checked.com")
    set_domain(guard, "example-shop.com", checked_at=NOW - timedelta(days=3))
    write_status(app, {})
    for address in ("stale@example-shop.com", "never@never-checked.com"):
        decision = guard.reset_decision(address)
        assert not decision.allowed and decision.reason == "no_evidence", address
    # Each failed quickly, so each was tried once more.
    assert sorted(CountingBackend.calls) == sorted(["example-shop.com", "never-checked.com"] * 2)


@pytest.mark.settings(DOMAINGUARD_RESET_LIVE_CHECK="required")
def test_required_is_the_old_name_of_evidence(
    app: Flask, guard: Any, make_user: Any, frozen: Any
) -> None:
    assert guard.settings.reset_live_check == "evidence"
    add(guard, make_user(), "ok@example-shop.com")
    set_domain(guard, "example-shop.com", checked_at=NOW - timedelta(days=3))
    write_status(app, {})
    decision = guard.reset_decision("ok@example-shop.com")
    assert not decision.allowed and decision.reason == "no_evidence"
    # With a fresh check no lookup is due, so nothing can fail.
    set_domain(guard, "example-shop.com", checked_at=NOW - timedelta(hours=1))
    assert guard.reset_decision("ok@example-shop.com").allowed


@pytest.mark.settings(DOMAINGUARD_STATUS_BACKEND=FAILING, DOMAINGUARD_RESET_LIVE_CHECK="fallback")
def test_erroring_backend_falls_back(guard: Any, make_user: Any, frozen: Any) -> None:
    add(guard, make_user(), "ok@example-shop.com")
    set_domain(guard, "example-shop.com", checked_at=NOW - timedelta(days=3))
    assert guard.reset_decision("ok@example-shop.com").allowed
    assert FailingBackend.calls == ["example-shop.com"] * 2


@pytest.mark.settings(DOMAINGUARD_STATUS_BACKEND=FAILING)
def test_erroring_backend_leaves_no_evidence(guard: Any, make_user: Any, frozen: Any) -> None:
    add(guard, make_user(), "ok@example-shop.com")
    set_domain(guard, "example-shop.com", checked_at=NOW - timedelta(days=3))
    assert guard.reset_decision("ok@example-shop.com").reason == "no_evidence"


@pytest.mark.settings(DOMAINGUARD_RESET_LIVE_CHECK="off")
def test_off_never_looks_up(app: Flask, guard: Any, make_user: Any, frozen: Any) -> None:
    add(guard, make_user(), "a@example-shop.com")
    write_status(app, {"example-shop.com": RELEASED})
    set_domain(guard, "example-shop.com", checked_at=None, verdict=None, registered=None)
    assert guard.reset_decision("a@example-shop.com").allowed
    assert CountingBackend.calls == []


def test_unverified_for_domain_reason_is_refused_even_on_a_safe_domain(
    app: Flask, guard: Any, make_user: Any, frozen: Any
) -> None:
    from tests.guard_helpers import unverify

    row = add(guard, make_user(), "a@example-shop.com")
    unverify(guard, row, UnverifyReason.DOMAIN_EXPIRED)
    write_status(app, {"example-shop.com": OK})
    assert guard.reset_decision("a@example-shop.com").reason == "unverified"


def test_refusal_journals_a_changed_verdict_once(
    app: Flask, guard: Any, make_user: Any, frozen: Any
) -> None:
    add(guard, make_user(), "a@example-shop.com")
    seen: list[dict[str, Any]] = []

    def receiver(sender: Flask, **info: Any) -> None:
        seen.append(info)

    write_status(app, {"example-shop.com": RELEASED})
    with signals.domain_verdict_changed.connected_to(receiver):
        guard.reset_decision("a@example-shop.com")
        frozen.tick(timedelta(days=2))
        guard.reset_decision("a@example-shop.com")  # looked up again, same verdict
    assert CountingBackend.calls == ["example-shop.com", "example-shop.com"]
    assert [info["verdict"] for info in seen] == ["released"]
    assert len(events(guard, EventKind.DOMAIN_VERDICT)) == 1


class SlowBackend:
    """Never answers within any reasonable time, and ignores the timeout it is given."""

    name = "slow"

    def __init__(self, settings: Any) -> None:
        pass

    async def observe(
        self, domain: str, *, client: Any = None, timeout: float | None = None
    ) -> Any:
        import asyncio

        await asyncio.sleep(60)

    def server_key(self, domain: str) -> str:
        return "slow"

    async def aclose(self) -> None:
        return None


@pytest.mark.settings(
    DOMAINGUARD_STATUS_BACKEND="tests.test_reset_decision:SlowBackend",
    DOMAINGUARD_RESET_LIVE_TIMEOUT=0.2,
)
def test_a_backend_ignoring_its_timeout_cannot_hold_the_decision(
    guard: Any, make_user: Any
) -> None:
    add(guard, make_user(), "a@example-shop.com")
    started = time.monotonic()
    decision = guard.reset_decision("a@example-shop.com")
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"took {elapsed:.1f}s"
    # Never checked and the lookup failed: no evidence, so no reset. One attempt only (it
    # used its whole time), bounded by its timeout plus a second's slack, not twice that.
    assert not decision.allowed and decision.reason == "no_evidence"
    assert elapsed < 0.2 + 1.0 + 0.5, f"took {elapsed:.1f}s"
