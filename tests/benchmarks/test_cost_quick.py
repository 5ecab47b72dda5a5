"""Smoke test of the cost benchmark: ``benchmarks/cost.py --quick`` runs and writes well-formed rows."""
import json
import math
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_cost_quick_runs_and_writes_rows(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "cost.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "cost.json").read_text())
    assert isinstance(rows, list) and all(isinstance(r, dict) and "suite" in r and "status" in r for r in rows)
    assert not [r for r in rows if r["status"] == "failed"], [r.get("reason") for r in rows if r["status"] == "failed"]

    env = [r for r in rows if r["suite"] == "environment"]
    assert len(env) == 1
    assert {"torch", "torch_geometric", "threads", "torch_scatter_installed", "cpu_model", "allocator"} <= set(env[0])
    assert set(env[0]["allocator"]) == {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}

    matmul = [r for r in rows if r["suite"] == "matmul" and r["status"] == "ok"]
    assert matmul and all(_positive(r["gflops_per_s"]) for r in matmul)

    steps = [r for r in rows if r["suite"] == "generator_step" and r["status"] == "ok"]
    assert {r["graph"] for r in steps} == {"full", "knn"}
    assert {r["B"] for r in steps} == {32, 64}
    for r in steps:
        assert {"B", "L", "H", "D", "K", "graph", "k", "symmetric", "fast", "edges", "repeats", "threads"} <= set(r)
        for key in ("time_step_s", "time_metric_s", "time_generator_s", "flops_step", "gflops_per_s"):
            assert _positive(r[key]), (key, r)
        assert math.isfinite(r["peak_mem_rise_mb"]) and r["peak_mem_rise_mb"] >= 0
        assert r["time_step_s"] >= r["time_metric_s"]
    full = {r["B"]: r for r in steps if r["graph"] == "full"}
    assert full[32]["edges"] == 32 * 32 and full[64]["flops_step"] > full[32]["flops_step"]

    fast = [r for r in rows if r["suite"] == "fast_paths" and r["status"] == "ok"]
    assert {(r["symmetric"], r["fast"]) for r in fast} == {(True, True), (True, False), (False, True), (False, False)}
    by_variant = {(r["symmetric"], r["fast"]): r for r in fast}
    # one edge state per unordered pair does less work than one per direction
    assert by_variant[(True, True)]["flops_step"] < by_variant[(False, True)]["flops_step"]

    variants = {r["variant"]: r for r in rows if r["suite"] == "steps" and r["status"] == "ok"}
    before = [r for r in rows if r["suite"] == "steps" and r["variant"] == "two-pass, before"]
    # the step as it was when the cost issue was filed, from the git history (a shallow clone has none)
    assert len(before) == 1 and (before[0]["status"] == "ok" or before[0]["reason"].startswith("no git history"))
    assert set(variants) - {"two-pass, before"} == {"plain", "two-pass", "fused", "fused, lean", "fused, stored"}
    # one propagation and one backward sweep do less work than two; the plain paths the most; recomputation
    # (gathers, feed-forward activations) adds no matrix product
    flops = {name: r["flops_step"] for name, r in variants.items()}
    assert flops["fused, stored"] < flops["two-pass"] < flops["plain"]
    assert flops["fused, stored"] == flops["fused"] == flops["fused, lean"]
    if "two-pass, before" in variants:
        # the lambda head and edge-to-node message once per unordered pair since then
        assert flops["two-pass"] < flops["two-pass, before"] < flops["plain"]

    prop = [r for r in rows if r["suite"] == "propagation" and r["status"] == "ok"]
    assert {r["variant"] for r in prop} == {"pyg", "dense"} and all(_positive(r["time_s"]) for r in prop)
    assert any(r["suite"] == "propagation" and "torch_scatter" in r for r in rows)

    backbone = [r for r in rows if r["suite"] == "backbone" and r["status"] == "ok"]
    assert backbone and all(_positive(r["time_baseline_s"]) and _positive(r["ratio"]) for r in backbone)

    profile = [r for r in rows if r["suite"] == "profile" and r["status"] == "ok"]
    assert profile and profile[0]["top_ops"] and all(op["self_ms"] >= 0 for op in profile[0]["top_ops"])

    md = (out / "cost.md").read_text()
    assert "## Generator step against batch size" in md and "## Summary" in md
    assert "## Steps side by side" in md
    for name in ("cost_time_vs_batch.png", "cost_memory_vs_batch.png", "cost_pyg_vs_dense.png"):
        assert (out / name).stat().st_size > 0
