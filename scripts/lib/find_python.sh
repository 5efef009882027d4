# Sourced by the CI scripts: find_python X.Y prints a working interpreter of that version.
#
# Looks on PATH, then in pyenv's versions folder (pyenv's shims are on PATH but refuse
# versions that are not the global one), then Debian's and /usr/local's. An interpreter
# counts only when it runs and has the venv module (Debian splits it into python3.X-venv).
find_python() {
  local want=$1 cand
  local -a cands=()
  cand=$(command -v "python$want" 2>/dev/null) && cands+=("$cand")
  cands+=("${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/"python$want")
  cands+=("/usr/bin/python$want" "/usr/local/bin/python$want")
  for cand in "${cands[@]}"; do
    [ -x "$cand" ] || continue
    if "$cand" -c "import sys, venv; sys.exit(sys.version_info[:2] != tuple(map(int, '$want'.split('.'))))" \
      >/dev/null 2>&1; then
      echo "$cand"
      return 0
    fi
  done
  return 1
}
