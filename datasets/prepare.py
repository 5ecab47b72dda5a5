#!/usr/bin/env python
"""Prepare a downloaded dataset for gca: thin wrapper around :func:`gca.data.prepare.main`.

Usage (see datasets/README.md)::

    python datasets/prepare.py NAME SOURCE [SOURCE ...] DEST [--mode copy|move|symlink] [--overwrite]
    python datasets/prepare.py --check NAME [ROOT]
    python datasets/prepare.py --list

Equivalent to ``python -m gca.data.prepare ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from gca.data.prepare import main
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from gca.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
