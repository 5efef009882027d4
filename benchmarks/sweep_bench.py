"""Benchmark of ``flask domainguard sweep`` at scale, against a local status server.

Seeds N verified addresses over M registrable domains (plus some on trusted providers) into a
SQLite file with bulk inserts (not timed), starts ``benchmarks/status_server.py`` on
127.0.0.1 in another process (Fastly-style answers after ``--latency`` seconds, mostly active,
some expiring, deleting, released and unknown), runs the real command
``python -m flask --app benchmarks.sweep_bench:create_app domainguard sweep --json`` in a
subprocess and prints one JSON line per sweep::

    python benchmarks/sweep_bench.py --addresses 1000000 --domains 100000

In the same invocation a bare aiohttp loop (no database, no policy: the bare-client limit)
fetches and JSON-parses the same domains' answers from the same server with the same
concurrency, in a process of its own; its line comes first, and each sweep's line adds
``ratio_vs_bare`` (the sweep command's seconds per lookup, its interpreter's start and
imports included, over the bare loop's; 1.0 is the limit) and ``run_ratio_vs_bare`` (the
same for the sweep's run alone, ``run_s``: like for like, since the bare loop's time does
not count its start either). The peak memory of a sweep is that of its process plus its
lookup process (``lookups_in``), if it had one.
``--no-bare`` skips it.

``--second-run`` sweeps again with every domain made due and DOMAINGUARD_CONFIRM_AFTER = 0,
so the unsafe domains found by the first run are confirmed and their addresses unverified
(the first run only records ``unsafe_since``: the confirmation rule). ``--profile FILE``
runs the (first) sweep under py-spy (``pip install py-spy``) and writes folded stacks to FILE.

``--backend rdap`` looks the domains up in the status server's RDAP face instead (a bootstrap
file naming it for ``.com``); ``--dns-evidence always`` also reads every domain's DNS (NS,
MX, DS) from ``tests/dns_server.py`` on 127.0.0.1 (UDP and TCP, in this process), and the JSON
line adds the DNS queries it answered. The DNS figures of ``docs/sweep.md``::

    python benchmarks/sweep_bench.py --addresses 20000 --domains 20000 --trusted-share 0 \
        --backend rdap --second-run
    python benchmarks/sweep_bench.py --addresses 20000 --domains 20000 --trusted-share 0 \
        --backend rdap --dns-evidence always --second-run

(the first run with ``always`` also records every address's first-seen DNS baseline; the
second is the steady state).

``--workers 1,2`` measures how the sweep scales over several workers sharing one throwaway
PostgreSQL server (``tests/pgserver.py``), seeded once and reset before each count::

    python benchmarks/sweep_bench.py --workers 1,2 --mode celery
    python benchmarks/sweep_bench.py --workers 1,2 --mode processes

``--mode celery`` (needs the ``celery`` extra and ``redis-server``) starts a redis-server and
N Celery worker processes (solo pool) and times one run of ``flask_domainguard.sweep.start``
from dispatch to its chord's finish; ``--mode processes`` times N ``flask domainguard sweep``
commands started together (they share the work through leases). Each count prints one JSON
line with the CPU seconds each part used (sweepers, status server, PostgreSQL, Redis), how
busy the machine's cores were, and the database's commits and row updates per 1000 domains.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_domainguard import DomainGuard

ROOT = Path(__file__).resolve().parents[1]
TRUSTED = ["gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me"]


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str | None] = mapped_column(nullable=True)


guard = DomainGuard(db=db, user_model=User)


_celery_app: Any = None


def __getattr__(name: str) -> Any:
    """``celery -A benchmarks.sweep_bench:celery_app``: a Celery app for :func:`create_app`."""
    global _celery_app
    if name != "celery_app":
        raise AttributeError(name)
    if _celery_app is None:
        from flask_domainguard.contrib.celery import celery_init_app

        _celery_app = celery_init_app(create_app())
    return _celery_app


def create_app() -> Flask:
    """The benchmark's host app; config from the JSON in ``SWEEP_BENCH_CONFIG``."""
    app = Flask("sweep_bench")
    app.config.update(MAIL_SUPPRESS_SEND=True, MAIL_DEFAULT_SENDER="bench@localhost")
    # Where mailed links would point (init_app wants one outside debug and testing).
    app.config["DOMAINGUARD_EXTERNAL_URL"] = "http://127.0.0.1"
    app.config.update(json.loads(os.environ["SWEEP_BENCH_CONFIG"]))
    db.init_app(app)
    guard.init_app(app)
    return app


