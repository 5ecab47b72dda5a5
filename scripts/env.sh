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
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  # the pinned extra holds the torch/torchvision pins; everything else comes from pyproject.toml
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev,pinned]" >&2
  echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
