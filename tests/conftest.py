"""Shared fixtures: the host app on SQLite (default), a real PostgreSQL or MariaDB server,
mail, users.

Run the suite on PostgreSQL with ``pytest --db postgresql`` or on MariaDB with ``pytest --db
mariadb``: the run starts its own server with the binaries on the machine and stops it at the
end.
"""

from __future__ import annotations

import inspect
import itertools
import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from tests import hostapp
from tests.mariadbserver import MariaDBServer, find_mariadb
from tests.pgserver import PostgresServer, find_pg_bin
from tests.rdap_support import RdapServer
from tests.sweep_support import StatusServer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("sqlite", "postgresql", "mariadb"),
        default="sqlite",
        help="database the suite runs against (postgresql and mariadb start a throwaway server)",
    )


@pytest.fixture(scope="session")
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--db"))


@pytest.fixture(scope="session")
def server_url(db_kind: str) -> Iterator[str | None]:
    """The URL of the database server ``--db`` asked for; ``None`` for SQLite."""
    if db_kind == "sqlite":
        yield None
        return
    server: PostgresServer | MariaDBServer
    if db_kind == "postgresql":
        bin_dir = find_pg_bin()
        if bin_dir is None:
            pytest.fail("--db postgresql was asked for, but no PostgreSQL binaries are installed")
        server = PostgresServer(bin_dir)
    else:
        binaries = find_mariadb()
        if binaries is None:
            pytest.fail(
                "--db mariadb was asked for, but mariadbd is not installed (mariadb-server)"
            )
        server = MariaDBServer(*binaries)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A real PostgreSQL server for the tests that need one whatever ``--db`` says."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed on this machine")
    server = PostgresServer(bin_dir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mariadb_server_url(db_kind: str, server_url: str | None) -> str:
    """The MariaDB server of the ``--db mariadb`` pass, for tests that need MariaDB itself;
    they skip in the other passes (CI runs all three)."""
    if db_kind != "mariadb" or server_url is None:
        pytest.skip("runs in the MariaDB pass (pytest --db mariadb)")
    return server_url


@pytest.fixture
def database_url(server_url: str | None, tmp_path: Path) -> str:
    return server_url or f"sqlite:///{tmp_path / 'host.sqlite'}"


def settings_from_marker(request: pytest.FixtureRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("settings"))):
        config.update(marker.kwargs)
    return config


@pytest.fixture
def status_server() -> Iterator[StatusServer]:
    """A real Fastly-style status API on 127.0.0.1 that counts lookups per domain."""
    server = StatusServer().start()
    yield server
    server.stop()


@pytest.fixture
def rdap_registry() -> Iterator[RdapServer]:
    """A real RDAP server on 127.0.0.1 that counts every request (tests/rdap_support.py)."""
    server = RdapServer().start()
    yield server
    server.stop()


@pytest.fixture
def app_config(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> dict[str, Any]:
    """The test app's config: ``@pytest.mark.settings(KEY=value)`` adds to it, and
    ``@pytest.mark.use_status_server`` points the status backend at :func:`status_server`,
    ``@pytest.mark.use_rdap_registry("tld", ...)`` the 'rdap' backend at :func:`rdap_registry`."""
    server: dict[str, Any] = {}
    if request.node.get_closest_marker("use_status_server") is not None:
        server = request.getfixturevalue("status_server").config()
    rdap = request.node.get_closest_marker("use_rdap_registry")
    if rdap is not None:
        server = request.getfixturevalue("rdap_registry").config(*rdap.args)
    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "DOMAINGUARD_STATUS_BACKEND": "static",
        "DOMAINGUARD_STATIC_STATUS_FILE": str(tmp_path / "status.json"),
        **server,
        **settings_from_marker(request),
    }


@pytest.fixture
def app(app_config: dict[str, Any], tmp_path: Path) -> Iterator[Flask]:
    status_file = Path(app_config["DOMAINGUARD_STATIC_STATUS_FILE"])
    if not status_file.exists():
        status_file.write_text("{}")
    app = hostapp.create_app(app_config)
    app.instance_path = str(tmp_path / "instance")
    with app.app_context():
        hostapp.db.create_all()
    with app.app_context():
        yield app
    from flask_domainguard.background import stop_workers

    stop_workers(app)
    with app.app_context():
        hostapp.db.session.remove()
        hostapp.db.drop_all()
        hostapp.db.engine.dispose()


