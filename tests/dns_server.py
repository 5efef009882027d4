"""A real DNS server on 127.0.0.1 (UDP and TCP, dnspython's message API) with zones a test
switches while it runs.

Each registrable domain gets a :class:`Zone`: its NS, MX and DS records, or a behaviour:

- ``"ok"``: answers NS, MX and DS queries from the zone's records;
- ``"nxdomain"``: NXDOMAIN (the name is not in its TLD's zone);
- ``"no_ns"``: NOERROR without records (a name without a delegation);
- ``"silent"``: never answers;
- ``"servfail"``: SERVFAIL;
- ``"truncated"``: over UDP an empty answer with the TC bit; the records only over TCP;
- ``"huge"``: a valid answer with :data:`HUGE_RECORDS` NS and MX records (after TC, over TCP);
- ``"wrong_question"``: answers about another name;
- ``"wrong_id"``: answers with another message id.

Names without a zone get :attr:`DnsServer.default` (``None``: NXDOMAIN), which may be a
function of the name (the benchmark derives every domain's zone from its name). The server
counts queries (:attr:`DnsServer.queries`, by ``(name, type)``) and UDP/TCP use.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

HUGE_RECORDS = 600


@dataclass
class Zone:
    """What the server answers for one registrable domain."""

    ns: list[str] = field(default_factory=list)
    mx: list[str] = field(default_factory=list)
    ds: list[str] = field(default_factory=list)
    """DS records in presentation format, e.g. ``"12345 13 2 <hex digest>"``."""
    behaviour: str = "ok"


def zone(name: str, *, provider: str = "dns-host.example", mail: str = "mail-host.example") -> Zone:
    """An ordinary zone: two name servers at ``provider``, one mail exchanger at ``mail``."""
    return Zone(
        ns=[f"ns1.{provider}", f"ns2.{provider}"],
        mx=[f"mx.{mail}"],
        ds=[f"{sum(name.encode()) % 65536} 13 2 {'ab' * 32}"],
    )


class DnsServer:
    """The server; ``start()`` it, point ``DOMAINGUARD_DNS_RESOLVERS`` at :attr:`address`."""

    def __init__(self) -> None:
        self.zones: dict[str, Zone] = {}
        self.default: Zone | Callable[[str], Zone | None] | None = None
        self.queries: Counter[tuple[str, str]] = Counter()
        self.transports: Counter[str] = Counter()
        self.lock = threading.Lock()
        server = self

        class TcpHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                sock.settimeout(5)
                try:
                    while True:
                        head = _read_exactly(sock, 2)
                        if head is None:
                            return
                        wire = _read_exactly(sock, struct.unpack("!H", head)[0])
                        if wire is None:
                            return
                        reply = server.answer(wire, tcp=True)
                        if reply is not None:
                            sock.sendall(struct.pack("!H", len(reply)) + reply)
                except OSError:
                    return

        # One port for both: a TCP port first, then the same number for UDP (tried again
        # with another TCP port in the rare case that UDP number is taken).
        for _ in range(20):
            self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), TcpHandler)
            self.tcp.daemon_threads = True
            self.port = int(self.tcp.server_address[1])
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.udp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.server_close()
        else:  # pragma: no cover - a machine out of ports
            raise OSError("no port free for both UDP and TCP")
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self.tcp.serve_forever, daemon=True),
        ]
        self._stopped = False

    @property
    def address(self) -> str:
        """``"127.0.0.1:<port>"``, as ``DOMAINGUARD_DNS_RESOLVERS`` takes it."""
        return f"127.0.0.1:{self.port}"

    def config(self) -> dict[str, object]:
        """App config pointing DNS evidence at this server (and nowhere else)."""
        return {"DOMAINGUARD_DNS_RESOLVERS": [self.address], "DOMAINGUARD_DNS_TIMEOUT": 1.0}

    def start(self) -> DnsServer:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        self.tcp.shutdown()
        self.tcp.server_close()
        self.udp.close()

    def set(self, name: str, value: Zone | str) -> None:
        """Give ``name`` a zone, or a behaviour (``"nxdomain"``, ``"silent"``, ...)."""
        self.zones[name] = value if isinstance(value, Zone) else Zone(behaviour=value)

    def count(self, name: str) -> int:
        """Queries received for ``name`` (any type)."""
        return sum(n for (qname, _), n in self.queries.items() if qname == name)

    # -- answering -----------------------------------------------------------------------

    def _serve_udp(self) -> None:
        while not self._stopped:
            try:
                wire, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            reply = self.answer(wire, tcp=False)
            if reply is not None:
                try:
                    self.udp.sendto(reply, peer)
                except OSError:
                    continue

    def _zone_for(self, name: str) -> Zone | None:
        found = self.zones.get(name)
        if found is not None:
            return found
        default = self.default
        return default(name) if callable(default) else default

    def answer(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one query (``None``: stay silent)."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        if not query.question:
            return None
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = question.rdtype
        with self.lock:
            self.queries[(name, dns.rdatatype.to_text(rdtype))] += 1
            self.transports["tcp" if tcp else "udp"] += 1
        found = self._zone_for(name)
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.RA
        behaviour = "nxdomain" if found is None else found.behaviour
        if behaviour == "silent":
            return None
        if behaviour == "nxdomain":
            reply.set_rcode(dns.rcode.NXDOMAIN)
            return reply.to_wire()
        if behaviour == "servfail":
            reply.set_rcode(dns.rcode.SERVFAIL)
            return reply.to_wire()
        if behaviour == "no_ns" or found is None:
            return reply.to_wire()
        if behaviour in ("truncated", "huge") and not tcp:
            reply.flags |= dns.flags.TC
            return reply.to_wire()
        if behaviour == "huge":
            found = Zone(
                ns=[f"ns{i}.flood.example" for i in range(HUGE_RECORDS)],
                mx=[f"mx{i}.flood.example" for i in range(HUGE_RECORDS)],
            )
        self._add_records(reply, question.name, rdtype, found)
        if behaviour == "wrong_question":
            other = dns.message.make_query("other-name.example", rdtype)
            other.id = query.id
            reply = dns.message.make_response(other)
            self._add_records(reply, other.question[0].name, rdtype, found)
        elif behaviour == "wrong_id":
            reply.id = (query.id + 1) % 65536
        return reply.to_wire(max_size=65535)

    @staticmethod
    def _add_records(
        reply: dns.message.Message, qname: dns.name.Name, rdtype: int, z: Zone
    ) -> None:
        texts: list[str] = []
        if rdtype == dns.rdatatype.NS:
            texts = [f"{host}." for host in z.ns]
        elif rdtype == dns.rdatatype.MX:
            texts = [f"10 {host}." if host != "." else "0 ." for host in z.mx]
        elif rdtype == dns.rdatatype.DS:
            texts = list(z.ds)
        if texts:
            rrset = dns.rrset.from_text_list(qname, 300, dns.rdataclass.IN, rdtype, texts)
            reply.answer.append(rrset)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class RdapServer:
    """A registry's RDAP server on 127.0.0.1 that finds every name registered and healthy,
    and a bootstrap file naming it for some TLDs only (the others have no status server)."""

    def __init__(self, tlds: tuple[str, ...] = ("com",)) -> None:
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.tlds = tlds
        self.hits: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1].lower()
                server.hits[name] += 1
                body = json.dumps(
                    {
                        "objectClassName": "domain",
                        "ldhName": name,
                        "status": ["active"],
                        "events": [
                            {"eventAction": "registration", "eventDate": "2005-01-01T00:00:00Z"},
                            {"eventAction": "expiration", "eventDate": "2035-01-01T00:00:00Z"},
                        ],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/rdap+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> RdapServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def config(self, bootstrap_file: str) -> dict[str, object]:
        """App config for the 'rdap' backend: a bootstrap listing :attr:`tlds` here, written
        to ``bootstrap_file``, no built-in servers, and a bootstrap URL nobody answers."""
        import json
        from pathlib import Path

        doc = {"version": "1.0", "services": [[list(self.tlds), [self.url]]]}
        Path(bootstrap_file).write_text(json.dumps(doc))
        return {
            "DOMAINGUARD_STATUS_BACKEND": "rdap",
            "DOMAINGUARD_RDAP_BOOTSTRAP_FILE": bootstrap_file,
            "DOMAINGUARD_RDAP_BOOTSTRAP_URL": "http://127.0.0.1:9/dns.json",
            "DOMAINGUARD_RDAP_SERVERS": {},
            "DOMAINGUARD_HTTP_TIMEOUT": 2.0,
            # The bootstrap's entry is network-derived and points at loopback (plain http):
            # refused unless private addresses are allowed, as for an air-gapped mirror.
            "DOMAINGUARD_STATUS_ALLOW_PRIVATE": True,
        }
