"""Smoke test of the cost benchmark's ddp suite: ``cost.py --quick --suites ddp`` runs one process against two
(gloo, as torchrun starts them) and counts the bytes each process sends."""


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
