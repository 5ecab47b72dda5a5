import json
import subprocess
import sys

import pytest

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("GCA_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))


@pytest.mark.skipif(not (SHARED_DATA / "omniglot").is_dir(), reason="needs ../shared/data/omniglot")
def test_quality_quick_runs_and_writes_rows(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "quality.py"), "--quick", "--out", str(out),
                           "--workdir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=900,
                          cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "quality.json").read_text())
    assert {r["method"] for r in rows} == {"N-pair", "N-pair + GCA-HNG"}
    for row in rows:
        assert {"dataset", "method", "budget", "runs"} <= set(row)
        for run in row["runs"]:
            assert run["seed"] == 0 and 0 <= run["R@1"] <= 1 and 0 <= run["MAP@R"] <= 1
    assert (out / "quality.md").is_file() and (out / "quality_recall.png").is_file()
    assert (out / "projection_omniglot-smoke.png").is_file()
