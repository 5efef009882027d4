"""The package's import graph: each module imports alone, no cycles, deferred imports explained.

The graph is read from the source (every ``import`` statement, at module level, inside
functions and under ``TYPE_CHECKING`` alike), so a cycle hidden in a function body or a
type-only import counts too. Feature modules reach the extension through
:mod:`flask_domainguard.context`, never by importing :mod:`flask_domainguard.extension`.
"""

from __future__ import annotations

import ast
import concurrent.futures
import subprocess
import sys
from pathlib import Path

import pytest

import flask_domainguard

# The package as imported: the checkout's, or the installed one when the tests run from an
# unpacked sdist (scripts/package_check.sh removes the sdist's copy).
PACKAGE = Path(flask_domainguard.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The package's modules that one import statement in ``module`` names."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in MODULES}
    if node.level:
        is_package = MODULES[module].name == "__init__.py"
        base = module.split(".")[: len(module.split(".")) - node.level + is_package]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    # ``from . import reset`` imports the submodule, not the package's __init__.
    submodules = {f"{target}.{alias.name}" for alias in node.names} & MODULES.keys()
    return submodules or ({target} & MODULES.keys())


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        imports = (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)))
        graph[module] = set().union(*(_imported(module, n) for n in imports)) - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_walk_finds_a_planted_cycle() -> None:
    """The check itself can fail: a two-module loop is reported."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_import_cycles_not_even_type_only_ones() -> None:
    assert "flask_domainguard.extension" in MODULES  # the walk reads the real package
    assert _cycles(_graph()) == []


def test_only_the_package_root_imports_the_extension() -> None:
    importers = {m for m, deps in _graph().items() if "flask_domainguard.extension" in deps}
    assert importers == {"flask_domainguard"}


def test_every_deferred_import_says_why() -> None:
    """An import inside a function needs a comment on its line or the line above."""
    unexplained = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    line, above = lines[node.lineno - 1], lines[node.lineno - 2]
                    if "#" not in line and not above.strip().startswith("#"):
                        unexplained.append(f"{module}:{node.lineno}: {line.strip()}")
    assert unexplained == []


def _import_alone(module: str) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    return module, done.stderr.strip().splitlines()[-1] if done.returncode else ""


@pytest.mark.slow
def test_each_module_imports_alone_in_a_fresh_interpreter() -> None:
    optional = {"flask_domainguard.metrics": "prometheus_client"}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        failures = {
            module: error
            for module, error in pool.map(_import_alone, sorted(MODULES))
            if error and not (module in optional and optional[module] in error)
        }
    assert failures == {}


def test_long_modules_say_why_at_their_top() -> None:
    """A module over about 400 lines (420: the issue's "about") says "Long because" in its
    docstring."""
    unexplained = []
    for module, path in MODULES.items():
        source = path.read_text()
        if source.count("\n") > 420:
            doc = ast.get_docstring(ast.parse(source)) or ""
            if "\nLong because " not in doc:
                unexplained.append(f"{module}: {source.count(chr(10))} lines")
    assert unexplained == []


def test_every_package_directory_is_a_regular_package() -> None:
    """A folder of modules without ``__init__.py`` is a namespace package: it imports, but
    packaging and the API docs' static analysis lose it."""
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    assert sorted(str(f) for f in folders if not (f / "__init__.py").exists()) == []
