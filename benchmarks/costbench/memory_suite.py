"""The ``memory`` suite: one training iteration with a cross-batch memory of M entries (``gca.memory_size``).

Variants, each in a fresh child process, alternating in rounds:

* ``no memory``: the library's default two-pass step (one edge state per unordered pair on the full graph);
* ``no memory, directed``: the same step with one state per directed edge, which a memory needs (its edges go
  one way), to separate the cost of the directed path from that of the memory;
* ``M = 1k / 4k / 16k``: a memory of that many entries, full of random embeddings of other classes, each anchor
  joined to ``memory_k`` of them (:func:`gca.graph.memory_edge_index`): the step then also searches the memory
  and propagates over the entries chosen (at most ``B * memory_k`` extra nodes and edges).

An iteration is :func:`gca.train.train_step` with its three optimisers (AdamW) on a fixed batch of embeddings (a
leaf parameter stands for the embedding network), followed by the memory's refresh (``Objective.end_step``), at
the authors' CUB batch (B = 81 = 27 x 3, L = 2, H = 4, D = 512).
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, List

from costbench.harness import Memory, Runner

#: variant -> (memory size, symmetric edges)
MEMORY_VARIANTS = {"no memory": (0, "auto"), "no memory, directed": (0, False), "M = 1k": (1024, "auto"),
                   "M = 4k": (4096, "auto"), "M = 16k": (16384, "auto")}
MEMORY_K = 16


def work_memory_variant(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Time, count the FLOPs of, and measure the peak memory of ``train_step`` with a memory of ``M`` entries."""
    import torch

    from costbench.steps import timed_train_steps, train_step_setup

    size, symmetric = MEMORY_VARIANTS[cfg["variant"]]
    device, net, objective, labels, optimisers = train_step_setup(cfg, symmetric_edges=symmetric, memory_size=size,
                                                                  memory_k=cfg["memory_k"])
    if size:
        # a full memory of classes the batch does not hold (labels past the batch's), as after M / B steps
        gen = torch.Generator().manual_seed(cfg["seed"] + 1)
        classes = objective.num_classes
        entries = torch.randn(size, cfg["D"], generator=gen).to(device)
        entry_labels = (labels.max() + 1 + torch.arange(size) % (classes - int(labels.max()) - 1)).to(device)
        objective.generator.memory.enqueue(entries, entry_labels)
    result = timed_train_steps(cfg, device, Memory(device), net, objective, labels, optimisers)
    out = objective.generate(net(None).detach(), labels)
    return {**result, "nodes": int(out.graph.num_nodes), "edges": int(out.graph.edge_index.shape[1]),
            "synthetics": len(out.synthetics)}


def suite_memory(args, runner: Runner, rows, device: str) -> None:
    """The variants of :data:`MEMORY_VARIANTS` at ``args.memory_batch``, alternating in ``args.memory_rounds``
    rounds."""
    from costbench.suites import Suite, child_common

    suite = Suite("memory", runner, rows)
    for round_index in range(args.memory_rounds):
        for variant in MEMORY_VARIANTS:
            settings = {"variant": variant, "B": args.memory_batch, "K": args.memory_per_class,
                        "L": args.memory_layers, "H": args.heads, "D": args.dim, "round": round_index,
                        "memory_k": MEMORY_K, "num_classes": max(args.num_classes, 2 * args.memory_batch)}
            if suite.left() <= 0:
                suite.skip(settings, "time budget spent")
                continue
            suite.run(work_memory_variant, settings, {**child_common(args, device), **settings})


def memory_markdown(rows: List[Dict[str, Any]]) -> List[str]:
    """The ``memory`` section of ``cost.md`` (empty when the suite did not run)."""
    runs = [r for r in rows if r.get("suite") == "memory" and r.get("status") == "ok"]
    if not runs:
        return []
    first = runs[0]
    out = ["## Cross-batch memory", "",
           f"One `gca.train.train_step` (two-pass, three AdamW optimisers) and the memory's refresh at B={first['B']} "
           f"(K={first['K']}, L={first['L']}, H={first['H']}, D={first['D']}), each anchor joined to "
           f"{first['memory_k']} memory entries of other classes; every variant in a fresh process, alternating in "
           "rounds. CPU time: median over the rounds of each process's median; memory: peak RSS rise (largest over "
           "the rounds); nodes and edges: the graph of one step (the memory entries chosen join as nodes).", "",
           "| variant | CPU s / step | vs no memory | GFLOP | peak mem (GiB) | nodes | edges | synthetics | rounds |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = None
    for variant in MEMORY_VARIANTS:
        v = [r for r in runs if r["variant"] == variant]
        if not v:
            continue
        cpu = statistics.median(r["cpu_step_s"] for r in v)
        base = cpu if base is None else base
        out.append(f"| {variant} | {cpu:.2f} | {cpu / base:.2f} | {max(r['flops_step'] for r in v) / 1e9:.1f} | "
                   f"{max(r['peak_mem_rise_mb'] for r in v) / 1024:.2f} | {v[0]['nodes']} | {v[0]['edges']} | "
                   f"{v[0]['synthetics']} | {len(v)} |")
    return out + [""]
