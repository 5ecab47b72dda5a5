"""The ``ddp`` suite: a training step at equal global batch, in one process against two (torch.distributed, gloo).

Variants, alternating in rounds, at each global batch size:

* ``1 process, 1 thread`` and ``1 process, 2 threads``: :func:`gca.train.train_step` on the whole batch (one state
  per unordered pair on the full graph, the default), and ``1 process, 1 thread, directed edges`` (one state per
  directed edge), which with the first lets the memory per edge row and per directed edge be told apart;
* ``2 processes x 1 thread, graph repeated`` and ``2 processes x 1 thread, edges sharded``: two processes started
  as ``torchrun`` starts them (``RANK``, ``WORLD_SIZE``; they meet at a file rather than a TCP port, which another
  program could take between picking and binding it), each holding half the
  batch (disjoint classes), the embedding network in ``DistributedDataParallel`` and the objective in
  :class:`gca.distributed.GatheredObjective`, as the trainer runs them under ``torchrun``: the generator's graph
  work repeated on both, or split by edges (:class:`gca.distributed.EdgeShard`, the trainer's default).

The step is the default two-pass step of GCA-HNG over a small embedding network (two linear layers on fixed
inputs), so that the generator dominates as it does at these batch sizes. The suite measures wall and CPU time,
each process's peak memory and the bytes each process sends per step: the all-gathers (embeddings and labels;
sharded, also the node states after every node update and the synthetics), the all-reduces (the gathered
gradients; sharded, also lambda's BN statistics and the generator's gradient average) and DDP's gradient
all-reduce, counted where they are called.

From the one-process rows it fits the peak memory as ``a + b B + c rows + d directed`` (edge states kept and
directed edges, :func:`gca.distributed.shard_edge_counts`), checks the fit against the sharded processes'
measured peaks, and tabulates edges and memory per process for global batches of 1k-16k over 1-64 processes.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from costbench.harness import Runner

#: variant -> (processes, threads per process, edges sharded, one state per unordered pair)
DDP_VARIANTS = {"1 process, 1 thread": (1, 1, False, True), "1 process, 2 threads": (1, 2, False, True),
                "1 process, 1 thread, directed edges": (1, 1, False, False),
                "2 processes x 1 thread, graph repeated": (2, 1, False, True),
                "2 processes x 1 thread, edges sharded": (2, 1, True, True)}
#: the formula table's global batches, processes and knn neighbours
TABLE_BATCHES, TABLE_WORLDS, TABLE_KNN = (1024, 2048, 4096, 8192, 16384), (1, 2, 4, 8, 16, 32, 64), 32
IN_DIM, HIDDEN = 256, 512


def _count_bytes(sent: Dict[str, int]) -> None:
    """Patch ``torch.distributed``'s all_gather and all_reduce to count in ``sent`` the bytes this process sends."""
    import torch.distributed as dist

    gather, reduce = dist.all_gather, dist.all_reduce

    def counted_gather(tensor_list, tensor, *args, **kwargs):
        sent["all_gather"] += tensor.numel() * tensor.element_size()
        return gather(tensor_list, tensor, *args, **kwargs)

    def counted_reduce(tensor, *args, **kwargs):
        sent["all_reduce"] += tensor.numel() * tensor.element_size()
        return reduce(tensor, *args, **kwargs)

    dist.all_gather, dist.all_reduce = counted_gather, counted_reduce


