"""The sweep's lookups in a forked child process (:mod:`flask_domainguard.lookupprocess`) and
observations applied as they come in, against a real status server on 127.0.0.1.

The attacks: a child that dies or hangs in the middle of a run must not leave anything judged
on partial facts (the run stops, gives its leases back and touches no address); an
observation that cannot cross the pipe must read as "cannot tell", never as an answer; and
the database connection the child inherits must still serve the parent afterwards
(PostgreSQL with ``--db postgresql``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from flask_domainguard import lookupprocess
from flask_domainguard.lookupprocess import LookupProcess, LookupProcessError, choose_worker
from flask_domainguard.lookups import LookupLimits
from flask_domainguard.status.observation import Observation
from flask_domainguard.sweep import Sweep
from tests import hostapp
from tests.sweep_support import StatusServer, seed

pytestmark = [
    pytest.mark.use_status_server,
    pytest.mark.skipif(sys.platform != "linux", reason="the lookup process forks: Linux only"),
]

ANSWERS = {
    "ok": "active",
    "gone": "undelegated inactive",
    "expiring": "active expiring",
    "flaky": "flaky:2:active",
    "garbage": "garbage",
    "err": "500",
}


def stored(guard: Any, name: str) -> tuple[Any, ...]:
    """What a run stored of a domain, as facts that must not depend on where lookups ran."""
    hostapp.db.session.expire_all()
    row = hostapp.db.session.get(guard.models.Domain, name)
    return (row.verdict, row.statuses, row.registered, row.failures, row.last_error is None)


def test_lookups_in_a_process_store_what_lookups_in_a_thread_store(
    guard: Any, status_server: StatusServer
) -> None:
    for where in ("thread", "process"):
        for key, answer in ANSWERS.items():
            status_server.answers[f"{where}-{key}.com"] = answer
        seed(guard, {f"{where}-{key}.com": 2 for key in ANSWERS})
    reports = {}
    for where in ("thread", "process"):
        names = [f"{where}-{key}.com" for key in ANSWERS]
        reports[where] = Sweep(guard, retry_base=0.01, lookups=where).run(names=names)
    assert reports["thread"].lookups_in == "thread"
    assert reports["process"].lookups_in == "process"
    for field in ("checked", "errors", "verdicts", "attempts", "unsafe_first_seen"):
        assert getattr(reports["process"], field) == getattr(reports["thread"], field), field
    assert reports["process"].checked == len(ANSWERS)
    assert reports["process"].attempts > len(ANSWERS), "the retries ran in the child too"
    for key in ANSWERS:
        assert stored(guard, f"process-{key}.com") == stored(guard, f"thread-{key}.com"), key
        assert status_server.hits[f"process-{key}.com"] == status_server.hits[f"thread-{key}.com"]
    # The connection the child inherited still serves the parent (no terminated session).
    assert hostapp.db.session.execute(sa.text("SELECT 1")).scalar() == 1


@pytest.mark.settings(DOMAINGUARD_SWEEP_LOOKUPS="process")
def test_the_setting_puts_a_whole_sweep_in_a_process(
    guard: Any, status_server: StatusServer
) -> None:
    seed(guard, {f"p{i}.com": 1 for i in range(12)})
    report = Sweep(guard, retry_base=0.01).run()
    assert report.lookups_in == "process" and report.checked == 12
    assert set(status_server.hits.values()) == {1}
    assert Sweep(guard).run().checked == 0, "everything was stored: nothing is due"


@pytest.mark.parametrize("where", ["thread", "process"])
@pytest.mark.settings(DOMAINGUARD_SWEEP_BATCH_SIZE=50)
def test_a_slow_domain_holds_up_no_other(
    guard: Any, status_server: StatusServer, where: str
) -> None:
    status_server.slow = 2.0
    status_server.answers["slow.com"] = "timeout"
    seed(guard, {"slow.com": 1, **{f"quick{i}.com": 1 for i in range(5)}})
    progress: list[int] = []
    applied_at: list[float] = []
    started = time.monotonic()

    def note(count: int) -> None:
        progress.append(count)
        applied_at.append(time.monotonic() - started)

    report = Sweep(guard, retry_base=0.01, lookups=where).run(on_progress=note)
    assert report.checked == 6
    # One batch was claimed; its five quick answers were applied before the slow one came.
    assert progress == [5, 1]
    assert applied_at[0] < applied_at[1]


class DyingBackend:
    """Answers after a while, except that looking up ``die.com`` ends the process it runs in."""

    name = "dying"

    async def observe(self, domain: str, *, client: Any = None, timeout: Any = None) -> Observation:
        if domain == "die.com":
            os._exit(7)
        await asyncio.sleep(2.0)
        return Observation(domain=domain, registered=False, source=self.name)

    def server_key(self, domain: str) -> str:
        return "dying"


def leases_and_checks(guard: Any) -> list[tuple[Any, Any]]:
    Domain = guard.models.Domain
    hostapp.db.session.expire_all()
    return list(hostapp.db.session.execute(sa.select(Domain.lease_owner, Domain.checked_at)))


def test_a_dying_lookup_process_stops_the_run_and_changes_nothing(
    guard: Any, status_server: StatusServer
) -> None:
    ids = seed(guard, {"die.com": 1, "lapsed-a.com": 1, "lapsed-b.com": 1})
    sweep = Sweep(guard, backend=DyingBackend(), lookups="process")
    with pytest.raises(LookupProcessError, match="exit code 7"):
        sweep.run()
    # The others would have read as unregistered: none of it may act, and nothing is leased.
    assert leases_and_checks(guard) == [(None, None)] * 3
    Address = guard.models.EmailAddress
    verified = hostapp.db.session.scalars(
        sa.select(Address.verified_at).where(
            Address.id.in_([i for rows in ids.values() for i in rows])
        )
    )
    assert all(v is not None for v in verified)
    # The next run starts at once (no lease to wait for).
    assert Sweep(guard, retry_base=0.01).run().checked == 3


class BlockingBackend:
    """Blocks the child's event loop (a host backend calling blocking code): no timeout fires."""

    name = "blocking"

    async def observe(self, domain: str, *, client: Any = None, timeout: Any = None) -> Observation:
        time.sleep(60)
        return Observation(domain=domain, registered=True, source=self.name)

    def server_key(self, domain: str) -> str:
        return "blocking"


