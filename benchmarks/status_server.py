"""A fast stand-in for a domain status API, for the sweep benchmark (stdlib asyncio only).

Answers ``GET /status?domain=D`` like Fastly's domain status API and ``GET /domain/D`` like an
RDAP server, after a configurable latency, with a fixed, realistic mix of answers chosen by
a hash of the domain name (so every run and every process agrees on each domain's status)::

    python benchmarks/status_server.py --port 0 --latency 0.02

It prints ``LISTENING <port>`` on stdout once ready. ``GET /stats`` returns how many lookups
it answered, ``GET /hits`` how many requests each domain got (``{"domain": count}``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, unquote, urlsplit

#: (share out of 1000, Fastly flags, RDAP statuses or None for a 404). Mostly active names;
#: some expiring (redemption), some being deleted, some released, a few upstream failures.
MIX: list[tuple[int, str, list[str] | None]] = [
    (950, "active", ["active"]),
    (15, "active expiring", ["redemption period", "pending delete"]),
    (10, "active deleting", ["pending delete"]),
    (15, "undelegated inactive", None),
    (10, "unknown", None),
]
_TOTAL = sum(share for share, _, _ in MIX)


def answer_for(domain: str) -> tuple[str, list[str] | None]:
    """The (Fastly flags, RDAP statuses) this server gives ``domain``, always the same."""
    bucket = int.from_bytes(hashlib.blake2b(domain.encode(), digest_size=4).digest(), "big")
    point = bucket % _TOTAL
    for share, flags, rdap in MIX:
        if point < share:
            return flags, rdap
        point -= share
    raise AssertionError("unreachable")


def expected_counts(domains: list[str]) -> dict[str, int]:
    """How many of ``domains`` get each Fastly answer (for the benchmark's checks)."""
    counts: dict[str, int] = {}
    for name in domains:
        flags = answer_for(name)[0]
        counts[flags] = counts.get(flags, 0) + 1
    return counts


def _fastly(domain: str) -> tuple[int, bytes]:
    flags, _ = answer_for(domain)
    body = {"domain": domain, "zone": domain.rsplit(".", 1)[-1], "status": flags, "tags": ""}
    return 200, json.dumps(body).encode()


def _rdap(domain: str) -> tuple[int, bytes]:
    flags, statuses = answer_for(domain)
    if flags == "unknown":
        return 503, b'{"errorCode": 503, "title": "registry maintenance"}'
    if statuses is None:
        return 404, b'{"errorCode": 404, "title": "Not Found"}'
    now = datetime.now(timezone.utc)
    expires = now + timedelta(days=200) if statuses == ["active"] else now - timedelta(days=40)
    body = {
        "objectClassName": "domain",
        "ldhName": domain,
        "status": statuses,
        "events": [
            {"eventAction": "registration", "eventDate": "2005-03-01T00:00:00Z"},
            {"eventAction": "expiration", "eventDate": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
        ],
    }
    return 200, json.dumps(body).encode()


class Server:
    """One asyncio HTTP/1.1 server with keep-alive; just enough HTTP for httpx."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.requests = 0
        self.hits: Counter[str] = Counter()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                parts = request_line.split(" ")
                target = parts[1] if len(parts) >= 2 else "/"
                status, body = await self.respond(target)
                reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(status, "X")
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def respond(self, target: str) -> tuple[int, bytes]:
        url = urlsplit(target)
        if url.path == "/stats":
            return 200, json.dumps({"requests": self.requests}).encode()
        if url.path == "/hits":
            return 200, json.dumps(self.hits).encode()
        self.requests += 1
        if url.path.startswith("/domain/"):
            domain = unquote(url.path[len("/domain/") :]).lower()
        else:
            domain = parse_qs(url.query).get("domain", [""])[0].lower()
        self.hits[domain] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if url.path.startswith("/domain/"):
            return _rdap(domain)
        if not domain:
            return 400, b'{"msg": "missing domain"}'
        return _fastly(domain)


async def serve(port: int, latency: float) -> None:
    server = Server(latency)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", port, backlog=1024)
    bound = listener.sockets[0].getsockname()[1]
    sys.stdout.write(f"LISTENING {bound}\n")
    sys.stdout.flush()
    async with listener:
        await listener.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per answer")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.latency))


if __name__ == "__main__":
    main()
