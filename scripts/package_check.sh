#!/usr/bin/env bash
# Build the sdist and the wheel as a release would, then check them as users get them:
#  1. the wheel in a clean virtualenv with no dev tools: a small host app
#     (tests/packaging/installed_host.py) and `flask domainguard --help` against it;
#  2. the sdist carries the whole test suite (conftest.py, helpers, example app, docs): the
#     package built from the sdist, with the `test` dependency group, passes the suite's fast
#     subset run from the unpacked sdist, as a distribution packager would run it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/find_python.sh
PYVER=${PACKAGE_PYTHON:-3.13}
if ! PY=$(find_python "$PYVER"); then
  PY=$(command -v python3)
  echo "package check: Python $PYVER not found; using $("$PY" -V 2>&1) instead"
fi
WORK=$(mktemp -d -t domainguard-package-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
pip_q=(-m pip install --quiet --disable-pip-version-check)

echo "-- build ($("$PY" -V))"
"$PY" -m venv "$WORK/build-venv"
"$WORK/build-venv/bin/python" "${pip_q[@]}" build
"$WORK/build-venv/bin/python" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log"; exit 1; }
SDIST=$(echo "$WORK"/dist/*.tar.gz)
WHEEL=$(echo "$WORK"/dist/*.whl)
ls -l "$WORK/dist" | sed 1d

echo "-- contents"
# What the sdist must carry for its tests to run, and what neither may carry.
sdist_files=$(tar -tzf "$SDIST" | sed 's|^[^/]*/||')
for must in LICENSE CHANGES.md README.md pyproject.toml tests/conftest.py tests/__init__.py \
  tests/hostapp.py example_app/__init__.py docs/index.md flask_domainguard/py.typed; do
  grep -qx "$must" <<<"$sdist_files" || { echo "sdist lacks $must" >&2; exit 1; }
done
wheel_files=$("$PY" -c "import sys, zipfile; print('\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))" "$WHEEL")
for must in flask_domainguard/py.typed flask_domainguard/static/domainguard.css \
  flask_domainguard/templates/domainguard/base.html; do
  grep -qx "$must" <<<"$wheel_files" || { echo "wheel lacks $must" >&2; exit 1; }
done
grep -qE '^flask_domainguard-[^/]+\.dist-info/licenses/LICENSE$' <<<"$wheel_files" ||
  { echo "wheel lacks its LICENSE" >&2; exit 1; }
if grep -qE '^(tests|example_app|benchmarks|docs)/' <<<"$wheel_files"; then
  echo "the wheel carries files outside the package" >&2; exit 1
fi
if grep -qE '__pycache__|\.pyc$' <<<"$sdist_files$wheel_files"; then
  echo "a distribution carries compiled files" >&2; exit 1
fi
echo "sdist: $(wc -l <<<"$sdist_files") files, wheel: $(wc -l <<<"$wheel_files") files"

echo "-- the wheel in a clean virtualenv (no extras, no dev tools)"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" "${pip_q[@]}" "$WHEEL"
mkdir "$WORK/host" "$WORK/host-data"
cp tests/packaging/installed_host.py "$WORK/host/"
if "$VPY" -c "import pytest" 2>/dev/null; then
  echo "pytest got into a user's install: a dev tool is a runtime dependency" >&2; exit 1
fi
(
  cd "$WORK/host"
  export HOST_DATA="$WORK/host-data"
  "$VPY" installed_host.py
  "$WORK/venv/bin/flask" --app installed_host domainguard --help >"$WORK/help.txt"
  for command in sweep check report adopt reverify; do
    grep -qE "^  $command( |$)" "$WORK/help.txt" ||
      { cat "$WORK/help.txt"; echo "flask domainguard --help lacks $command" >&2; exit 1; }
  done
  echo "flask domainguard --help: ok"
)

echo "-- the test suite from the unpacked sdist (fast subset)"
tar -xzf "$SDIST" -C "$WORK"
SRC=$(echo "$WORK"/flask_domainguard-*/)
# Built from the sdist as a packager would; the unpacked copy of the package is removed so
# that the tests import the installed one.
"$VPY" "${pip_q[@]}" --force-reinstall --no-deps "$SDIST"
"$VPY" "${pip_q[@]}" --upgrade pip  # dependency groups need pip 25.1
"$VPY" "${pip_q[@]}" --group "$SRC/pyproject.toml:test"
rm -rf "$SRC/flask_domainguard"
# The reference data (PSL and isemail test files, real RDAP answers) sits beside a checkout,
# never in a distribution; lend it to the unpacked sdist when it is there.
if [ -d ../shared/reference ]; then
  ln -s "$(cd ../shared && pwd)" "$WORK/shared"
fi
(
  cd "$SRC"
  "$VPY" -m pytest -q -p no:cacheprovider -m "not slow and not browser" "$@"
)
