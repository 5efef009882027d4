"""Start and stop a throwaway MariaDB server for the test run (Debian's ``mariadb-server``).

Like :mod:`tests.pgserver`: a data folder under a temporary directory, a free port on
127.0.0.1, no configuration files read (``--no-defaults``), nothing kept afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_SBIN = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


def _which(name: str) -> Path | None:
    found = shutil.which(name) or next(
        (f"{d}/{name}" for d in _SBIN if os.access(f"{d}/{name}", os.X_OK)), None
    )
    return Path(found) if found else None


def find_mariadb() -> tuple[Path, Path] | None:
    """``(mariadb-install-db, mariadbd)``, or ``None`` when MariaDB is not installed."""
    install_db, server = _which("mariadb-install-db"), _which("mariadbd")
    if install_db is None or server is None:
        return None
    return install_db, server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MariaDBServer:
    """A MariaDB server in a temporary folder on 127.0.0.1; root without a password."""

    def __init__(self, install_db: Path, server: Path) -> None:
        self.install_db = install_db
        self.server = server
        self.root = Path(tempfile.mkdtemp(prefix="domainguard-mariadb-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        # mariadbd refuses to run as root: run it as the 'mysql' system user then.
        self.user: list[str] = []
        if os.geteuid() == 0:
            self.user = ["--user=mysql"]
            shutil.chown(self.root, "mysql")

    def start(self) -> str:
        """Initialise and start the server; return a SQLAlchemy URL of an empty database."""
        subprocess.run(
            [
                str(self.install_db),
                "--no-defaults",
                f"--datadir={self.data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self.user,
            ],
            check=True,
            capture_output=True,
            cwd=self.root,
        )
        log = open(self.root / "log", "wb")  # noqa: SIM115 - the server writes to it until stop()
        self.process = subprocess.Popen(
            [
                str(self.server),
                "--no-defaults",
                *self.user,
                f"--datadir={self.data}",
                f"--socket={self.root / 'sock'}",
                f"--pid-file={self.root / 'pid'}",
                "--bind-address=127.0.0.1",
                f"--port={self.port}",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--max-connections=200",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_bin",
                # A test server: durability traded for speed, as with PostgreSQL's fsync=off.
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=16M",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mariadbd exited with {self.process.returncode}:\n"
                    + (self.root / "log").read_text(errors="replace")[-3000:]
                )
            try:
                self._sql("CREATE DATABASE domainguard")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/domainguard?charset=utf8mb4"

    def _sql(self, statement: str) -> None:
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=2)
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=30)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
