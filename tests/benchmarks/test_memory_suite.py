"""Smoke test of the cost benchmark's memory suite: ``cost.py --quick --suites memory`` runs it alone and writes
its rows and its section of ``cost.md``."""


def test_memory_suite_quick(quick_suite):
    rows, report = quick_suite("memory")
    by = {r["variant"]: r for r in rows}
    batch, k = by["no memory"]["B"], by["no memory"]["memory_k"]
    assert by["no memory"]["nodes"] == by["no memory, directed"]["nodes"] == batch
    assert by["no memory"]["edges"] == batch * batch
    # the directed path does the same graph with twice the edge states: more products, same synthetics
    assert by["no memory, directed"]["flops_step"] > by["no memory"]["flops_step"]
    assert by["no memory, directed"]["synthetics"] == by["no memory"]["synthetics"]
    for name in ("M = 1k", "M = 4k", "M = 16k"):
        r = by[name]
        chosen = r["nodes"] - batch
        assert 0 < chosen <= batch * k
        # every anchor joined to k entries of other classes, plus one self-loop per entry chosen
        assert r["edges"] == batch * batch + batch * k + chosen
        assert r["synthetics"] > by["no memory"]["synthetics"]
    assert "## Cross-batch memory" in report