def seed(config: dict[str, Any], addresses: int, domains: int, trusted_share: float) -> list[str]:
    """Bulk-insert users, domains and addresses; return the custom domains' names."""
    os.environ["SWEEP_BENCH_CONFIG"] = json.dumps(config)
    app = create_app()
    names = [f"bench-{i:07d}.com" for i in range(domains)]
    now = datetime.now(timezone.utc)
    with app.app_context():
        db.create_all()
        models = guard.models
        session = db.session
        session.execute(
            sa.insert(models.Domain),
            [
                {"name": n, "statuses": "", "failures": 0, "created_at": now, "next_check_at": now}
                for n in [*names, *TRUSTED]
            ],
        )
        on_trusted = int(addresses * trusted_share)
        chunk = 50_000
        for start in range(0, addresses, chunk):
            stop = min(start + chunk, addresses)
            session.execute(sa.insert(User), [{"id": i + 1} for i in range(start, stop)])
            rows = []
            for i in range(start, stop):
                # Custom domains first, round-robin, so every one gets about the same share.
                if i < addresses - on_trusted:
                    domain = names[i % domains]
                else:
                    domain = TRUSTED[i % len(TRUSTED)]
                rows.append(
                    {
                        "user_id": i + 1,
                        "address": f"u{i}@{domain}",
                        "host": domain,
                        "registrable": domain,
                        "primary": True,
                        "verified_at": now - timedelta(days=400),
                        "created_at": now - timedelta(days=400),
                    }
                )
            session.execute(sa.insert(models.EmailAddress), rows)
            session.commit()
    return names


def start_server(latency: float) -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "status_server.py"), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("LISTENING"):
        server.kill()
        raise RuntimeError(f"status server did not start: {line!r}")
    return server, int(line.split()[1])


def vm_hwm_mb(pid: int | str = "self") -> float | None:
    """Peak resident memory of a live process in MB (``VmHWM``), or ``None`` once gone.

    Not ``ru_maxrss``: a child started by fork and exec inherits its parent's high-water mark
    at the fork, so ``ru_maxrss`` reports this script's own size (the seeded data) instead.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the sweep's lookup process)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


class PeakWatcher:
    """Samples a child's ``VmHWM`` every 0.1 s until it exits (the mark only grows), plus
    that of its own children (a lookup process): their sum is the peak reported, which
    counts pages they share after the fork twice (an upper bound)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._children: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            value = vm_hwm_mb(self.pid)
            if value is not None:
                for child in children_of(self.pid):
                    self._children[child] = max(
                        self._children.get(child, 0.0), vm_hwm_mb(child) or 0.0
                    )
                self.peak = max(self.peak, value + sum(self._children.values()))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_sweep(
    config: dict[str, Any], profile: str | None
) -> tuple[dict[str, Any], float, float, float]:
    """Run the sweep command; its JSON report, wall seconds, peak RSS in MB and CPU
    seconds."""
    env = dict(os.environ, SWEEP_BENCH_CONFIG=json.dumps(config), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "flask"]
    if profile:
        # py-spy samples every thread (cProfile would miss the lookup thread); the output
        # is folded stacks, one "frame;frame;... count" line per distinct stack.
        spy = Path(sys.executable).with_name("py-spy")
        command = [
            str(spy),
            "record",
            "--format",
            "raw",
            "-r",
            "200",
            "-o",
            profile,
            "--",
            *command,
        ]
    command += ["--app", "benchmarks.sweep_bench:create_app", "domainguard", "sweep", "--json"]
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    watcher = PeakWatcher(proc.pid)
    assert proc.stdout is not None
    out = proc.stdout.read()
    peak = watcher.stop()  # stdout closed: the report is written, the process is ending
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"sweep exited with {proc.returncode}: {out[-2000:]}")
    return json.loads(out), wall, peak, usage.ru_utime + usage.ru_stime


def bare_urls(backend: str, port: int, names: list[str]) -> list[str]:
    """The URLs the sweep's backend asks for ``names``."""
    if backend == "fastly":
        return [f"http://127.0.0.1:{port}/status?domain={name}" for name in names]
    return [f"http://127.0.0.1:{port}/domain/{name}" for name in names]


async def bare_loop(urls: list[str], concurrency: int, headers: dict[str, str]) -> int:
    """GET every URL with ``concurrency`` in flight and parse its JSON; answers parsed."""
    import asyncio

    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    parsed = 0
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        queue = iter(urls)

        async def worker() -> None:
            nonlocal parsed
            for url in queue:
                async with session.get(url) as answer:
                    json.loads(await answer.read())
                    parsed += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return parsed


