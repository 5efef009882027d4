"""A spread-out reset flood at full size (issue 17): does every legitimate user get their mail?

The host app runs in its own process behind 8 request threads (``tests/flood_support.py``),
with DomainGuard's default in-process workers draining the job table. A real Fastly-style
status server (``--delay`` seconds per lookup) and a real SMTP server run on 127.0.0.1. The
flood: ``--requests`` forgot-password POSTs, ``--concurrency`` at once; one from each of
``--legit`` users with a verified address on a healthy domain (each from its own client
address), the rest for unknown addresses from ``--clients`` addresses (``X-Forwarded-For``
through ``ProxyFix``; header values only, nothing leaves the loopback interface).

Prints one JSON object: answer latency (p50, p99), legitimate mails delivered and how long
after their answer, and where every request went (jobs done or shed, requests per state)::

    python benchmarks/reset_flood_bench.py                        # 3,000 / 200 / 150, SQLite
    python benchmarks/reset_flood_bench.py --delay 2 --db postgresql
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import hostapp  # noqa: E402
from tests.conftest import SMTPSink, use_smtp  # noqa: E402
from tests.flood_support import FloodServer, flood, plan, seed_users, wait_for_mail  # noqa: E402
from tests.pgserver import PostgresServer, find_pg_bin  # noqa: E402
from tests.sweep_support import StatusServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--legit", type=int, default=150)
    parser.add_argument("--clients", type=int, default=250, help="attacker client addresses")
    parser.add_argument("--delay", type=float, default=0.2, help="status lookup seconds")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--workers", type=int, default=4, help="DOMAINGUARD_JOBS_WORKERS")
    parser.add_argument("--max-pending", type=int, default=1000)
    parser.add_argument("--wait", type=float, default=600.0, help="seconds to wait for mail")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="flood-bench-"))
    pg = None
    if args.db == "postgresql":
        bin_dir = find_pg_bin()
        if bin_dir is None:
            sys.exit("no PostgreSQL binaries on this machine")
        pg = PostgresServer(bin_dir)
        url = pg.start()
    else:
        url = f"sqlite:///{tmp / 'flood.sqlite'}"
    status = StatusServer().start()
    status.delay = args.delay
    sink = SMTPSink()
    sink.controller.start()
    server = None
    try:
        config: dict[str, Any] = {
            "SQLALCHEMY_DATABASE_URI": url,
            **status.config(),
            "DOMAINGUARD_HTTP_TIMEOUT": max(1.0, args.delay * 2),
            "DOMAINGUARD_RESET_LIVE_TIMEOUT": max(3.0, args.delay * 2),
            "WTF_CSRF_ENABLED": False,
            "TESTING": False,
            "DOMAINGUARD_EXTERNAL_URL": "https://accounts.host.test",
            "DOMAINGUARD_JOBS_WORKERS": args.workers,
            "DOMAINGUARD_JOBS_MAX_PENDING": args.max_pending,
            "DOMAINGUARD_JOBS_POLL": 0.5,
        }
        use_smtp(config, sink)
        app = hostapp.create_app({**config, "SERVER_NAME": None})
        with app.app_context():
            hostapp.db.create_all()
            if args.db == "sqlite":
                # Concurrent request threads and workers: what a site under load runs.
                hostapp.db.session.execute(sa.text("PRAGMA journal_mode=WAL"))
                hostapp.db.session.commit()
            legit = seed_users(hostapp.guard, args.legit)
        server = FloodServer(config)
        shots = plan(legit, total=args.requests, attacker_clients=args.clients)
        result = flood(server.url, shots, concurrency=args.concurrency)
        delivered: dict[str, float] = {}
        wait_for_mail(sink, legit, timeout=args.wait, delivered_at=delivered)
        drained_after = time.monotonic() - result.started
        logs = server.stop()
        server = None
        waits = [delivered[a] - result.answered_at[a] for a in legit if a in delivered]
        with app.app_context():
            Job, Event = hostapp.guard.models.Job, hostapp.guard.models.Event
            states = {
                state: {"jobs": int(jobs), "requests": int(requests)}
                for state, jobs, requests in hostapp.db.session.execute(
                    sa.select(Job.state, sa.func.count(), sa.func.sum(Job.requests)).group_by(
                        Job.state
                    )
                )
            }
            journal = dict(
                hostapp.db.session.execute(
                    sa.select(Event.kind, sa.func.count())
                    .where(Event.kind.in_(["reset_sent", "reset_shed", "reset_refused"]))
                    .group_by(Event.kind)
                ).all()
            )
        report = {
            "db": args.db,
            "status_delay_s": args.delay,
            "workers": args.workers,
            "max_pending": args.max_pending,
            "flood": result.summary(),
            "legit_users": len(legit),
            "legit_mails_delivered": len(delivered),
            "mail_after_answer_s": {
                "median": round(statistics.median(waits), 1) if waits else None,
                "max": round(max(waits), 1) if waits else None,
            },
            "seconds_until_last_mail": round(drained_after, 1),
            "jobs_by_state": states,
            "requests_accounted": sum(s["requests"] for s in states.values()),
            "journal": journal,
            "shed_log_lines": logs.count("shed "),
        }
        print(json.dumps(report, indent=2))
    finally:
        if server is not None:
            server.stop()
        sink.controller.stop()
        status.stop()
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    main()
