"""The documentation's code runs: every Python and shell block of README.md and docs/*.md.

Python blocks run one by one, each against a fresh host app (a fresh database) in a namespace
holding only what a block may take from outside: ``app`` (the host's Flask app, its context
pushed), ``db``, ``User``, ``user`` (a stored user) and ``guard``. A block that uses any name it
does not define or import must say so in its marker (``<!-- docs-test: needs guard ... -->``),
so partial snippets are labelled as such. A block that defines ``create_app()`` without a
``needs`` marker is a whole app: it is called, with the settings in the environment.

Shell blocks of a page run in order against one host app and database, as an operator would
type them: ``flask domainguard ...`` through click's runner, ``flask db ...`` (Flask-Migrate)
in a subprocess. Every command must exit 0. Anything else must carry
``<!-- docs-test: skip (what it needs) -->``.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from example_app import create_app as create_example_app
from tests import hostapp
from tests.docs_blocks import ROOT, Block, all_blocks, blocks, doc_files, free_names, run_python
from tests.guard_helpers import OK, enrol_2fa
from tests.test_migrations import FlaskDb

PRELUDE = ("app", "db", "User", "user", "guard")
#: Every domain the documentation's examples name, healthy in the static status source.
STATUSES = {name: OK for name in ("example.com", "example.org", "ana-consulting.com")}

BLOCKS = all_blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]
PAGES = [
    path
    for path in doc_files()
    if any(b.lang != "python" and b.skip_reason is None and not b.runs_in for b in blocks(path))
]


def test_the_documentation_has_blocks_to_run() -> None:
    assert len(PYTHON) >= 15 and len(BLOCKS) - len(PYTHON) >= 10


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_every_block_runs_or_says_what_it_needs(block: Block) -> None:
    if block.skip_reason is not None:
        assert block.skip_reason, f"{block.id}: say what it needs: skip (a Redis server)"
        return
    if block.runs_in is not None:
        target = block.runs_in.split("::")[0]
        assert (ROOT / target).is_file(), f"{block.id}: {target} does not exist"
        text = (ROOT / target).read_text()
        assert block.path.name in text, f"{target} does not read {block.path.name}"
        return
    if block.lang != "python":
        return  # the shell runner below fails on any command it cannot run
    missing = sorted(n for n in free_names(block.code) if not _mentions(block.marker, n))
    assert not missing, (
        f"{block.id} uses {missing} without defining or importing them: import them, or say so "
        f"with <!-- docs-test: needs {', '.join(missing)} -->"
    )


def _mentions(marker: str | None, name: str) -> bool:
    return marker is not None and re.search(rf"\b{re.escape(name)}\b", marker) is not None


# -- the host app the blocks run against ---------------------------------------------------


@pytest.fixture
def docs_config(tmp_path: Path) -> dict[str, Any]:
    status = tmp_path / "status.json"
    status.write_text(json.dumps(STATUSES))
    return {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'docs.sqlite'}",
        "DOMAINGUARD_STATUS_BACKEND": "static",
        "DOMAINGUARD_STATIC_STATUS_FILE": str(status),
        "DOMAINGUARD_EXTERNAL_URL": "https://example.com",
        "DOMAINGUARD_RESET_PROCESSING": "inline",
    }


@pytest.fixture
def restore_guard() -> Iterator[None]:
    """Blocks register password setters and checkers on the shared test guard: undo that."""
    setter, checker = hostapp.guard.password_setter, hostapp.guard.password_checker
    yield
    hostapp.guard.password_setter, hostapp.guard.password_checker = setter, checker


def _host(config: dict[str, Any], *, tables: bool = True) -> Flask:
    app = hostapp.create_app(config)
    if tables:
        with app.app_context():
            hostapp.db.create_all()
            if hostapp.db.session.scalar(sa.select(hostapp.User)) is None:
                user = hostapp.User(email="ana@example.com")
                user.set_password("correct horse battery")
                hostapp.db.session.add(user)
                hostapp.db.session.commit()
    return app


def _dispose(app: Flask) -> None:
    with app.app_context():
        hostapp.db.session.remove()
        hostapp.db.engine.dispose()


# -- Python blocks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "block",
    [b for b in PYTHON if b.skip_reason is None and b.runs_in is None],
    ids=lambda b: b.id,
)
@pytest.mark.usefixtures("restore_guard")
def test_python_block_runs(
    block: Block, docs_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # blocks that name an SQLite file make it here
    app = _host(docs_config)
    try:
        with app.app_context():
            user = hostapp.db.session.scalar(sa.select(hostapp.User))
            namespace: dict[str, Any] = {
                "app": app,
                "db": hostapp.db,
                "User": hostapp.User,
                "user": user,
                "guard": hostapp.guard,
            }
            namespace = run_python(block, namespace)
            factory = namespace.get("create_app")
            if callable(factory) and not (block.marker or "").startswith("needs"):
                # A whole app: build it the way the block says, settings from the environment.
                monkeypatch.setenv("FLASK_SECRET_KEY", "docs-test")
                monkeypatch.setenv("FLASK_SQLALCHEMY_DATABASE_URI", "sqlite://")
                built = factory()
                assert isinstance(built, Flask)
                if "DomainGuard" in block.code:
                    assert "domainguard" in built.extensions
    finally:
        _dispose(app)


# -- shell blocks --------------------------------------------------------------------------


def _setup_upgrading(config: dict[str, Any], flask_db: FlaskDb) -> None:
    # A production database before DomainGuard: the host's own tables, Flask-Migrate set up.
    engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"])
    hostapp.User.__table__.create(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(hostapp.User.__table__).values(email="ana@example.com"))
    engine.dispose()
    flask_db("init")


def _setup_twofactor(app: Flask) -> None:
    # Account recovery: a user with an address and 2FA, as the page's example presumes.
    with app.app_context():
        user = hostapp.db.session.scalar(sa.select(hostapp.User))
        hostapp.guard.add_address(user, "ana@example.com", verified=True)
        enrol_2fa(hostapp.guard, user)


def _commands(block: Block) -> Iterator[list[str]]:
    for line in block.code.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            yield words


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_blocks_run_in_order(page: Path, docs_config: dict[str, Any], tmp_path: Path) -> None:
    runnable = [
        b for b in blocks(page) if b.lang != "python" and b.skip_reason is None and not b.runs_in
    ]
    flask_db = FlaskDb(docs_config["SQLALCHEMY_DATABASE_URI"], tmp_path / "migrations")
    upgrading = page.name == "upgrading.md"
    if upgrading:
        _setup_upgrading(docs_config, flask_db)
    app = _host(docs_config, tables=not upgrading)
    if page.name == "twofactor.md":
        _setup_twofactor(app)
    runner = app.test_cli_runner()
    try:
        for block in runnable:
            for words in _commands(block):
                where = f"{block.id}: {shlex.join(words)}"
                if words[:2] == ["flask", "domainguard"]:
                    result = runner.invoke(args=words[1:])
                    assert result.exception is None or isinstance(result.exception, SystemExit), (
                        f"{where} raised {result.exception!r}"
                    )
                    assert result.exit_code == 0, (
                        f"{where} exited {result.exit_code}:\n{result.output}"
                    )
                elif words[:2] == ["flask", "db"]:
                    flask_db(*words[2:])
                else:
                    pytest.fail(
                        f"{where}: the docs test cannot run this; mark the block "
                        "<!-- docs-test: skip (what it needs) -->"
                    )
    finally:
        _dispose(app)


# -- the quick start's "edit the status file and sweep twice" ------------------------------


def test_quickstart_sweep_twice_unverifies_the_edited_domain(tmp_path: Path) -> None:
    [block] = [b for b in blocks(ROOT / "docs" / "quickstart.md") if b.runs_in]
    commands = list(_commands(block))
    assert len(commands) == 2
    config: dict[str, Any] = {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.sqlite'}",
        "DOMAINGUARD_STATIC_STATUS_FILE": str(tmp_path / "demo-status.json"),
    }
    args: list[list[str]] = []
    for words in commands:
        # EXAMPLE_* variables are the example app's config (app.config.from_prefixed_env).
        while "=" in words[0]:
            key, _, value = words.pop(0).partition("=")
            config[key.removeprefix("EXAMPLE_")] = json.loads(value)
        assert Path(words[0]).name == "flask" and words[1:3] == ["--app", "example_app"]
        args.append(words[3:])
    demo = create_example_app(config)
    runner = demo.test_cli_runner()
    try:
        # What scripts/demo.sh did before: seed, then two sweeps.
        assert runner.invoke(args=["seed"]).exit_code == 0
        for _ in range(2):
            runner.invoke(args=["domainguard", "sweep"])
        status_file = Path(config["DOMAINGUARD_STATIC_STATUS_FILE"])
        statuses = json.loads(status_file.read_text())
        statuses["healthy-corp.example"] = {"registered": False}  # the page's edit
        status_file.write_text(json.dumps(statuses))
        results = []
        for command in args:
            result = runner.invoke(args=[*command, "--json"])
            assert result.exit_code == 0, result.output
            results.append(json.loads(result.output))
        assert [r["checked"] for r in results] == [1, 1]  # not "checked 0": --domain
        assert [r["unverified"] for r in results] == [0, 1]
        with demo.app_context():
            guard = demo.extensions["domainguard"].guard
            assert not guard.find_address("alice@healthy-corp.example").verified
    finally:
        with demo.app_context():
            from example_app.models import db

            db.engine.dispose()
