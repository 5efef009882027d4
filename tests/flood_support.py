"""A reset flood against a real server: the host app in its own process behind a bounded pool
of request threads (as gunicorn's ``--threads 8``), on 127.0.0.1, with werkzeug's
``ProxyFix`` so that ``X-Forwarded-For`` gives each simulated client its own address.

Used by ``tests/test_flood.py`` (reduced size) and ``benchmarks/reset_flood_bench.py`` (the
full size of issue 17). Nothing leaves the loopback interface: the forwarded addresses are
only header values.

``python -m tests.flood_support`` serves the app described by the JSON in ``FLOOD_CONFIG`` and
prints its port on the first line of stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests import hostapp

ROOT = Path(__file__).resolve().parents[1]


# -- the server ----------------------------------------------------------------------------


def _serve() -> None:  # pragma: no cover - runs in the server process
    from werkzeug.middleware.proxy_fix import ProxyFix
    from werkzeug.serving import BaseWSGIServer

    config = json.loads(os.environ["FLOOD_CONFIG"])
    threads = int(config.pop("_THREADS", 8))
    app = hostapp.create_app(config)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]

    class PooledServer(BaseWSGIServer):
        """One pool of request threads, like a threaded gunicorn worker."""

        request_queue_size = 1024

        def __init__(self) -> None:
            super().__init__("127.0.0.1", 0, app)
            self.pool = ThreadPoolExecutor(threads, thread_name_prefix="request")

        def process_request(self, request: Any, client_address: Any) -> None:
            self.pool.submit(self._work, request, client_address)

        def _work(self, request: Any, client_address: Any) -> None:
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = PooledServer()
    print(server.server_address[1], flush=True)
    server.serve_forever()


class FloodServer:
    """The host app served from a subprocess; stop it with :meth:`stop`."""

    def __init__(self, config: dict[str, Any], *, threads: int = 8) -> None:
        env = dict(
            os.environ,
            FLOOD_CONFIG=json.dumps({**config, "_THREADS": threads}, default=str),
            PYTHONPATH=str(ROOT),
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.flood_support"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"the flood server did not start: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{int(line)}"

    def stop(self) -> str:
        """Stop the server; its stderr (logs)."""
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return str(err)


# -- the data ------------------------------------------------------------------------------


def seed_users(guard: Any, count: int) -> list[str]:
    """``count`` users, each with one verified address on its own healthy domain."""
    from flask_domainguard.timeutil import utcnow

    db = hostapp.db
    now = utcnow()
    domains = [f"legit{i:04d}.com" for i in range(count)]
    db.session.execute(
        sa.insert(guard.models.Domain),
        [{"name": n, "statuses": "", "failures": 0, "created_at": now} for n in domains],
    )
    start = int(db.session.scalar(sa.select(sa.func.max(hostapp.User.id))) or 0) + 1
    db.session.execute(sa.insert(hostapp.User), [{"id": start + i} for i in range(count)])
    addresses = [f"user{i}@{name}" for i, name in enumerate(domains)]
    db.session.execute(
        sa.insert(guard.models.EmailAddress),
        [
            {
                "user_id": start + i,
                "address": address,
                "host": domains[i],
                "registrable": domains[i],
                "primary": True,
                "verified_at": now - __import__("datetime").timedelta(days=400),
                "created_at": now - __import__("datetime").timedelta(days=400),
            }
            for i, address in enumerate(addresses)
        ],
    )
    db.session.commit()
    return addresses


# -- the flood -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    address: str
    client: str
    legit: bool


@dataclass
class FloodResult:
    """Per-request figures of one flood."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    answered_at: dict[str, float] = field(default_factory=dict)  # legit address -> time
    started: float = 0.0
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": len(self.latencies_ms),
            "statuses": self.statuses,
            "seconds": round(self.seconds, 2),
            "requests_per_second": round(len(self.latencies_ms) / self.seconds, 1),
            "p50_ms": round(statistics.median(self.latencies_ms), 1),
            "p99_ms": round(self.percentile(0.99), 1),
            "max_ms": round(max(self.latencies_ms), 1),
        }


def plan(legit: list[str], *, total: int, attacker_clients: int, seed: int = 17) -> list[Shot]:
    """``total`` requests: one from each legitimate user (from its own client address), the
    rest for unknown addresses from ``attacker_clients`` addresses, shuffled together."""
    rng = random.Random(seed)
    shots = [Shot(a, f"10.1.{i // 250}.{i % 250 + 1}", True) for i, a in enumerate(legit)]
    for n in range(total - len(legit)):
        domain = legit[rng.randrange(len(legit))].split("@")[1]
        client = rng.randrange(attacker_clients)
        shots.append(Shot(f"guess{n}@{domain}", f"10.2.{client // 250}.{client % 250 + 1}", False))
    rng.shuffle(shots)
    return shots


async def _fire(url: str, shots: list[Shot], concurrency: int, result: FloodResult) -> None:
    import httpx

    queue: asyncio.Queue[Shot] = asyncio.Queue()
    for shot in shots:
        queue.put_nowait(shot)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:

        async def worker() -> None:
            while True:
                try:
                    shot = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                began = time.perf_counter()
                try:
                    response = await client.post(
                        "/domainguard/reset",
                        data={"email": shot.address},
                        headers={"X-Forwarded-For": shot.client},
                    )
                    code = response.status_code
                except httpx.HTTPError:
                    code = 0
                result.latencies_ms.append((time.perf_counter() - began) * 1000)
                result.statuses[code] = result.statuses.get(code, 0) + 1
                if shot.legit:
                    result.answered_at[shot.address] = time.monotonic()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def flood(url: str, shots: list[Shot], *, concurrency: int) -> FloodResult:
    """Send ``shots`` with ``concurrency`` connections at once; wait for every answer."""
    result = FloodResult(started=time.monotonic())
    asyncio.run(_fire(url, shots, concurrency, result))
    result.seconds = time.monotonic() - result.started
    return result


def wait_for_mail(
    sink: Any, addresses: list[str], *, timeout: float, delivered_at: dict[str, float]
) -> None:
    """Wait until each of ``addresses`` got mail at ``sink`` (or ``timeout`` passed),
    noting when each first arrived."""
    deadline = time.monotonic() + timeout
    wanted = set(addresses)
    seen = 0
    while time.monotonic() < deadline:
        envelopes = list(sink.envelopes)
        for _, rcpts in envelopes[seen:]:
            for rcpt in rcpts:
                if rcpt in wanted and rcpt not in delivered_at:
                    delivered_at[rcpt] = time.monotonic()
        seen = len(envelopes)
        if wanted <= set(delivered_at):
            return
        time.sleep(0.05)


if __name__ == "__main__":  # pragma: no cover
    _serve()