@pytest.fixture
def guard(app: Flask) -> Any:
    return hostapp.guard


@pytest.fixture
def db(app: Flask) -> Any:
    return hostapp.db


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


#: click 8.2 keeps stderr apart from stdout in ``CliRunner`` always; 8.1 (which the
#: dependency floor allows) only when asked with ``mix_stderr=False``.
_RUNNER_OPTIONS: dict[str, Any] = (
    {"mix_stderr": False}
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters
    else {}
)


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A CLI runner whose ``result.stdout`` and ``result.stderr`` are separate."""
    return app.test_cli_runner(**_RUNNER_OPTIONS)


_user_numbers = itertools.count(1)


@pytest.fixture
def make_user(app: Flask) -> Any:
    """``make_user(email=None, password="pw")``: a committed host user."""

    def make(email: str | None = None, password: str = "correct horse battery") -> Any:
        user = hostapp.User(email=email)
        user.set_password(password)
        hostapp.db.session.add(user)
        hostapp.db.session.commit()
        return user

    return make


@pytest.fixture
def outbox(app: Flask) -> Iterator[list[Any]]:
    """Messages Flask-Mail would have sent (recorded, not delivered)."""
    with app.extensions["mail"].record_messages() as messages:
        yield messages


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SMTPSink:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) keeping every message it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        #: One entry per SMTP connection that delivered mail (aiosmtpd's session objects).
        self.sessions: list[Any] = []
        #: Seconds each message takes to be accepted (a slow mail server).
        self.delay = 0.0
        self.port = _free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        if not any(session is seen for seen in self.sessions):
            self.sessions.append(session)
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
        return "250 OK"

    def recipients(self) -> list[str]:
        return [rcpt for _, rcpts in self.envelopes for rcpt in rcpts]


@pytest.fixture
def smtp_sink() -> Iterator[SMTPSink]:
    """A real SMTP server on 127.0.0.1; point the app at it with :func:`use_smtp`."""
    sink = SMTPSink()
    sink.controller.start()
    try:
        yield sink
    finally:
        sink.controller.stop()


def use_smtp(config: dict[str, Any], sink: SMTPSink) -> None:
    """Config for Flask-Mail to deliver to ``sink`` for real."""
    config.update(
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=sink.port,
        MAIL_USE_TLS=False,
        MAIL_USE_SSL=False,
        MAIL_SUPPRESS_SEND=False,
    )


@pytest.fixture
def shared_reference() -> Path:
    """``../shared/reference`` beside the checkout; tests skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"reference data not found at {SHARED} (it sits beside the checkout in CI)")
    return SHARED


@pytest.fixture
def fresh_request_globals(app: Flask) -> Iterator[None]:
    """Give every test-client request an empty ``g``, as in production.

    The ``app`` fixture keeps an app context open for the whole test and Flask reuses it for
    requests, so ``g`` (Flask-Login's cached user, Flask-WTF's CSRF token) would otherwise
    leak from one request, or one client, into the next.
    """
    from flask import g, request_started

    def clear(sender: Flask, **extra: Any) -> None:
        g.__dict__.clear()

    request_started.connect(clear, app)
    try:
        yield
    finally:
        request_started.disconnect(clear, app)


@pytest.fixture
def smtp_app(
    app_config: dict[str, Any], smtp_sink: SMTPSink, request: pytest.FixtureRequest
) -> Iterator[Flask]:
    """The test app mailing through :func:`smtp_sink`, with a link base and the reset work
    done in the request (``DOMAINGUARD_RESET_PROCESSING = "inline"``)."""
    use_smtp(app_config, smtp_sink)
    app_config.setdefault("SERVER_NAME", "accounts.host.test")
    app_config.setdefault("DOMAINGUARD_RESET_PROCESSING", "inline")
    app: Flask = request.getfixturevalue("app")
    request.getfixturevalue("fresh_request_globals")
    yield app
