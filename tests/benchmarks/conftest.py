import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def quick_suite(tmp_path):
    """Run ``benchmarks/cost.py --quick --suites <name>`` into ``tmp_path``; returns the suite's rows and the
    text of its ``cost.md``."""
    def run(name):
        out = tmp_path / "results"
        command = [sys.executable, str(REPO_ROOT / "benchmarks" / "cost.py"), "--quick", "--suites", name,
                   "--out", str(out)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = [r for r in json.loads((out / "cost.json").read_text()) if r["suite"] == name]
        assert rows and all(r["status"] == "ok" for r in rows), [r.get("reason") for r in rows]
        return rows, (out / "cost.md").read_text()
    return run
