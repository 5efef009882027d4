#!/usr/bin/env bash
# Set up and run every check CI runs: ruff, mypy (strict), the docs build, the test suite on
# SQLite and again on real PostgreSQL and MariaDB servers the run starts itself, then the
# package check (scripts/package_check.sh), the fast subset against the lowest allowed
# dependency versions (scripts/lowest.sh) and on the other Pythons (scripts/pythons.sh).
# Needs only Python 3.10+; the PostgreSQL and MariaDB passes need those servers' binaries
# (skipped with a notice when absent, except under CI, where their absence is a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Runs a step and says how long it took (CI's budget is counted in these).
timed() {
  local started=$SECONDS
  "$@"
  echo "-- $((SECONDS - started)) s"
}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# Dev tools are a dependency group (PEP 735, pip 25.1+), never a published extra.
.venv/bin/python -m pip install --quiet -e . --group dev

echo "== ruff"
.venv/bin/ruff check flask_domainguard example_app tests benchmarks
.venv/bin/ruff format --check flask_domainguard example_app tests benchmarks
echo "== mypy --strict"
.venv/bin/mypy
# A host app's view of the package: DomainGuard[User], typed decorators, typed rows.
.venv/bin/mypy --strict tests/typing/host_app.py
echo "== docs"
.venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"

echo "== tests on SQLite"
timed .venv/bin/python -m pytest "$@"

if .venv/bin/python -c "import sys; from tests.pgserver import find_pg_bin; sys.exit(find_pg_bin() is None)"; then
  echo "== tests on PostgreSQL"
  timed .venv/bin/python -m pytest --db postgresql "$@"
elif [ "${CI:-}" = "true" ]; then
  echo "PostgreSQL binaries not found, and CI must run the PostgreSQL pass" >&2
  exit 1
else
  echo "== tests on PostgreSQL: skipped, no PostgreSQL server binaries on this machine"
fi

if .venv/bin/python -c "import sys; from tests.mariadbserver import find_mariadb; sys.exit(find_mariadb() is None)"; then
  echo "== tests on MariaDB"
  timed .venv/bin/python -m pytest --db mariadb "$@"
elif [ "${CI:-}" = "true" ]; then
  echo "MariaDB (mariadbd, mariadb-install-db) not found, and CI must run the MariaDB pass" >&2
  exit 1
else
  echo "== tests on MariaDB: skipped, no MariaDB server on this machine (apt-get install mariadb-server)"
fi

echo "== package: build sdist and wheel, install the wheel clean, tests from the sdist"
timed bash scripts/package_check.sh

echo "== lowest allowed dependency versions (fast subset)"
timed bash scripts/lowest.sh

echo "== the other supported Pythons (fast subset)"
timed bash scripts/pythons.sh