def run_bare(args: argparse.Namespace, port: int, names: list[str]) -> dict[str, Any]:
    """The bare loop in a process of its own (so its CPU and peak memory are its own)."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--bare-port",
        str(port),
        "--backend",
        args.backend,
        "--concurrency",
        str(args.concurrency),
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate("\n".join(names))
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"bare loop exited with {proc.returncode}: {out[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    result["process_wall_s"] = round(wall, 2)
    return result


def main_bare(args: argparse.Namespace) -> None:
    """``--bare-port``: the bare loop over the domain names on stdin; one JSON line."""
    import asyncio
    import resource

    names = sys.stdin.read().split()
    urls = bare_urls(args.backend, args.bare_port, names)
    headers = {"Fastly-Key": "bench-key"} if args.backend == "fastly" else {}
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    parsed = asyncio.run(bare_loop(urls, args.concurrency, headers))
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # The loop's own CPU: not the interpreter's start or this module's imports.
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    print(
        json.dumps(
            {
                "run": "bare aiohttp loop",
                "lookups": parsed,
                "wall_s": round(wall, 2),
                "lookups_per_s": round(parsed / wall, 1) if wall else None,
                "cpu_ms_per_lookup": round(1000 * cpu / max(parsed, 1), 3),
                "peak_rss_mb": round(vm_hwm_mb() or 0.0, 1),
                "concurrency": args.concurrency,
                "backend": args.backend,
            }
        ),
        flush=True,
    )


def requests_seen(port: int) -> int:
    """Lookups the status server has answered so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as answer:
        return int(json.load(answer)["requests"])


def make_all_due(config: dict[str, Any]) -> None:
    os.environ["SWEEP_BENCH_CONFIG"] = json.dumps(config)
    app = create_app()
    with app.app_context():
        Domain = guard.models.Domain
        db.session.execute(sa.update(Domain).values(next_check_at=datetime.now(timezone.utc)))
        db.session.commit()


