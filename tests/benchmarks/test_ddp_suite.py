"""Smoke test of the cost benchmark's ddp suite: ``cost.py --quick --suites ddp`` runs one process against two
(gloo, as torchrun starts them) and counts the bytes each process sends."""
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_ddp_suite_quick(tmp_path):
    out = tmp_path / "results"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "cost.py"), "--quick", "--suites", "ddp",
               "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [r for r in json.loads((out / "cost.json").read_text()) if r["suite"] == "ddp"]
    assert all(r["status"] == "ok" for r in rows), [r.get("reason") for r in rows]
    by = {r["variant"]: r for r in rows}
    assert by["1 process, 1 thread"]["processes"] == 1 and by["2 processes x 1 thread"]["processes"] == 2
    assert set(by["1 process, 1 thread"]["bytes_per_step"].values()) == {0}
    two = by["2 processes x 1 thread"]
    batch, dim, half = two["B"], two["D"], two["B"] // 2
    sent = two["bytes_per_step"]
    # four all-gathers per step (phases A, B, C and the memory refresh), each of this process's embeddings and
    # labels, plus the shape check ([2] int64) before the gather with gradient; one all-reduce of the gathered
    # embeddings' gradient; DDP: every parameter of the embedding network (256 -> 512 -> D) once
    assert sent["all_gather"] == 4 * (half * dim * 4 + half * 8) + 2 * 8
    assert sent["all_reduce"] == batch * dim * 4
    assert sent["ddp_all_reduce"] == (256 * 512 + 512 + 512 * dim + dim) * 4
    assert "## One process against two" in (out / "cost.md").read_text()
