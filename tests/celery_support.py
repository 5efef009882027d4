"""Test helpers for the sweep on Celery: a throwaway redis-server, Celery worker processes,
the benchmark's status server in a subprocess, and PostgreSQL databases made on demand.

Also used by ``benchmarks/sweep_bench.py --workers N --mode celery``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str | None:
    """Path of Debian's ``redis-server``, or ``None`` when it is not installed."""
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None


class RedisServer:
    """A redis-server on 127.0.0.1 on a free port, without persistence, in a temp folder."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="domainguard-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start the server and wait until it answers PING; its URL."""
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self.url
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def celery_config(redis_url: str) -> dict[str, Any]:
    """The ``CELERY`` settings of the host app: Redis as broker and result backend."""
    return {
        "broker_url": f"{redis_url}/0",
        "result_backend": f"{redis_url}/1",
        # Chunks take seconds to minutes: one at a time per worker process.
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
    }


class Workers:
    """Celery worker processes (``-A tests.celery_worker``), ``concurrency`` pool slots each.

    :param config: the Flask app's config (JSON-ready), with ``CELERY``.
    :param app_module: the module ``celery -A`` loads; it reads ``SWEEP_TEST_CONFIG``.
    """

    def __init__(
        self,
        config: dict[str, Any],
        count: int,
        logdir: Path,
        *,
        pool: str = "solo",
        concurrency: int = 1,
        app_module: str = "tests.celery_worker:celery_app",
        env_key: str = "SWEEP_TEST_CONFIG",
    ) -> None:
        self.config = config
        self.count = count
        self.logdir = logdir
        self.pool = pool
        self.concurrency = concurrency
        self.app_module = app_module
        self.env_key = env_key
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names = [f"w{i}-{os.getpid()}@127.0.0.1" for i in range(count)]

    def log(self, index: int) -> str:
        return (self.logdir / f"worker{index}.log").read_text(errors="replace")

    def start(self, client: Any, timeout: float = 60) -> Workers:
        """Start the workers and wait until each answers a ping through ``client``."""
        env = dict(
            os.environ, PYTHONPATH=str(ROOT), **{self.env_key: json.dumps(self.config, default=str)}
        )
        self.logdir.mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(self.names):
            with open(self.logdir / f"worker{index}.log", "wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "celery",
                            "-A",
                            self.app_module,
                            "worker",
                            "--pool",
                            self.pool,
                            "--concurrency",
                            str(self.concurrency),
                            "--hostname",
                            name,
                            "--loglevel",
                            "INFO",
                            "--without-gossip",
                            "--without-mingle",
                        ],
                        cwd=ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + timeout
        waiting = set(self.names)
        while waiting:
            for reply in client.control.ping(timeout=0.5) or []:
                waiting -= set(reply)
            dead = [i for i, proc in enumerate(self.procs) if proc.poll() is not None]
            if dead:
                self.stop()
                raise RuntimeError(f"worker {dead[0]} died at start:\n{self.log(dead[0])[-3000:]}")
            if waiting and time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"workers {sorted(waiting)} did not answer a ping")
        return self

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL for any worker still up after 20 s."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class BenchStatusServer:
    """``benchmarks/status_server.py`` in a subprocess: hash-chosen answers, per-domain hits."""

    def __init__(self, latency: float = 0.0) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "status_server.py"),
                "--latency",
                str(latency),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("LISTENING"):
            self.proc.kill()
            raise RuntimeError(f"status server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/status"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as answer:
            return json.load(answer)

    def hits(self) -> dict[str, int]:
        """Requests per domain so far."""
        return {str(k): int(v) for k, v in self._get("/hits").items()}

    def requests(self) -> int:
        return int(self._get("/stats")["requests"])

    def config(self, api_key: str = "bench-key") -> dict[str, Any]:
        """App config pointing the 'fastly' backend here."""
        return {
            "DOMAINGUARD_STATUS_BACKEND": "fastly",
            "DOMAINGUARD_FASTLY_URL": self.url,
            "DOMAINGUARD_FASTLY_API_KEY": api_key,
        }

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def create_databases(server_url: str, names: Sequence[str]) -> dict[str, str]:
    """(Re)create empty databases on the PostgreSQL server of ``server_url``; their URLs."""
    import sqlalchemy as sa

    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    urls = {}
    try:
        with engine.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                urls[name] = server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        engine.dispose()
    return urls