# -- --workers: several sweepers on one PostgreSQL server ----------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float, str]]:
    """Every process: pid -> (parent pid, CPU seconds, command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # After the name: state, ppid, ...; utime and stime are the 12th and 13th.
        found[int(entry.name)] = (
            int(fields[1]),
            (int(fields[11]) + int(fields[12])) / _TICK,
            cmdline,
        )
    return found


class CpuSampler:
    """CPU seconds used by each part during a run, sampled every 0.2 s from /proc, so that
    processes ending during the run (sweep commands, database backends) still count.

    :param roles: role -> a test on (pid, parent pid, command line) that picks its processes.
    """

    def __init__(self, roles: dict[str, Any]) -> None:
        self.roles = roles
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self, baseline: bool) -> None:
        for pid, (ppid, cpu, cmdline) in _processes().items():
            if baseline:
                self.first[pid] = cpu
            for role, picks in self.roles.items():
                if picks(pid, ppid, cmdline):
                    self.last[pid] = (role, cpu)
                    break

    def _loop(self) -> None:
        while not self.stop_event.wait(0.2):
            self._sample(False)

    def __enter__(self) -> CpuSampler:
        self._sample(True)
        self.last.clear()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join()
        self._sample(False)

    def seconds(self) -> dict[str, float]:
        totals = dict.fromkeys(self.roles, 0.0)
        for pid, (role, cpu) in self.last.items():
            totals[role] += cpu - self.first.get(pid, 0.0)
        return totals


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def db_counters(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT xact_commit, tup_updated, tup_inserted, tup_fetched "
                    "FROM pg_stat_database WHERE datname = current_database()"
                )
            ).one()
    finally:
        engine.dispose()
    return {"commits": row[0], "updated": row[1], "inserted": row[2], "fetched": row[3]}


def reset_state(config: dict[str, Any]) -> None:
    """Every domain due and unchecked again, no journal or held actions: a fresh first run."""
    os.environ["SWEEP_BENCH_CONFIG"] = json.dumps(config)
    app = create_app()
    now = datetime.now(timezone.utc)
    with app.app_context():
        m = guard.models
        db.session.execute(
            sa.update(m.Domain).values(
                next_check_at=now,
                checked_at=None,
                verdict=None,
                verdict_until=None,
                verdict_reason=None,
                unsafe_since=None,
                lapse_seen_at=None,
                changed_hands_at=None,
                registered=None,
                statuses="",
                failures=0,
                last_error=None,
                lease_owner=None,
                lease_until=None,
            )
        )
        db.session.execute(sa.update(m.EmailAddress).values(expiry_warned_for=None))
        db.session.execute(sa.delete(m.Event))
        db.session.execute(sa.delete(m.HeldAction))
        db.session.commit()
        db.engine.dispose()
    engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"], isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()


def sweep_with_processes(config: dict[str, Any], count: int) -> dict[str, Any]:
    """``count`` sweep commands at once; their reports' counts added up."""
    env = dict(os.environ, SWEEP_BENCH_CONFIG=json.dumps(config), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "flask", "--app", "benchmarks.sweep_bench:create_app"]
    procs = [
        subprocess.Popen(
            [*command, "domainguard", "sweep", "--json"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    total: dict[str, Any] = {"checked": 0, "errors": 0, "unverified": 0, "held": 0}
    for proc in procs:
        assert proc.stdout is not None
        out = proc.stdout.read()
        if proc.wait() not in (0, 1):
            raise RuntimeError(f"sweep exited with {proc.returncode}: {out[-2000:]}")
        report = json.loads(out)
        for key in total:
            total[key] += report[key]
    return total


def main_workers(args: argparse.Namespace) -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the tests' server helpers
    from tests.celery_support import RedisServer, Workers, celery_config, find_redis_server
    from tests.pgserver import PostgresServer, find_pg_bin

    counts = [int(n) for n in args.workers.split(",")]
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("--workers needs the PostgreSQL server binaries (initdb, pg_ctl)")
    pg = PostgresServer(bin_dir)
    redis: RedisServer | None = None
    server, port = start_server(args.latency)
    workdir = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    try:
        url = pg.start()
        config: dict[str, Any] = {
            "SQLALCHEMY_DATABASE_URI": url,
            "DOMAINGUARD_STATUS_BACKEND": "fastly",
            "DOMAINGUARD_FASTLY_URL": f"http://127.0.0.1:{port}/status",
            "DOMAINGUARD_FASTLY_API_KEY": "bench-key",
            "DOMAINGUARD_SWEEP_CONCURRENCY": args.concurrency,
            "DOMAINGUARD_SWEEP_PER_SERVER": args.concurrency,
            "DOMAINGUARD_SWEEP_BATCH_SIZE": args.batch_size,
            "DOMAINGUARD_MAX_UNVERIFY": 10_000_000,
        }
        if args.mode == "celery":
            binary = find_redis_server()
            if binary is None:
                raise SystemExit("--mode celery needs redis-server (apt-get install redis-server)")
            redis = RedisServer(binary)
            config["CELERY"] = celery_config(redis.start())
        started = time.perf_counter()
        seed(config, args.addresses, args.domains, args.trusted_share)
        seeded = time.perf_counter() - started
        client: Any = None
        if args.mode == "celery":
            from flask_domainguard.contrib.celery import START_TASK, celery_init_app

            os.environ["SWEEP_BENCH_CONFIG"] = json.dumps(config)
            client = celery_init_app(create_app())
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
        redis_pid = redis.proc.pid if redis is not None and redis.proc is not None else -1
        roles = {
            "sweepers": lambda pid, ppid, cmd: "benchmarks.sweep_bench:" in cmd,
            "status_server": lambda pid, ppid, cmd: pid == server.pid,
            "postgres": lambda pid, ppid, cmd: postmaster in (pid, ppid),
            "redis": lambda pid, ppid, cmd: pid == redis_pid,
        }
        first_rate: float | None = None
        for count in counts:
            reset_state(config)
            workers: Workers | None = None
            if args.mode == "celery":
                workers = Workers(
                    config,
                    count,
                    workdir / f"workers-{count}",
                    pool="prefork" if args.worker_concurrency > 1 else "solo",
                    concurrency=args.worker_concurrency,
                    app_module="benchmarks.sweep_bench:celery_app",
                    env_key="SWEEP_BENCH_CONFIG",
                ).start(client)
            db_before = db_counters(url)
            busy_before, total_before = machine_ticks()
            requests_before = requests_seen(port)
            t0 = time.perf_counter()
            try:
                with CpuSampler(roles) as sampler:
                    if workers is not None:
                        begun = client.send_task(START_TASK, kwargs={"chunk_size": args.chunk_size})
                        info = begun.get(timeout=3600)
                        report = client.AsyncResult(info["finish_id"]).get(timeout=3600)
                        report["chunks"] = info["chunks"]
                    else:
                        report = sweep_with_processes(config, count)
                    wall = time.perf_counter() - t0
                    busy_after, total_after = machine_ticks()
            finally:
                if workers is not None:
                    workers.stop()
            time.sleep(1.0)  # PostgreSQL publishes its counters with a short delay
            db_after = db_counters(url)
            per_1000 = 1000 / report["checked"] if report["checked"] else 0.0
            rate = report["checked"] / wall if wall else 0.0
            first_rate = first_rate or rate
            cpu = sampler.seconds()
            # Whatever else ran on the machine meanwhile (this script, other jobs).
            cpu["other"] = (busy_after - busy_before) / _TICK - sum(cpu.values())
            print(
                json.dumps(
                    {
                        "mode": args.mode,
                        "workers": count,
                        "addresses": args.addresses,
                        "domains": args.domains,
                        "lookups": report["checked"],
                        "server_requests": requests_seen(port) - requests_before,
                        "chunks": report.get("chunks"),
                        "wall_s": round(wall, 2),
                        "lookups_per_s": round(rate, 1),
                        "speedup": round(rate / first_rate, 2) if first_rate else None,
                        "cpu_s": {key: round(value, 1) for key, value in cpu.items()},
                        "cpu_ms_per_lookup": {
                            key: round(1000 * value / max(report["checked"], 1), 3)
                            for key, value in cpu.items()
                        },
                        "machine_busy_pct": round(
                            100 * (busy_after - busy_before) / max(total_after - total_before, 1),
                            1,
                        ),
                        "db_per_1000_domains": {
                            key: round((db_after[key] - db_before[key]) * per_1000, 1)
                            for key in db_after
                        },
                        "unverified": report["unverified"],
                        "errors": report["errors"],
                        "seed_s": round(seeded, 1),
                        "latency_s": args.latency,
                        "concurrency": args.concurrency,
                        "batch_size": args.batch_size,
                        "chunk_size": args.chunk_size if args.mode == "celery" else None,
                        "worker_concurrency": args.worker_concurrency
                        if args.mode == "celery"
                        else None,
                    }
                ),
                flush=True,
            )
    finally:
        server.kill()
        server.wait()
        if redis is not None:
            redis.stop()
        pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addresses", type=int, default=1_000_000)
    parser.add_argument("--domains", type=int, default=100_000)
    parser.add_argument("--trusted-share", type=float, default=0.15)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--db", help="SQLite file (default: a temporary one)")
    parser.add_argument("--second-run", action="store_true")
    parser.add_argument("--profile", help="write py-spy folded stacks of the first sweep here")
    parser.add_argument(
        "--workers", help="comma-separated worker counts, e.g. 1,2: on PostgreSQL (see above)"
    )
    parser.add_argument("--backend", choices=("fastly", "rdap"), default="fastly")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare aiohttp loop")
    parser.add_argument("--bare-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--dns-evidence",
        choices=("off", "fallback", "always"),
        default="off",
        help="DOMAINGUARD_DNS_EVIDENCE; 'always' starts the local DNS server",
    )
    parser.add_argument("--mode", choices=("celery", "processes"), default="celery")
    parser.add_argument("--chunk-size", type=int, default=5000, help="domains per Celery chunk")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=1,
        help="chunks each Celery worker runs at once (prefork pool when more than 1)",
    )
    args = parser.parse_args()
    if args.bare_port:
        main_bare(args)
        return
    if args.workers:
        main_workers(args)
        return

    workdir = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    path = Path(args.db) if args.db else workdir / "bench.sqlite"
    if path.exists():
        path.unlink()
    server, port = start_server(args.latency)
    dns_server = None
    try:
        config: dict[str, Any] = {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}",
            **backend_config(args.backend, port, workdir),
            **dns_config(args.dns_evidence),
            "DOMAINGUARD_SWEEP_CONCURRENCY": args.concurrency,
            # One API host serves every lookup, so the per-server cap is the whole concurrency.
            "DOMAINGUARD_SWEEP_PER_SERVER": args.concurrency,
            "DOMAINGUARD_SWEEP_BATCH_SIZE": args.batch_size,
            "DOMAINGUARD_MAX_UNVERIFY": 10_000_000,
        }
        if args.dns_evidence == "always":
            dns_server = start_dns_server()
            config["DOMAINGUARD_DNS_RESOLVERS"] = [dns_server.address]
        started = time.perf_counter()
        names = seed(config, args.addresses, args.domains, args.trusted_share)
        seeded = time.perf_counter() - started
        bare: dict[str, Any] | None = None
        if not args.no_bare:
            bare = run_bare(args, port, names)
            print(json.dumps(bare), flush=True)
        runs = [("first", config)]
        if args.second_run:
            runs.append(("second", {**config, "DOMAINGUARD_CONFIRM_AFTER": 0}))
        for label, run_config in runs:
            if label == "second":
                make_all_due(run_config)
            before = requests_seen(port)
            dns_before = sum(dns_server.queries.values()) if dns_server else 0
            report, wall, rss, cpu = run_sweep(
                run_config, args.profile if label == "first" else None
            )
            per_lookup = wall / max(report["checked"], 1)
            ratio = (
                per_lookup / (bare["wall_s"] / max(bare["lookups"], 1))
                if bare and bare["wall_s"]
                else None
            )
            # Like for like: the sweep's run (claims, lookups, judging, mail, finish) against
            # the bare loop, neither counting its interpreter's start and imports.
            run_ratio = (
                (report["seconds"] / max(report["checked"], 1))
                / (bare["wall_s"] / max(bare["lookups"], 1))
                if bare and bare["wall_s"]
                else None
            )
            dns_queries = sum(dns_server.queries.values()) - dns_before if dns_server else 0
            print(
                json.dumps(
                    {
                        "run": label,
                        "addresses": args.addresses,
                        "domains": args.domains,
                        # One lookup per due, untrusted domain; attempts add the retries.
                        "lookups": report["checked"],
                        "attempts": report["attempts"],
                        "server_requests": requests_seen(port) - before,
                        "wall_s": round(wall, 2),
                        "lookups_per_s": round(report["checked"] / wall, 1) if wall else None,
                        "ratio_vs_bare": round(ratio, 2) if ratio else None,
                        "run_s": round(report["seconds"], 2),
                        "run_ratio_vs_bare": round(run_ratio, 2) if run_ratio else None,
                        "cpu_ms_per_lookup": round(1000 * cpu / max(report["checked"], 1), 3),
                        "peak_rss_mb": round(rss, 1),
                        "lookups_in": report.get("lookups_in"),
                        "unverified": report["unverified"],
                        "unsafe_first_seen": report["unsafe_first_seen"],
                        "errors": report["errors"],
                        "verdicts": {k: v for k, v in report["verdicts"].items() if v},
                        "seed_s": round(seeded, 1),
                        "latency_s": args.latency,
                        "concurrency": args.concurrency,
                        "backend": args.backend,
                        "dns_evidence": args.dns_evidence,
                        "dns_queries": dns_queries,
                        "dns_queries_per_s": round(dns_queries / wall, 1) if wall else None,
                    }
                ),
                flush=True,
            )
    finally:
        server.kill()
        server.wait()
        if dns_server is not None:
            dns_server.stop()


def backend_config(backend: str, port: int, workdir: Path) -> dict[str, Any]:
    """Config for the status server's Fastly face, or its RDAP face (for ``.com``)."""
    if backend == "fastly":
        return {
            "DOMAINGUARD_STATUS_BACKEND": "fastly",
            "DOMAINGUARD_FASTLY_URL": f"http://127.0.0.1:{port}/status",
            "DOMAINGUARD_FASTLY_API_KEY": "bench-key",
        }
    bootstrap = workdir / "rdap-bootstrap.json"
    doc = {"version": "1.0", "services": [[["com"], [f"http://127.0.0.1:{port}/"]]]}
    bootstrap.write_text(json.dumps(doc))
    return {
        "DOMAINGUARD_STATUS_BACKEND": "rdap",
        "DOMAINGUARD_RDAP_BOOTSTRAP_FILE": str(bootstrap),
        "DOMAINGUARD_RDAP_BOOTSTRAP_URL": f"http://127.0.0.1:{port}/no-bootstrap-here",
        "DOMAINGUARD_RDAP_SERVERS": {},
    }


def dns_config(mode: str) -> dict[str, Any]:
    """``DOMAINGUARD_DNS_EVIDENCE``; resolvers point nowhere but this machine."""
    return {"DOMAINGUARD_DNS_EVIDENCE": mode, "DOMAINGUARD_DNS_RESOLVERS": ["127.0.0.1:9"]}


def start_dns_server() -> Any:
    """The tests' DNS server, every name delegated to the same two name servers."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.dns_server import DnsServer, zone

    server = DnsServer()
    server.default = zone
    return server.start()


if __name__ == "__main__":
    main()
