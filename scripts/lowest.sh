#!/usr/bin/env bash
# The fast subset of the SQLite suite against the LOWEST versions pyproject.toml allows for
# every direct dependency (uv's --resolution lowest-direct), on the oldest supported Python.
# A floor that this run does not pass is a lie in the package metadata: raise it.
#
# The test tools (pytest, respx, ...) are installed afterwards at their newest versions,
# constrained to the runtime versions already installed, so they cannot lift a floor.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/find_python.sh
PYVER=${LOWEST_PYTHON:-3.10}
if ! PY=$(find_python "$PYVER"); then
  PY=$(command -v python3)
  echo "lowest: Python $PYVER not found; using $("$PY" -V 2>&1) instead"
fi
WORK=$(mktemp -d -t domainguard-lowest-XXXXXX)
trap 'rm -rf "$WORK"' EXIT

"$PY" -m venv "$WORK/tools"
"$WORK/tools/bin/python" -m pip install --quiet --disable-pip-version-check uv
UV="$WORK/tools/bin/uv"
"$UV" venv --quiet --python "$PY" "$WORK/venv"
export VIRTUAL_ENV="$WORK/venv"

"$UV" pip install --quiet --resolution lowest-direct -e .
"$UV" pip freeze --exclude-editable >"$WORK/runtime.txt"
"$UV" pip install --quiet --constraint "$WORK/runtime.txt" --group test
echo "lowest: $("$WORK/venv/bin/python" -V) with"
"$UV" pip freeze | grep -iE '^(flask|werkzeug|jinja2|itsdangerous|click|blinker|sqlalchemy|wtforms|httpx|aiohttp|certifi|sniffio|publicsuffixlist|idna|segno|pyotp|cryptography|typing-extensions|flask-login|flask-sqlalchemy|flask-mail|flask-wtf)==' | sed 's/^/  /'

"$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow and not browser" "$@"
