"""kill -9 of a sweep at random moments, then a rerun: the end state is the uninterrupted one.

Each trial seeds the same data, starts ``flask domainguard sweep`` in a subprocess, kills it
with SIGKILL somewhere in its run (claiming, looking up, applying a batch or finishing), waits
for its leases to expire, and runs the sweep again to the end. The state it leaves (every
address's verified state and reason, every domain's verdict and confirmation, the journal,
the held actions) must equal what one uninterrupted run leaves, and no address may be
unverified without exactly one journal row.
"""

from __future__ import annotations

import json
import random
import signal
import time
from typing import Any

import pytest

from tests import hostapp
from tests.sweep_support import StatusServer, bulk_seed, snapshot, sweep_process

DOMAINS = 240
LEASE_SECONDS = 1


@pytest.fixture
def status_server(status_server: StatusServer) -> StatusServer:
    status_server.delay = 0.015
    return status_server


def scenario(status_server: StatusServer) -> tuple[dict[str, int], dict[str, str]]:
    domains = {f"c{i:03d}.com": 1 + i % 3 for i in range(DOMAINS)}
    answers = ["active"] * 6 + ["undelegated inactive", "active expiring", "active deleting", "500"]
    first_seen: dict[str, str] = {}
    for i, name in enumerate(domains):
        answer = answers[i % len(answers)]
        status_server.answers[name] = answer
        if answer == "undelegated inactive" and i % 20 < 10:
            first_seen[name] = "released"  # seen 7 h ago: this run confirms and acts
        if answer == "active deleting":
            first_seen[name] = "expired"
    return domains, first_seen


def reset(guard: Any, domains: dict[str, int], first_seen: dict[str, str]) -> None:
    hostapp.db.session.remove()
    hostapp.db.drop_all()
    hostapp.db.create_all()
    bulk_seed(guard, domains, first_seen=first_seen)


def finish(config: dict[str, Any]) -> dict[str, Any]:
    proc = sweep_process(config)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 1), err[-3000:]
    return dict(json.loads(out))


@pytest.mark.slow
def test_kill_9_then_rerun_equals_an_uninterrupted_run(
    app: Any, guard: Any, app_config: dict[str, Any], status_server: StatusServer
) -> None:
    config = {
        "SQLALCHEMY_DATABASE_URI": app_config["SQLALCHEMY_DATABASE_URI"],
        **status_server.config(),
        "DOMAINGUARD_SWEEP_RETRIES": 0,
        "DOMAINGUARD_SWEEP_BATCH_SIZE": 12,
        "DOMAINGUARD_SWEEP_CONCURRENCY": 4,
        "DOMAINGUARD_SWEEP_LEASE": LEASE_SECONDS,
        "DOMAINGUARD_MAX_UNVERIFY": 10_000,
    }
    domains, first_seen = scenario(status_server)
    reset(guard, domains, first_seen)
    started = time.monotonic()
    reference_report = finish(config)
    duration = time.monotonic() - started
    reference = snapshot(guard)
    assert reference_report["unverified"] > 50  # the trials cover the finishing phase too
    assert reference_report["checked"] == DOMAINS

    rng = random.Random(4)
    killed = 0
    for trial in range(5):
        reset(guard, domains, first_seen)
        proc = sweep_process(config)
        # Spread the kills over the whole run: start-up, batches, the finishing phase.
        time.sleep(rng.uniform(0.3, duration * 0.95))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=60)
        time.sleep(LEASE_SECONDS + 0.2)  # the dead run's leases and planned actions expire
        finish(config)
        state = snapshot(guard)
        assert state == reference, f"trial {trial} differs from the uninterrupted run"
        for address, (verified, _reason) in state["addresses"].items():
            assert verified or state["unverified_events"].count(address) == 1, address
    assert killed >= 4, "most trials must kill a running sweep"
