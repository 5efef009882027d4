"""Benchmark of ``flask domainguard sweep`` at scale, against a local status server.

Seeds N verified addresses over M registrable domains (plus some on trusted providers) into a
SQLite file with bulk inserts (not timed), starts ``benchmarks/status_server.py`` on
127.0.0.1 in another process (Fastly-style answers after ``--latency`` seconds, mostly active,
some expiring, deleting, released and unknown), runs the real command
``python -m flask --app benchmarks.sweep_bench:create_app domainguard sweep --json`` in a
subprocess and prints one JSON line per sweep::

    python benchmarks/sweep_bench.py --addresses 1000000 --domains 100000

``--second-run`` sweeps again with every domain made due and DOMAINGUARD_CONFIRM_AFTER = 0,
so the unsafe domains found by the first run are confirmed and their addresses unverified
(the first run only records ``unsafe_since``: the confirmation rule). ``--profile FILE``
runs the (first) sweep under py-spy (``pip install py-spy``) and writes folded stacks to FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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


def create_app() -> Flask:
    """The benchmark's host app; config from the JSON in ``SWEEP_BENCH_CONFIG``."""
    app = Flask("sweep_bench")
    app.config.update(MAIL_SUPPRESS_SEND=True, MAIL_DEFAULT_SENDER="bench@localhost")
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


def run_sweep(config: dict[str, Any], profile: str | None) -> tuple[dict[str, Any], float, float]:
    """Run the sweep command; its JSON report, wall seconds and peak RSS in MB."""
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
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"sweep exited with {proc.returncode}: {out[-2000:]}")
    # ru_maxrss is in kilobytes on Linux.
    return json.loads(out), wall, usage.ru_maxrss / 1024


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
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    path = Path(args.db) if args.db else workdir / "bench.sqlite"
    if path.exists():
        path.unlink()
    server, port = start_server(args.latency)
    try:
        config: dict[str, Any] = {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}",
            "DOMAINGUARD_STATUS_BACKEND": "fastly",
            "DOMAINGUARD_FASTLY_URL": f"http://127.0.0.1:{port}/status",
            "DOMAINGUARD_FASTLY_API_KEY": "bench-key",
            "DOMAINGUARD_SWEEP_CONCURRENCY": args.concurrency,
            # One API host serves every lookup, so the per-server cap is the whole concurrency.
            "DOMAINGUARD_SWEEP_PER_SERVER": args.concurrency,
            "DOMAINGUARD_SWEEP_BATCH_SIZE": args.batch_size,
            "DOMAINGUARD_MAX_UNVERIFY": 10_000_000,
        }
        started = time.perf_counter()
        seed(config, args.addresses, args.domains, args.trusted_share)
        seeded = time.perf_counter() - started
        runs = [("first", config)]
        if args.second_run:
            runs.append(("second", {**config, "DOMAINGUARD_CONFIRM_AFTER": 0}))
        for label, run_config in runs:
            if label == "second":
                make_all_due(run_config)
            before = requests_seen(port)
            report, wall, rss = run_sweep(run_config, args.profile if label == "first" else None)
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
                        "peak_rss_mb": round(rss, 1),
                        "unverified": report["unverified"],
                        "unsafe_first_seen": report["unsafe_first_seen"],
                        "errors": report["errors"],
                        "verdicts": {k: v for k, v in report["verdicts"].items() if v},
                        "seed_s": round(seeded, 1),
                        "latency_s": args.latency,
                        "concurrency": args.concurrency,
                    }
                ),
                flush=True,
            )
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
