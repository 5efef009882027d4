#!/usr/bin/env bash
# Set up and run the demo: the example app on 127.0.0.1 with an embedded SQLite database,
# seeded users on demo domains, and the offline static status source. Needs only Python 3.10+.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
export FLASK_APP=example_app
.venv/bin/flask seed
echo "Running the sweep against the demo status source..."
.venv/bin/flask domainguard sweep || true   # exit codes 1/3 report findings; the demo goes on
HOST=${DEMO_HOST:-127.0.0.1}
PORT=${DEMO_PORT:-5000}
echo "Example app on http://$HOST:$PORT/ (Ctrl-C stops it)"
exec .venv/bin/flask run --host "$HOST" --port "$PORT"
