"""Benchmark of ``flask domainguard adopt`` on a large existing user table.

Seeds N users (``User.email`` over M registrable domains, a few invalid; ``User.created_at``
spread over ten years) into a SQLite file with bulk inserts (not timed), runs the real
``adopt --verified`` command in a subprocess and prints one JSON line: proof, users, adopted,
problems, wall_s, users_per_s, peak_rss_mb (of the command). ``--proof created`` dates each
address by ``User.created_at`` (``DOMAINGUARD_USER_CREATED_ATTR``), ``--proof since`` by one
``--verified-since`` date::

    python benchmarks/adopt_bench.py --users 1000000 --domains 100000 --proof created
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]


def seed(url: str, users: int, domains: int) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email VARCHAR, password_hash VARCHAR, "
            "created_at DATETIME)"
        )
        insert = sa.text(
            "INSERT INTO users (email, password_hash, created_at) "
            "VALUES (:email, :password_hash, :created_at)"
        )
        first = datetime(2015, 1, 1)
        batch: list[dict[str, object]] = []
        for i in range(users):
            # One in 10,000 is unusable, as real tables have: they must be listed, not lost.
            email = f"user{i}@" + ("bad domain" if i % 10_000 == 7 else f"d{i % domains}.com")
            created = first + timedelta(minutes=i % (10 * 365 * 24 * 60))
            batch.append({"email": email, "password_hash": "", "created_at": created})
            if len(batch) == 50_000:
                conn.execute(insert, batch)
                batch.clear()
        if batch:
            conn.execute(insert, batch)
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--domains", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--proof",
        choices=("created", "since"),
        default="created",
        help="date proofs by User.created_at (default) or by --verified-since 2015-01-01",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="adopt-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        seed(url, args.users, args.domains)
        config = {"SQLALCHEMY_DATABASE_URI": url}
        proof = ["--verified-since", "2015-01-01"]
        if args.proof == "created":
            config["DOMAINGUARD_USER_CREATED_ATTR"] = "created_at"
            proof = []
        env = {**os.environ, "FLASK_APP": f"tests.hostapp:create_app({config!r})"}
        # Our tables, created as `flask db upgrade` would in a real app.
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from tests import hostapp; app = hostapp.create_app("
                f"{{'SQLALCHEMY_DATABASE_URI': {url!r}}}); app.app_context().push(); "
                "hostapp.db.create_all()",
            ],
            cwd=ROOT,
            env=env,
            check=True,
        )
        start = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "flask",
                "domainguard",
                "adopt",
                "--verified",
                *proof,
                "--json",
                "--batch-size",
                str(args.batch_size),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
        if done.returncode not in (0, 1):
            sys.stderr.write(done.stderr)
            return done.returncode
        report = json.loads(done.stdout)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(
            json.dumps(
                {
                    "proof": report["proof"],
                    "users": report["users"],
                    "adopted": report["adopted"],
                    "problems": len(report["problems"]),
                    "wall_s": round(wall, 1),
                    "users_per_s": round(report["users"] / wall),
                    "peak_rss_mb": round(peak_kb / 1024, 1),
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