@pytest.mark.settings(DOMAINGUARD_HTTP_TIMEOUT=0.5, DOMAINGUARD_SWEEP_RETRIES=0)
def test_a_hung_lookup_process_is_killed_and_the_run_stops(
    guard: Any, status_server: StatusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lookupprocess, "_SILENCE_MARGIN", 1.0)
    seed(guard, {"stuck.com": 1})
    started = time.monotonic()
    with pytest.raises(LookupProcessError, match="sent nothing"):
        Sweep(guard, backend=BlockingBackend(), lookups="process").run()
    assert time.monotonic() - started < 20, "the child was killed, not waited for"
    assert leases_and_checks(guard) == [(None, None)]


@dataclass(frozen=True, kw_only=True)
class OddObservation(Observation):
    """A host backend's observation carrying something that cannot be pickled."""

    hook: Any = None


class OddBackend:
    name = "odd"

    async def observe(self, domain: str, *, client: Any = None, timeout: Any = None) -> Observation:
        return OddObservation(domain=domain, registered=True, source=self.name, hook=lambda: 0)

    def server_key(self, domain: str) -> str:
        return "odd"


def test_an_observation_that_cannot_cross_the_pipe_tells_nothing() -> None:
    with LookupProcess(OddBackend(), LookupLimits(retries=0)) as lookups:
        observation = lookups.submit(["odd.com"]).result(timeout=30)["odd.com"]
    assert observation.registered is None, "never an answer"
    assert "could not be passed between processes" in (observation.error or "")


