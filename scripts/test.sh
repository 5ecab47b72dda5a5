#!/usr/bin/env bash
# Run the test suite from nothing: sets up .venv if needed, then pytest. Extra arguments go to pytest.
source "$(dirname "$0")/env.sh"
python -m pytest -q "$@"