def run_process(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """One process's part: build the same network and objective on every process (seed), take this process's
    rows of the global batch, run the timed steps; returns its CPU and wall seconds per step and bytes sent."""
    import resource

    import torch
    import torch.distributed as dist
    from torch import nn

    from gca.model import GCAHNG
    from gca.train.step import Optimisers, train_step

    torch.set_num_threads(cfg["threads"])
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    sent = {"all_gather": 0, "all_reduce": 0, "ddp_all_reduce": 0}
    if world > 1:
        _count_bytes(sent)
        dist.init_process_group("gloo", init_method=cfg.get("rendezvous", "env://"), rank=rank, world_size=world)
    torch.manual_seed(cfg["seed"])
    classes = cfg["B"] // cfg["K"]
    net = nn.Sequential(nn.Linear(IN_DIM, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, cfg["D"]))
    objective = GCAHNG(cfg["D"], classes, num_layers=cfg["L"], heads=cfg["H"],
                       symmetric_edges=cfg["symmetric"]).train()
    images = torch.randn(cfg["B"], IN_DIM, generator=torch.Generator().manual_seed(cfg["seed"]))
    labels = torch.arange(classes).repeat_interleave(cfg["K"])           # class-major: disjoint halves
    model, wrapped = net, objective
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        from gca.distributed import GatheredObjective
        share = slice(rank * cfg["B"] // world, (rank + 1) * cfg["B"] // world)
        images, labels = images[share], labels[share]
        model, wrapped = DistributedDataParallel(net), GatheredObjective(objective, shard_edges=cfg["shard"])

        def counted_hook(state, bucket):
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
            nbytes = bucket.buffer().numel() * bucket.buffer().element_size()
            sent["ddp_all_reduce"] += nbytes
            future = allreduce_hook(state, bucket)
            sent["all_reduce"] -= nbytes             # the hook calls dist.all_reduce: counted as DDP's, once
            return future

        model.register_comm_hook(None, counted_hook)
    optimisers = Optimisers(metric=torch.optim.AdamW(net.parameters(), lr=1e-4),
                            generator=torch.optim.AdamW(objective.generator_parameters(), lr=1e-4),
                            classifier=torch.optim.AdamW(objective.classifier_parameters(), lr=1e-4))

    def one():
        start, cpu = time.perf_counter(), time.process_time()
        train_step(model, wrapped, images, labels, optimisers)
        return time.perf_counter() - start, time.process_time() - cpu

    for _ in range(cfg["warmup"]):
        one()
    before = dict(sent)
    timed = [one() for _ in range(cfg["repeats"])]
    per_step = {k: (sent[k] - before[k]) / cfg["repeats"] for k in sent}
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    rise_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_start) / 1024
    from gca.distributed import shard_edge_counts
    shard_world = world if cfg["shard"] else 1
    counts = shard_edge_counts(cfg["B"], shard_world, rank if cfg["shard"] else 0, symmetric=cfg["symmetric"])
    return {"wall": [t for t, _ in timed], "cpu": [c for _, c in timed], "bytes_per_step": per_step,
            "peak_mem_rise_mb": rise_mb, "edge_rows": counts["rows"], "directed_edges": counts["directed"]}


def work_ddp_variant(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Run one variant: in this process, or in ``processes`` fresh interpreters started as ``torchrun`` would."""
    processes, threads, shard, symmetric = DDP_VARIANTS[cfg["variant"]]
    cfg = {**cfg, "threads": threads, "shard": shard, "symmetric": symmetric}
    if processes == 1:
        results = [run_process(cfg)]
    else:
        here = Path(__file__).resolve()
        env = {**os.environ, "WORLD_SIZE": str(processes), "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join([str(here.parents[2]), str(here.parents[1]),
                                              os.environ.get("PYTHONPATH", "")])}
        with tempfile.TemporaryDirectory(prefix="costbench-ddp-") as tmp:
            rendezvous = f"file://{Path(tmp) / 'rendezvous'}"
            (Path(tmp) / "cfg.json").write_text(json.dumps({**cfg, "rendezvous": rendezvous}))
            procs = [subprocess.Popen([sys.executable, str(here), str(Path(tmp) / "cfg.json"), str(rank)],
                                      env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for rank in range(processes)]
            outputs = [p.communicate(timeout=cfg.get("timeout_s", 600)) for p in procs]
            for p, (_, err) in zip(procs, outputs):
                if p.returncode != 0:
                    raise RuntimeError(f"a process of {cfg['variant']} failed: {err.strip().splitlines()[-1:]}")
            results = [json.loads((Path(tmp) / f"rank{rank}.json").read_text()) for rank in range(processes)]
    # a step of the group ends when its slowest process ends; CPU: every process's CPU seconds together
    walls = [max(step) for step in zip(*(r["wall"] for r in results))]
    cpus = [sum(step) for step in zip(*(r["cpu"] for r in results))]
    return {"processes": processes, "threads_per_process": threads, "time_step_s": statistics.median(walls),
            "cpu_step_s": statistics.median(cpus), "time_all_s": walls,
            "peak_mem_rise_mb": max(r["peak_mem_rise_mb"] for r in results),
            "peak_mem_rise_mb_each": [r["peak_mem_rise_mb"] for r in results],
            "edge_rows": max(r["edge_rows"] for r in results),
            "directed_edges": max(r["directed_edges"] for r in results),
            "bytes_per_step": results[0]["bytes_per_step"]}


def suite_ddp(args, runner: Runner, rows, device: str) -> None:
    """The variants of :data:`DDP_VARIANTS` at each of ``args.ddp_sizes``, alternating in ``args.ddp_rounds``
    rounds. CPU only: a GPU run needs one device per process."""
    from costbench.suites import Suite

    suite = Suite("ddp", runner, rows)
    for batch in args.ddp_sizes:
        for round_index in range(args.ddp_rounds):
            for variant in DDP_VARIANTS:
                settings = {"variant": variant, "B": batch, "K": args.ddp_per_class, "L": args.ddp_layers,
                            "H": args.heads, "D": args.ddp_dim, "round": round_index}
                if device != "cpu":
                    suite.skip(settings, "the ddp suite runs on CPU (gloo); on GPUs it needs one device per process")
                    continue
                if suite.left() <= 0:
                    suite.skip(settings, "time budget spent")
                    continue
                suite.run(work_ddp_variant, settings, {**settings, "seed": args.seed, "warmup": args.warmup,
                                                       "repeats": args.repeats})
    refresh_memory_model(rows)


def refresh_memory_model(rows: List[Dict[str, Any]]) -> None:
    """Replace the ``ddp`` suite's derived "memory model" row by one fitted on its measured rows now (also when
    only the report is rewritten, ``cost.py --render-only``)."""
    rows[:] = [r for r in rows if not (r.get("suite") == "ddp" and r.get("variant") == "memory model")]
    scaling = memory_model(rows)
    if scaling is not None:
        rows.append({"suite": "ddp", "variant": "memory model", "status": "derived", **scaling})


def _features(rows: int, directed: int) -> List[float]:
    return [1.0, float(rows), float(directed)]


def memory_model(rows) -> Optional[Dict[str, Any]]:
    """Fit each process's peak memory (MiB) as ``a + c rows + d directed`` on the one-process, one-thread rows
    (pairs and directed edges, every batch size), check it on the sharded rows, and tabulate the edges and
    memory per process of :data:`TABLE_BATCHES` x :data:`TABLE_WORLDS` for the full graph (one state per pair of
    two owned nodes) and knn (k = :data:`TABLE_KNN`). ``None`` without enough one-process rows (four).

    No term per sample: the node-level tensors (``O(B D)`` per process) are small at the measured sizes, and a
    fitted one is confounded with the edges (both grow with ``B`` there); the table therefore leaves them out."""
    import numpy as np

    from gca.distributed import shard_edge_counts

    ok = [r for r in rows if r.get("suite") == "ddp" and r.get("status") == "ok"]
    fit_rows = [r for r in ok if r["variant"] in ("1 process, 1 thread", "1 process, 1 thread, directed edges")]
    if len({(r["variant"], r["B"]) for r in fit_rows}) < 4:
        return None
    x = np.array([_features(r["edge_rows"], r["directed_edges"]) for r in fit_rows])
    y = np.array([r["peak_mem_rise_mb"] for r in fit_rows])
    coef = np.linalg.lstsq(x, y, rcond=None)[0]

    def predict(batch, counts):
        return float(np.dot(coef, _features(counts["rows"], counts["directed"])))

    check = []
    for r in ok:
        if r["variant"] == "2 processes x 1 thread, edges sharded":
            for rank, measured in enumerate(r["peak_mem_rise_mb_each"]):
                counts = shard_edge_counts(r["B"], 2, rank, symmetric=True)
                check.append({"B": r["B"], "rank": rank, "edge_rows": counts["rows"], "measured_mb": measured,
                              "predicted_mb": predict(r["B"], counts)})
    table = []
    for batch in TABLE_BATCHES:
        for world in TABLE_WORLDS:
            full = shard_edge_counts(batch, world, 0, symmetric=True)
            knn = shard_edge_counts(batch, world, 0, "knn", TABLE_KNN)
            table.append({"B": batch, "N": world, "full_rows": full["rows"], "full_directed": full["directed"],
                          "full_mb": predict(batch, full), "knn_rows": knn["rows"], "knn_mb": predict(batch, knn)})
    d = ok[0]
    return {"B": None, "coef_mb": [float(c) for c in coef], "fit_points": len(fit_rows), "check": check,
            "table": table, "D": d["D"], "L": d["L"], "H": d["H"], "K": d["K"]}


def ddp_markdown(rows: List[Dict[str, Any]]) -> List[str]:
    """The ``ddp`` section of ``cost.md`` (empty when the suite did not run)."""
    runs = [r for r in rows if r.get("suite") == "ddp" and r.get("status") == "ok"]
    if not runs:
        return []
    first = runs[0]
    out = ["## One process against two (torch.distributed, gloo)", "",
           f"One two-pass GCA-HNG training step at equal global batch (K={first['K']}, L={first['L']}, "
           f"H={first['H']}, D={first['D']}, full graph; a two-layer embedding network on fixed inputs): in one "
           "process, or in two started as `torchrun` starts them, each with half the batch (DDP, "
           "`GatheredObjective`), the generator's graph repeated on both or sharded by edges (`EdgeShard`: each "
           "process the edges into its own samples). Wall: seconds per step of the group (its slowest process), "
           "median over rounds of each run's median; CPU: the processes' CPU seconds per step together. Bytes: "
           "what one process sends per step (all-gathers: embeddings, labels and, sharded, node states after every "
           "node update and synthetics; all-reduces: gathered gradients and, sharded, lambda's BN statistics and the "
           "generator's gradient average; DDP's gradient all-reduce of the embedding network). Edge rows: the edge "
           "states one process keeps (one per unordered pair, or per directed edge). Peak memory: the largest "
           "process's peak RSS rise.", "",
           "| B | variant | edge rows per process | wall s / step | vs 1 process, 1 thread | CPU s / step "
           "| all-gather KiB | all-reduce KiB | DDP all-reduce KiB | peak mem per process (MiB) | rounds |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for batch in sorted({r["B"] for r in runs}):
        base = None
        for variant in DDP_VARIANTS:
            v = [r for r in runs if r["B"] == batch and r["variant"] == variant]
            if not v:
                continue
            wall = statistics.median(r["time_step_s"] for r in v)
            base = wall if base is None else base
            sent = v[0]["bytes_per_step"]
            out.append(f"| {batch} | {variant} | {v[0].get('edge_rows', '')} | {wall:.3f} | {wall / base:.2f} | "
                       f"{statistics.median(r['cpu_step_s'] for r in v):.3f} | {sent['all_gather'] / 1024:.1f} | "
                       f"{sent['all_reduce'] / 1024:.1f} | {sent['ddp_all_reduce'] / 1024:.1f} | "
                       f"{max(r['peak_mem_rise_mb'] for r in v):.0f} | {len(v)} |")
    model = [r for r in rows if r.get("suite") == "ddp" and r.get("variant") == "memory model"]
    if model:
        out += [""] + scaling_markdown(model[-1])
    return out + [""]


def scaling_markdown(model: Dict[str, Any]) -> List[str]:
    """The memory model's check and its table of edges and memory per process."""
    a, c, d = model["coef_mb"]
    out = ["### Edges and memory per process", "",
           f"Peak memory of one process fitted on the one-process rows above ({model['fit_points']} runs, pairs and "
           f"directed edges): **{a:.0f} MiB + {c * 1024:.1f} KiB x edge rows + {d * 1024:.1f} KiB x directed "
           f"edges** (D={model['D']}, L={model['L']}, H={model['H']}, the two-pass step, float32; edge rows and "
           "directed edges per process from `gca.distributed.shard_edge_counts`, the count that "
           "`build_batch_graph(shard=...)` builds, tested; no per-sample term, see `memory_model`). Checked against "
           "the sharded processes' own peaks:", "",
           "| B | rank | edge rows | measured MiB | predicted MiB |", "|---|---|---:|---:|---:|"]
    for row in model["check"]:
        out.append(f"| {row['B']} | {row['rank']} | {row['edge_rows']} | {row['measured_mb']:.0f} | "
                   f"{row['predicted_mb']:.0f} |")
    worlds = sorted({row["N"] for row in model["table"]})
    out += ["", f"Per process, from the formula: edge rows (thousands) and memory (GiB) on the full graph and on knn "
            f"(k = {TABLE_KNN}), at the settings above; far beyond the fitted sizes, so orders of magnitude, not "
            "promises. The full graph keeps one state per pair of two owned nodes, so one process holds B(B+1)/2 "
            "rows and N processes B^2 (2N - 1) / 2N^2 each (the edges between two processes' nodes are kept on both "
            "sides): 0.75 of one process's rows at N = 2, 0.44 at N = 4, about 2/N for large N; knn keeps B k / N.",
            "",
            "| B | graph | " + " | ".join(f"N = {n}" for n in worlds) + " |",
            "|---|---|" + "---:|" * len(worlds)]
    for batch in sorted({row["B"] for row in model["table"]}):
        cells = {row["N"]: row for row in model["table"] if row["B"] == batch}
        for graph, rows_key, mb_key in (("full", "full_rows", "full_mb"), (f"knn k={TABLE_KNN}", "knn_rows", "knn_mb")):
            out.append(f"| {batch} | {graph} | " + " | ".join(
                f"{cells[n][rows_key] / 1000:,.0f}k, {cells[n][mb_key] / 1024:,.1f} GiB" for n in worlds) + " |")
    return out


if __name__ == "__main__":          # one process of the two-process variant
    config = json.loads(Path(sys.argv[1]).read_text())
    result = run_process(config)
    Path(sys.argv[1]).with_name(f"rank{sys.argv[2]}.json").write_text(json.dumps(result))
