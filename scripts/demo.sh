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
HOST=${DEMO_HOST:-127.0.0.1}
PORT=${DEMO_PORT:-5000}
# Mailed links point at the address the demo is served on (and only that host is answered).
export EXAMPLE_DOMAINGUARD_EXTERNAL_URL=${EXAMPLE_DOMAINGUARD_EXTERNAL_URL:-"http://$HOST:$PORT"}
.venv/bin/flask seed
# Production confirms an unsafe verdict on a second check DOMAINGUARD_CONFIRM_AFTER (6 h) after
# the first; the demo confirms at once, so two sweeps show unverified addresses right away.
echo "Sweeping the demo domains (twice: the first sees, the second confirms)..."
for _ in 1 2; do
  # Exit code 1 reports the demo's deliberately unknown domain; the demo goes on.
  EXAMPLE_DOMAINGUARD_CONFIRM_AFTER=0 .venv/bin/flask domainguard sweep || true
done
echo "Example app on http://$HOST:$PORT/ (Ctrl-C stops it)"
exec .venv/bin/flask run --host "$HOST" --port "$PORT"
