#!/usr/bin/env bash
# Run the test suite from nothing: sets up .venv if needed, lints with ruff, then pytest. Extra arguments go to pytest.
source "$(dirname "$0")/env.sh"
# the linter ([tool.ruff] in pyproject.toml) first: unused imports, unsorted imports and the like fail the run
python -m ruff check . || exit 1
python -m pytest -q "$@"
