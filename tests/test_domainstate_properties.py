"""A property of the whole domain-state path, over interleavings of its writers and readers.

Hypothesis plays a world in which a user's domain lapses and may change hands (re-registered
after a release, or sold while lapsing), the buyer may renew it, and the status source may
fail, while sweeps, live checks at reset time and ``flask domainguard check`` run in any
order at any times. The property: once the product has *seen* the change of hands (a
re-registration after the proof, or a sale after a lapse it had seen), no later sequence
without a new verification gives the old address a reset or a "safe" mail verdict.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Flask
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_domainguard.check import check_target
from flask_domainguard.sweep import Sweep
from flask_domainguard.timeutil import utcnow
from tests.guard_helpers import add, write_status

UTC = timezone.utc
START = datetime(2024, 1, 1, tzinfo=UTC)
VERIFIED = datetime(2016, 1, 1, tzinfo=UTC)
_serial = itertools.count()


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class World:
    """The registry's truth about one domain, and what the product has seen of it."""

    phase: str = "owned"  # owned, lapsing, released, reregistered, sold
    expires: datetime = START + timedelta(days=20)
    lapsed_at: datetime | None = None
    taken_at: datetime | None = None
    failing: bool = False
    lapse_seen: bool = False  # a writer observed the lapse (before any change of hands)
    taken_seen: bool = False  # a writer observed the change of hands, in a way it can know
    log: list[str] = field(default_factory=list)

    def answer(self) -> dict[str, Any]:
        if self.failing:
            return {"registered": None, "error": "503 from the registry"}
        if self.phase == "released":
            return {"registered": False}
        doc: dict[str, Any] = {
            "registered": True,
            "statuses": ["active"],
            "registered_at": "2010-01-01T00:00:00Z",
            "expires_at": iso(self.expires),
        }
        if self.phase == "reregistered":
            assert self.taken_at is not None
            doc["registered_at"] = iso(self.taken_at)
        elif self.phase == "sold":
            assert self.taken_at is not None
            doc["transferred_at"] = iso(self.taken_at)
        return doc

    def advance(self, now: datetime, branch: bool) -> None:
        """The next event of the domain's life; ``branch`` picks between two ways on."""
        if self.phase == "owned":
            self.phase, self.lapsed_at = "lapsing", now
            self.expires = now - timedelta(days=1)
        elif self.phase == "lapsing" and branch:
            self.phase = "released"
        elif self.phase == "lapsing":
            self.phase, self.taken_at = "sold", now
            self.expires = now + timedelta(days=365)
        elif self.phase == "released" and branch:
            self.phase, self.taken_at = "reregistered", now
            self.expires = now + timedelta(days=365)
        elif self.phase == "released":
            pass  # nobody registers it yet
        else:
            self.expires += timedelta(days=365)  # the buyer renews: nothing looks odd now

    def observed(self) -> None:
        """A writer (sweep or live check) just observed the current answer successfully."""
        if self.phase in ("lapsing", "released"):
            self.lapse_seen = True
        elif self.phase == "reregistered" or (self.phase == "sold" and self.lapse_seen):
            self.taken_seen = True


step = st.one_of(
    st.tuples(st.just("world"), st.booleans()),
    st.tuples(st.just("tick"), st.sampled_from([1, 3, 7, 25, 24 * 10])),
    st.tuples(st.just("fail"), st.booleans()),
    st.tuples(st.sampled_from(["sweep", "live", "check", "buyer_address"]), st.just(False)),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=4, max_size=16))
def test_a_seen_change_of_hands_is_never_forgotten(
    app: Flask, guard: Any, make_user: Any, steps: list[tuple[str, Any]]
) -> None:
    n = next(_serial)
    name = f"shop{n}.com"
    victim = f"owner@{name}"
    world = World()
    with freeze_time(START) as clock:
        add(guard, make_user(), victim, verified_at=VERIFIED)
        for kind, flag in steps:
            now = utcnow()
            if kind == "world":
                clock.tick(timedelta(minutes=1))  # events come after what was seen before
                world.advance(utcnow(), flag)
            elif kind == "tick":
                clock.tick(timedelta(hours=int(flag)))
            elif kind == "fail":
                world.failing = flag
            write_status(app, {name: world.answer()})
            before = guard.db.session.get(guard.models.Domain, name)
            checked_before = before.checked_at if before is not None else None
            if kind == "sweep":
                sweep = Sweep(guard, retry_base=0.0)
                sweep.run(names=[name])
            elif kind == "live":
                decision = guard.reset_decision(victim)
                if world.taken_seen:
                    assert not decision.allowed, (world.log, decision)
            elif kind == "check":
                check_target(guard, victim)
            elif kind == "buyer_address" and world.phase in ("reregistered", "sold"):
                add(guard, make_user(), f"buyer{len(world.log)}@{name}")
            guard.db.session.expire_all()
            row = guard.db.session.get(guard.models.Domain, name)
            if kind in ("sweep", "live") and row is not None and row.checked_at != checked_before:
                world.observed()
            world.log.append(f"{now:%m-%d %H:%M} {kind} {flag} -> {world.phase}")
            if world.taken_seen:
                assert not guard.safe_to_mail(victim), world.log
        if world.taken_seen:
            assert not guard.reset_decision(victim).allowed, world.log
