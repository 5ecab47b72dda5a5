"""Smoke test of the cost benchmark's ddp suite: ``cost.py --quick --suites ddp`` runs one process against two
(gloo, as torchrun starts them) and counts the bytes each process sends; its memory model on a known law."""
from pathlib import Path

import pytest


def test_ddp_suite_quick(quick_suite):
    rows, report = quick_suite("ddp")
    by = {r["variant"]: r for r in rows}
    assert by["1 process, 1 thread"]["processes"] == 1
    assert by["2 processes x 1 thread, graph repeated"]["processes"] == 2
    assert set(by["1 process, 1 thread"]["bytes_per_step"].values()) == {0}
    two = by["2 processes x 1 thread, graph repeated"]
    batch, dim, half = two["B"], two["D"], two["B"] // 2
    sent = two["bytes_per_step"]
    # four all-gathers per step (phases A, B, C and the memory refresh), each of this process's embeddings and
    # labels, plus the shape check ([2] int64) before the gather with gradient; one all-reduce of the gathered
    # embeddings' gradient; DDP: every parameter of the embedding network (256 -> 512 -> D) once
    assert sent["all_gather"] == 4 * (half * dim * 4 + half * 8) + 2 * 8
    assert sent["all_reduce"] == batch * dim * 4
    assert sent["ddp_all_reduce"] == (256 * 512 + 512 + 512 * dim + dim) * 4
    assert "## One process against two" in report

    # sharded by edges: the same gathers of embeddings and DDP's all-reduce, plus the generator's own traffic
    sharded = by["2 processes x 1 thread, edges sharded"]
    assert sharded["bytes_per_step"]["ddp_all_reduce"] == sent["ddp_all_reduce"]
    assert sharded["bytes_per_step"]["all_gather"] > sent["all_gather"]
    assert sharded["edge_rows"] == half * (half + 1) // 2 + half * half
    assert by["1 process, 1 thread"]["edge_rows"] == batch * (batch + 1) // 2
    assert by["1 process, 1 thread, directed edges"]["edge_rows"] == batch * batch


def test_memory_model_recovers_a_linear_law_and_tabulates_the_shard_counts(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from costbench.ddp_suite import memory_model, refresh_memory_model

    from gca.distributed import shard_edge_counts

    def peak(rows, directed):
        return 100.0 + 0.03 * rows + 0.01 * directed

    measured = []
    for batch in (64, 128, 256):
        for variant, symmetric in (("1 process, 1 thread", True), ("1 process, 1 thread, directed edges", False)):
            counts = shard_edge_counts(batch, 1, 0, symmetric=symmetric)
            measured.append({"suite": "ddp", "status": "ok", "variant": variant, "B": batch, "K": 2, "L": 2, "H": 4,
                             "D": 128, "edge_rows": counts["rows"], "directed_edges": counts["directed"],
                             "peak_mem_rise_mb": peak(counts["rows"], counts["directed"])})
    halves = [shard_edge_counts(256, 2, r, symmetric=True) for r in range(2)]
    measured.append({"suite": "ddp", "status": "ok", "variant": "2 processes x 1 thread, edges sharded", "B": 256,
                     "K": 2, "L": 2, "H": 4, "D": 128, "edge_rows": halves[0]["rows"],
                     "directed_edges": halves[0]["directed"],
                     "peak_mem_rise_mb_each": [peak(h["rows"], h["directed"]) for h in halves]})
    model = memory_model(measured)
    assert model["coef_mb"] == [pytest.approx(100.0), pytest.approx(0.03), pytest.approx(0.01)]
    assert [c["predicted_mb"] for c in model["check"]] == [pytest.approx(c["measured_mb"]) for c in model["check"]]
    cell = next(t for t in model["table"] if t["B"] == 4096 and t["N"] == 4)
    assert cell["full_rows"] == 1024 * 1025 // 2 + 3072 * 1024 and cell["knn_rows"] == 1024 * 33
    assert cell["full_mb"] == pytest.approx(peak(cell["full_rows"], 4096 * 1024))
    # the derived row is replaced, not added to, when the report is rewritten
    refresh_memory_model(measured)
    refresh_memory_model(measured)
    assert sum(r.get("variant") == "memory model" for r in measured) == 1
    assert memory_model(measured[:3]) is None
