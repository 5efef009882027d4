"""The documentation says what the code does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
