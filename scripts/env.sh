# Sourced by the other scripts: creates (or refreshes) the project's virtualenv in .venv from nothing.
# Needs only python3.11 (or $PYTHON) and the package registries. Re-installs when pyproject.toml changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
VENV="${GCA_VENV:-$ROOT/.venv}"
STAMP="$VENV/.gca-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "[gca] setting up $VENV (torch, torch-geometric, ...; a few minutes the first time)" >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  log="$VENV/install.log"
  # the pinned extra holds the torch/torchvision pins; everything else comes from pyproject.toml
  if ! "$VENV/bin/python" -m pip install -e "$ROOT[dev,pinned]" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "[gca] installing the environment failed; the whole log is in $log" >&2
    exit 1
  fi
  echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
