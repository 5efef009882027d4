"""The documentation says what the code does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import blinker
import click

from flask_domainguard import signals
from flask_domainguard.cli import domainguard_cli
from flask_domainguard.config import OPTIONS

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_key_is_documented_with_its_default() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_config_docs.py"), "--check"],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, "docs/configuration.md is stale: run scripts/gen_config_docs.py"
    text = (ROOT / "docs" / "configuration.md").read_text()
    for key in OPTIONS:
        assert f"`{key}`" in text


def test_readme_quick_start_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert f"bash {script}" in readme
        assert (ROOT / script).is_file()
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def _cli_sections() -> dict[str, str]:
    """docs/cli.md's sections by command name (``## `flask domainguard NAME ...` ``)."""
    text = (ROOT / "docs" / "cli.md").read_text()
    sections: dict[str, str] = {}
    for chunk in re.split(r"^## ", text, flags=re.M)[1:]:
        match = re.match(r"`flask domainguard ([\w-]+)", chunk)
        if match:
            sections[match.group(1)] = chunk
    return sections


def _exit_codes(help_text: str) -> set[str]:
    """The codes a command's help lists after ``Exit codes:`` (``0 done; 1 ...; 2 ...``)."""
    _, found, tail = " ".join(help_text.split()).partition("Exit codes:")
    assert found, "its help must list its exit codes after 'Exit codes:'"
    return set(re.findall(r"(?:^|;)\s*(\d+)\b", tail))


def test_every_cli_command_its_options_and_exit_codes_are_in_cli_md() -> None:
    sections = _cli_sections()
    commands = domainguard_cli.commands
    assert set(commands) <= set(sections), (
        f"docs/cli.md lacks {sorted(set(commands) - set(sections))}"
    )
    for name, command in commands.items():
        section = sections[name]
        codes = _exit_codes(command.help or "")
        assert "2" in codes, f"{name}: exit code 2 (usage error) is always documented"
        for code in codes:
            assert f"| {code} |" in section, f"docs/cli.md, {name}: exit code {code} missing"
        for param in command.params:
            if isinstance(param, click.Option):
                for flag in [*param.opts, *param.secondary_opts]:
                    if flag.startswith("--"):
                        assert flag in section, f"docs/cli.md, {name}: option {flag} missing"


def test_every_signal_is_documented() -> None:
    text = (ROOT / "docs" / "signals.md").read_text()
    names = [n for n, v in vars(signals).items() if isinstance(v, blinker.NamedSignal)]
    assert len(names) >= 20
    for name in names:
        assert re.search(rf"`{name}`", text), f"docs/signals.md does not mention `{name}`"


def test_mkdocs_nav_lists_every_page_and_every_listed_page_exists() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s*([\w-]+\.md)\s*$", config, flags=re.M))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert listed <= pages, f"mkdocs.yml lists missing pages {sorted(listed - pages)}"
    assert pages <= listed, f"pages missing from the mkdocs.yml nav: {sorted(pages - listed)}"


def test_every_journal_event_kind_and_event_column_is_documented() -> None:
    from flask_domainguard import EventKind
    from tests import hostapp

    text = (ROOT / "docs" / "journal.md").read_text()
    for kind in EventKind:
        assert re.search(rf"^\| `{kind.value}` \|", text, flags=re.M), (
            f"docs/journal.md lacks event kind `{kind.value}`"
        )
    for column in hostapp.guard.models.Event.__table__.columns:
        assert f"| `{column.name}` |" in text, f"docs/journal.md lacks column `{column.name}`"


def test_api_reference_documents_every_public_name_and_guard_method() -> None:
    """docs/api.md renders each exported name; every public guard method has a docstring."""
    import inspect

    import flask_domainguard
    from flask_domainguard import DomainGuard

    page = (ROOT / "docs" / "api.md").read_text()
    rendered = set(re.findall(r"^::: flask_domainguard\.(\w+)$", page, re.M))
    assert set(flask_domainguard.__all__) - rendered == set()
    undocumented = [
        name
        for name, member in vars(DomainGuard).items()
        if not name.startswith("_")
        and (inspect.isfunction(member) or isinstance(member, property))
        and not inspect.getdoc(member)
    ]
    assert undocumented == []


def test_architecture_page_places_every_module() -> None:
    """docs/architecture.md names every module of the package, so the map cannot drift."""
    import flask_domainguard

    page = (ROOT / "docs" / "architecture.md").read_text()
    package = Path(flask_domainguard.__file__).resolve().parent  # installed or checkout
    assert (package / "extension.py").exists()
    missing = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        parent = relative.parent.as_posix()
        if relative.name == "__init__.py":
            named = [f"`{parent}/`", f"`{parent}/" if relative.parent.parts else "`__init__.py`"]
        elif relative.parent.parts:
            in_listing = f"`{parent}/`" in page and f"`{relative.name}`" in page
            named = [f"`{relative.as_posix()}`"] + ([page] if in_listing else [])
        else:
            named = [f"`{relative.as_posix()}`"]
        if not any(name in page for name in named):
            missing.append(relative.as_posix())
    assert missing == []