def test_auto_takes_the_process_only_for_a_large_sweep_it_can_fork_safely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    many = lookupprocess.AUTO_MIN_DOMAINS
    assert choose_worker("thread", 10**6) == "thread"
    assert choose_worker("process", 1) == "process"
    monkeypatch.setattr(lookupprocess.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(lookupprocess, "can_fork_safely", lambda: True)
    assert choose_worker("auto", many) == "process"
    assert choose_worker("auto", many - 1) == "thread"
    monkeypatch.setattr(lookupprocess, "can_fork_safely", lambda: False)
    assert choose_worker("auto", many) == "thread"
    monkeypatch.setattr(lookupprocess, "can_fork_safely", lambda: True)
    monkeypatch.setattr(lookupprocess.os, "sched_getaffinity", lambda pid: {0})
    assert choose_worker("auto", many) == "thread", "one core: nothing to gain"


def test_forking_is_safe_only_without_other_threads() -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert lookupprocess.can_fork_safely() is False
    finally:
        release.set()
        other.join()


def test_a_daemonic_pool_worker_does_not_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    class Daemonic:
        daemon = True

    monkeypatch.setattr(lookupprocess.threading, "active_count", lambda: 1)
    assert lookupprocess.can_fork_safely() is True
    monkeypatch.setattr(lookupprocess.multiprocessing, "current_process", lambda: Daemonic())
    assert lookupprocess.can_fork_safely() is False


def test_a_sweep_object_refuses_an_unknown_lookups_mode(guard: Any) -> None:
    with pytest.raises(ValueError, match="lookups must be"):
        Sweep(guard, lookups="fibers")


@pytest.mark.parametrize("where", ["thread", "process"])
@pytest.mark.settings(
    DOMAINGUARD_SWEEP_LEASE=1,
    DOMAINGUARD_SWEEP_BATCH_SIZE=2,
    DOMAINGUARD_SWEEP_CONCURRENCY=2,
    DOMAINGUARD_SWEEP_PER_SERVER=2,
    DOMAINGUARD_HTTP_TIMEOUT=6,
)
def test_a_domain_claimed_again_while_its_lookup_runs_is_looked_up_and_applied_once(
    guard: Any, status_server: StatusServer, where: str
) -> None:
    # a-slow.com is claimed first and answers after 2.5 s; meanwhile its 1 s lease runs out
    # and the run, still claiming the quick ones one slot at a time, claims it again.
    status_server.slow = 2.5
    status_server.delay = 0.06
    status_server.answers["a-slow.com"] = "timeout"
    seed(guard, {"a-slow.com": 1})
    seed(guard, {f"q{i:02d}.com": 1 for i in range(30)})
    progress: list[int] = []
    report = Sweep(guard, retry_base=0.01, lookups=where).run(on_progress=progress.append)
    assert report.checked == 31 and sum(progress) == 31
    assert status_server.hits["a-slow.com"] == 1, "one lookup, however often it was claimed"
    assert leases_and_checks(guard).count((None, None)) == 0


class SlowBackend:
    name = "slow"

    async def observe(self, domain: str, *, client: Any = None, timeout: Any = None) -> Observation:
        await asyncio.sleep(30)
        return Observation(domain=domain, registered=True, source=self.name)

    def server_key(self, domain: str) -> str:
        return "slow"

    async def aclose(self) -> None:
        return None


def test_closing_abandons_lookups_in_flight_and_fails_their_batches() -> None:
    lookups = LookupProcess(SlowBackend(), LookupLimits(retries=0, timeout=60)).start()
    pending = lookups.submit(["a.com", "b.com"])
    started = time.monotonic()
    lookups.close()
    assert time.monotonic() - started < 10, "a failing sweep is not held up by its lookups"
    with pytest.raises(LookupProcessError):
        pending.result(timeout=1)
