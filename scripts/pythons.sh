#!/usr/bin/env bash
# The suite's fast subset on every supported Python the machine has (3.10 to 3.13, the
# classifiers in pyproject.toml), each in its own throwaway virtualenv with the newest
# dependencies. Versions the rest of CI already runs are named and not run twice:
#   - the version of .venv/bin/python (scripts/test.sh runs the whole suite on it);
#   - $PACKAGE_PYTHON, 3.13 by default (scripts/package_check.sh runs the fast subset from
#     the sdist on it).
# An absent version is skipped with the reason printed; under CI=true finding none of the
# extra versions at all fails the run, since the classifiers would then be untested.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/find_python.sh
VERSIONS=${PYTHON_VERSIONS:-3.10 3.11 3.12 3.13}
main=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
package=${PACKAGE_PYTHON:-3.13}
WORK=$(mktemp -d -t domainguard-pythons-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ran=0
for version in $VERSIONS; do
  if [ "$version" = "$main" ]; then
    echo "-- Python $version: the whole suite runs on it already (.venv)"
    continue
  fi
  if ! PY=$(find_python "$version"); then
    echo "-- Python $version: skipped, no working python$version on this machine" \
      "(looked on PATH, in ${PYENV_ROOT:-$HOME/.pyenv}/versions, /usr/bin, /usr/local/bin)"
    continue
  fi
  if [ "$version" = "$package" ] && [ -z "${PYTHONS_ALL:-}" ]; then
    echo "-- Python $version: the package check runs the fast subset on it ($PY)"
    ran=$((ran + 1))
    continue
  fi
  echo "-- Python $version ($PY): fast subset"
  venv="$WORK/$version"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e . --group test
  started=$SECONDS
  "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow and not browser" "$@"
  echo "-- Python $version: passed in $((SECONDS - started)) s"
  ran=$((ran + 1))
done
if [ "$ran" = 0 ] && [ "${CI:-}" = "true" ]; then
  echo "no Python besides the main one was found, and CI must test the versions it claims" >&2
  exit 1
fi
