"""CPU per status lookup: the sweep's :class:`~flask_domainguard.lookups.Lookups` against a bare
aiohttp loop, in one process, against ``benchmarks/status_server.py`` on 127.0.0.1.

No database and no policy: only the lookup event loop that :class:`LookupThread` runs during a
sweep, fed the way the sweep feeds it (batches of ``--batch-size`` names, two in flight). The
bare loop is ``sweep_bench.bare_loop`` (the same URLs, headers and concurrency). Prints one
JSON line per run with the CPU milliseconds per lookup (this process only; the status server
is another)::

    python benchmarks/lookup_bench.py --domains 20000
    python benchmarks/lookup_bench.py --backend rdap   # the server's RDAP face, for .com

Profile with py-spy around the whole command (``--no-bare`` to see the sweep's loop alone)::

    py-spy record -f raw -o /tmp/lookups.txt -- python benchmarks/lookup_bench.py --no-bare
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.sweep_bench import bare_loop, bare_urls, start_server  # noqa: E402
from flask_domainguard.config import load_settings  # noqa: E402
from flask_domainguard.lookups import LookupLimits, Lookups  # noqa: E402
from flask_domainguard.status.base import StatusBackend  # noqa: E402
from flask_domainguard.status.fastly import FastlyBackend  # noqa: E402
from flask_domainguard.status.rdap import RdapBackend  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_backend(name: str, port: int) -> StatusBackend:
    """The Fastly backend, or the RDAP one with the server configured for ``.com``."""
    if name == "rdap":
        # An empty bootstrap file, and its URL on this machine: nothing leaves 127.0.0.1.
        bootstrap = Path(tempfile.mkdtemp(prefix="lookup-bench-")) / "rdap-bootstrap.json"
        bootstrap.write_text(json.dumps({"version": "1.0", "services": []}))
        return RdapBackend(
            load_settings({}),
            servers={"com": f"http://127.0.0.1:{port}/"},
            bootstrap_file=bootstrap,
            bootstrap_url=f"http://127.0.0.1:{port}/no-bootstrap-here",
        )
    settings = load_settings(
        {
            "DOMAINGUARD_FASTLY_URL": f"http://127.0.0.1:{port}/status",
            "DOMAINGUARD_FASTLY_API_KEY": "bench-key",
        }
    )
    return FastlyBackend(settings)


async def sweep_loop(
    backend: StatusBackend, names: list[str], concurrency: int, batch_size: int
) -> int:
    """Look ``names`` up through :class:`Lookups` and ``backend``, ``batch_size`` at a
    time with two batches in flight (as the sweep submits them); answers that said
    registered or not."""
    limits = LookupLimits(concurrency=concurrency, per_server=concurrency, retries=0)
    answered = 0
    async with Lookups(backend, limits) as lookups:
        batches = [names[i : i + batch_size] for i in range(0, len(names), batch_size)]
        in_flight: set[asyncio.Task[dict[str, Any]]] = set()
        for batch in batches:
            if len(in_flight) >= 2:
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                answered += sum(_answered(task.result()) for task in done)
            in_flight.add(asyncio.ensure_future(lookups.observe_many(batch)))
        for task in asyncio.as_completed(in_flight):
            answered += _answered(await task)
    return answered


def _answered(results: dict[str, Any]) -> int:
    return sum(1 for obs in results.values() if obs.registered is not None)


def measure(label: str, run: Callable[[], int], lookups: int) -> dict[str, Any]:
    before = cpu_seconds()
    started = time.perf_counter()
    answered = run()
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - before
    return {
        "run": label,
        "lookups": lookups,
        "answered": answered,
        "wall_s": round(wall, 2),
        "cpu_ms_per_lookup": round(1000 * cpu / max(lookups, 1), 3),
        "load_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--no-bare", action="store_true", help="skip the bare aiohttp loop")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each loop")
    parser.add_argument("--backend", choices=("fastly", "rdap"), default="fastly")
    args = parser.parse_args()
    names = [f"bench-{i:07d}.com" for i in range(args.domains)]
    server, port = start_server(args.latency)
    urls = bare_urls(args.backend, port, names)
    headers = {"Fastly-Key": "bench-key"} if args.backend == "fastly" else {}
    try:
        for _ in range(args.rounds):
            if not args.no_bare:
                bare = measure(
                    "bare aiohttp loop",
                    lambda: asyncio.run(bare_loop(urls, args.concurrency, headers)),
                    len(names),
                )
                print(json.dumps(bare), flush=True)
            backend = make_backend(args.backend, port)
            sweep = measure(
                f"Lookups + {type(backend).__name__}",
                lambda: asyncio.run(
                    sweep_loop(backend, names, args.concurrency, args.batch_size)  # noqa: B023
                ),
                len(names),
            )
            if not args.no_bare:
                sweep["ratio_cpu_vs_bare"] = round(
                    sweep["cpu_ms_per_lookup"] / max(bare["cpu_ms_per_lookup"], 1e-9), 2
                )
            print(json.dumps(sweep), flush=True)
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
