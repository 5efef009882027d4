"""Rewrite the table of config keys in docs/configuration.md from flask_domainguard.config.

``python scripts/gen_config_docs.py``; ``--check`` exits 1 when the docs are out of date.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# This checkout's package, not whichever one the environment has installed (a worktree).
sys.path.insert(0, str(ROOT))

from flask_domainguard.config import OPTIONS  # noqa: E402

DOC = ROOT / "docs" / "configuration.md"
BEGIN = "<!-- config-table:begin -->"
END = "<!-- config-table:end -->"


def show(value: Any) -> str:
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
            if seconds % size == 0:
                return f"`timedelta({unit}={seconds // size})`"
        return f"`timedelta(seconds={seconds})`"
    if isinstance(value, frozenset):
        return f"{len(value)} large mail providers (`DEFAULT_TRUSTED_DOMAINS`)"
    if isinstance(value, dict) or hasattr(value, "items"):
        return "`" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "`"
    return f"`{value!r}`"


def table() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, option in OPTIONS.items():
        lines.append(f"| `{key}` | {show(option.default)} | {option.help} |")
    return "\n".join(lines)


def render(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main() -> int:
    current = DOC.read_text()
    wanted = render(current)
    if "--check" in sys.argv:
        return 0 if current == wanted else 1
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
