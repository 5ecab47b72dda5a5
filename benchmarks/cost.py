#!/usr/bin/env python
"""Command-line entry point of the cost benchmark: ``python benchmarks/cost.py [--quick] [--render-only] ...``.

The benchmark itself is the :mod:`costbench` package next to this file: its docstring says what is measured,
how, and what is written; ``--help`` lists the options.
"""
import sys
from pathlib import Path

from costbench.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:          # run as a script from anywhere, without installing the package
    sys.path.insert(0, str(REPO_ROOT))

if __name__ == "__main__":
    sys.exit(main())
