"""The code blocks of README.md and docs/*.md, for the tests that run them.

A block is a fenced ```` ```python ```` or ```` ```sh ```` (``bash``, ``console``) block. An
HTML comment right before it, ``<!-- docs-test: ... -->``, tells the tests about it:
``skip (what it needs)`` for a block that cannot run here, ``needs ...`` for one that relies on
names the test provides (the prelude), or ``runs in <test>`` for one another test runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = {"python", "sh", "bash", "console"}

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    marker: str | None
    heading: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        """What a ``skip (...)`` marker says the block needs, or ``None``."""
        if self.marker is None or not self.marker.startswith("skip"):
            return None
        match = re.fullmatch(r"skip\s*\((.+)\)", self.marker)
        return match.group(1).strip() if match else ""

    @property
    def runs_in(self) -> str | None:
        """The test that runs this block instead of the generic one (``runs in <test>``)."""
        if self.marker is None or not self.marker.startswith("runs in "):
            return None
        return self.marker.removeprefix("runs in ").strip()


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every runnable-language block of one Markdown file, in order."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        fence = _FENCE.match(line)
        if fence is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        lang = fence.group(1)
        if lang in LANGUAGES:
            marker_match = _MARKER.match(lines[i - 1]) if i > 0 else None
            found.append(
                Block(
                    path=path,
                    line=i + 1,
                    lang=lang,
                    code="\n".join(lines[i + 1 : end]) + "\n",
                    marker=marker_match.group(1) if marker_match else None,
                    heading=heading,
                )
            )
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for path in doc_files() for block in blocks(path)]


def block_under(path: Path, heading: str, lang: str = "python") -> Block:
    """The only ``lang`` block under ``heading`` in ``path``."""
    matching = [b for b in blocks(path) if b.heading == heading and b.lang == lang]
    assert len(matching) == 1, f"{path.name}: {len(matching)} {lang} blocks under {heading!r}"
    return matching[0]


def run_python(block: Block, namespace: dict[str, object]) -> dict[str, object]:
    """Run a Python block as written, as the module ``docs_example``, with ``namespace`` in it.

    A real module (in ``sys.modules`` while it runs), because libraries look names up through
    a class's module, as SQLAlchemy does for ``Mapped[...]`` annotations.
    """
    import sys
    import types

    module = types.ModuleType("docs_example")
    module.__dict__.update(namespace)
    code = compile(block.code, block.id, "exec")
    sys.modules[module.__name__] = module
    try:
        exec(code, module.__dict__)  # noqa: S102 - the documentation's own code, which is the point
    finally:
        del sys.modules[module.__name__]
    return module.__dict__


def free_names(code: str) -> set[str]:
    """Names a Python block reads but never defines or imports: what it needs from outside."""
    import builtins
    import symtable

    top = symtable.symtable(code, "<block>", "exec")
    defined = {
        s.get_name()
        for s in top.get_symbols()
        if s.is_assigned() or s.is_imported() or s.is_namespace()
    }
    needed: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            if not symbol.is_referenced():
                continue
            reads_global = symbol.is_global() or table is top
            if reads_global and symbol.get_name() not in defined:
                needed.add(symbol.get_name())
        for child in table.get_children():
            walk(child)

    walk(top)
    return {name for name in needed if not hasattr(builtins, name) and name != "__name__"}
