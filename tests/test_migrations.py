"""Migrations that run as generated: Flask-Migrate's autogenerate output upgrades and
downgrades unmodified, on SQLite and PostgreSQL, and hosts already on the 0.1 tables go on."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests import hostapp

ROOT = Path(__file__).resolve().parents[1]
TABLES = {
    "domainguard_attempt",
    "domainguard_domain",
    "domainguard_email_address",
    "domainguard_event",
    "domainguard_held_action",
    "domainguard_job",
    "domainguard_lockout",
    "domainguard_rate_counter",
    "domainguard_recovery_code",
    "domainguard_sweep_run",
    "domainguard_totp_device",
    "domainguard_used_token",
    "domainguard_user_state",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.sqlite'}"
        return
    server = request.getfixturevalue("pg_server_url")
    name = f"dg_migrate_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield server.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


class FlaskDb:
    """``flask db ...`` in a subprocess, as a host's deploy script runs it."""

    def __init__(self, database: str, directory: Path) -> None:
        self.database = database
        self.directory = directory

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "FLASK_APP": "tests.migrate_host:create_app",
            "MIGRATE_TEST_DB": self.database,
            "MIGRATE_TEST_DIR": str(self.directory),
            "PYTHONPATH": str(ROOT),
        }
        result = subprocess.run(
            [sys.executable, "-m", "flask", "db", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"flask db {' '.join(args)}:\n{result.stderr}"
        return result

    def versions(self) -> list[Path]:
        return sorted((self.directory / "versions").glob("*.py"))


def tables(database: str) -> set[str]:
    engine = sa.create_engine(database)
    try:
        return {t for t in sa.inspect(engine).get_table_names() if t.startswith("domainguard_")}
    finally:
        engine.dispose()


def use_the_tables(database: str) -> None:
    """The migrated schema works: an address with its aware timestamps, the journal."""
    app = hostapp.create_app({"SQLALCHEMY_DATABASE_URI": database})
    with app.app_context():
        user = hostapp.User(email="ana@ana-consulting.com")
        hostapp.db.session.add(user)
        hostapp.db.session.commit()
        row = hostapp.guard.add_address(user, "ana@ana-consulting.com", verified=True)
        hostapp.db.session.expire_all()
        stored = hostapp.guard.find_address("ana@ana-consulting.com")
        assert stored is not None and stored.verified_at is not None
        assert stored.verified_at.utcoffset() is not None  # aware UTC, read back
        assert hostapp.guard.unverify(row.address, reason="manual", actor="admin:test")
        # The job table: JSON payloads, and the unique key that folds repeated requests.
        from flask_domainguard import jobs

        for _ in range(2):
            jobs.enqueue(hostapp.guard, jobs.RESET_REQUEST, {"a": 1}, dedupe_key="reset:x")
        hostapp.db.session.commit()
        [job] = hostapp.db.session.scalars(sa.select(hostapp.guard.models.Job)).all()
        assert job.requests == 2 and job.payload == {"a": 1}
        hostapp.db.session.remove()
        hostapp.db.engine.dispose()


@pytest.fixture
def flask_db(database: str, tmp_path: Path) -> FlaskDb:
    run = FlaskDb(database, tmp_path / "migrations")
    run("init")
    return run


def test_generated_migrations_upgrade_and_downgrade_as_written(
    flask_db: FlaskDb, database: str
) -> None:
    flask_db("migrate", "-m", "flask-domainguard tables")
    [migration] = flask_db.versions()
    text = migration.read_text()
    assert "flask_domainguard" not in text  # nothing to import by hand
    assert "sa.DateTime(timezone=True)" in text
    flask_db("upgrade")
    assert tables(database) == TABLES
    use_the_tables(database)
    # The database now matches the models: a second autogenerate finds nothing to do.
    again = flask_db("migrate", "-m", "nothing")
    assert "No changes in schema detected" in again.stderr + again.stdout
    assert flask_db.versions() == [migration]
    flask_db("downgrade", "base")
    assert tables(database) == set()
    flask_db("upgrade")
    assert tables(database) == TABLES


def test_a_0_1_migration_with_the_hand_added_import_still_runs(
    flask_db: FlaskDb, database: str
) -> None:
    # 0.1's docs told hosts to add the import and the type's full path; such files live on.
    flask_db("migrate", "-m", "flask-domainguard tables")
    [migration] = flask_db.versions()
    text = migration.read_text()
    text = text.replace(
        "import sqlalchemy as sa\n", "import sqlalchemy as sa\nimport flask_domainguard.models\n"
    ).replace("sa.DateTime(timezone=True)", "flask_domainguard.models.UTCDateTime(timezone=True)")
    migration.write_text(text)
    flask_db("upgrade")
    use_the_tables(database)
    again = flask_db("migrate", "-m", "nothing")
    assert "No changes in schema detected" in again.stderr + again.stdout
    flask_db("downgrade", "base")
    assert tables(database) == set()


def test_tables_made_by_create_all_need_no_migration(flask_db: FlaskDb, database: str) -> None:
    app = hostapp.create_app({"SQLALCHEMY_DATABASE_URI": database})
    with app.app_context():
        hostapp.db.create_all()
        hostapp.db.engine.dispose()
    result = flask_db("migrate", "-m", "adopt existing tables")
    assert "No changes in schema detected" in result.stderr + result.stdout
    assert flask_db.versions() == []
