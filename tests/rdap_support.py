"""A real RDAP server on 127.0.0.1 for tests: domain documents, redirects, a bootstrap file,
and a count of every request it receives.

``GET /rdap/domain/<name>`` answers :attr:`RdapServer.docs` ``[name]`` (200), a redirect to
:attr:`RdapServer.redirects` ``[name]`` (302), or 404. ``GET /bootstrap.json`` answers
:attr:`RdapServer.bootstrap`. Every request path is counted in :attr:`RdapServer.hits`, so a
test can prove that a request never arrived.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RdapServer:
    """An RDAP server on 127.0.0.1 (see the module docstring)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.redirects: dict[str, str] = {}
        # A bootstrap that lists one unrelated TLD, so that it parses and is never used.
        self.bootstrap: dict[str, Any] = {"services": [[["unused"], ["https://rdap.invalid/"]]]}
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with server.lock:
                    server.hits[self.path] += 1
                if self.path == "/bootstrap.json":
                    self._send(200, server.bootstrap, "application/json")
                    return
                name = self.path.removeprefix("/rdap/domain/")
                if name in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[name])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif name in server.docs:
                    self._send(200, server.docs[name], "application/rdap+json")
                else:
                    self._send(
                        404, {"errorCode": 404, "title": "Not Found"}, "application/rdap+json"
                    )

            def _send(self, status: int, doc: Any, content_type: str) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.origin = f"http://127.0.0.1:{self.port}"
        self.base = f"{self.origin}/rdap/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> RdapServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def total_hits(self) -> int:
        with self.lock:
            return sum(self.hits.values())

    def config(self, *tlds: str) -> dict[str, Any]:
        """App config for the 'rdap' backend with this server configured for ``tlds``."""
        return {
            "DOMAINGUARD_STATUS_BACKEND": "rdap",
            "DOMAINGUARD_RDAP_SERVERS": {tld: self.base for tld in tlds},
            "DOMAINGUARD_RDAP_BOOTSTRAP_URL": f"{self.origin}/bootstrap.json",
            "DOMAINGUARD_HTTP_TIMEOUT": 2.0,
            "DOMAINGUARD_RESET_LIVE_TIMEOUT": 2.0,
        }


def domain_doc(
    name: str, *events: tuple[str, str], status: tuple[str, ...] = ("active",)
) -> dict[str, Any]:
    """An RDAP domain object for ``name`` with ``(eventAction, eventDate)`` events."""
    return {
        "objectClassName": "domain",
        "ldhName": name.upper(),
        "status": list(status),
        "events": [{"eventAction": action, "eventDate": date} for action, date in events],
    }
