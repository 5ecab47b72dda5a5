"""Smoke test of the cost benchmark's large_batch suite: ``cost.py --quick --suites large_batch`` runs it alone
and writes its rows, its section of ``cost.md`` and its summary line."""
import json
import math
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_large_batch_suite_quick(tmp_path):
    out = tmp_path / "results"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "cost.py"), "--quick", "--suites", "large_batch",
               "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "cost.json").read_text())
    assert {r["suite"] for r in rows} == {"environment", "matmul", "large_batch"}
    assert not [r for r in rows if r["status"] != "ok"], [r.get("reason") for r in rows if r["status"] != "ok"]

    steps = {r["B"]: r for r in rows if r["suite"] == "large_batch" and r["variant"] == "generator step"}
    assert set(steps) == {128, 512}
    for batch, r in steps.items():
        assert (r["graph"], r["k"], r["edges"]) == ("knn", 16, batch * 17)
        for key in ("time_step_s", "time_metric_s", "flops_step", "gflops_per_s"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert math.isfinite(r["peak_mem_rise_mb"]) and r["peak_mem_rise_mb"] >= 0
    assert steps[512]["flops_step"] > steps[128]["flops_step"]

    searches = {r["variant"]: r for r in rows if r["suite"] == "large_batch" and r["variant"].startswith("knn search")}
    blocks, whole = searches["knn search, blocks"], searches["knn search, one B x B block"]
    # the quick run's budget is a quarter of the 512 x 512 scores: 4 blocks of 128 rows, against one of 512
    assert (blocks["B"], blocks["max_scores"], blocks["rows_per_block"], blocks["blocks"]) == (512, 65536, 128, 4)
    assert (whole["rows_per_block"], whole["blocks"]) == (512, 1)
    # the blocks do the same products as the whole matrix, 2 B^2 D FLOPs, no more
    assert blocks["flops"] == whole["flops"] == 2 * 512 * 512 * blocks["D"]
    # a quarter of the scores at once: the search's peak is lower by at least a quarter of the 1 MiB matrix
    assert 0 < blocks["peak_tensor_mb"] < whole["peak_tensor_mb"] - 0.25

    md = (out / "cost.md").read_text()
    assert "## Large batches: the knn graph at B = 128 and 512" in md
    assert "- Large batch: generator step, knn k=16" in md and "knn search alone at B=512" in md
