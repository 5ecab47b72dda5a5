"""The ``ddp`` suite: a training step at equal global batch, in one process against two (torch.distributed, gloo).

Variants, alternating in rounds, at each global batch size:

* ``1 process, 1 thread`` and ``1 process, 2 threads``: :func:`gca.train.train_step` on the whole batch;
* ``2 processes x 1 thread``: two processes started as ``torchrun`` starts them (``RANK``, ``WORLD_SIZE``,
  ``MASTER_ADDR``, ``MASTER_PORT``), each holding half the batch (disjoint classes), the embedding network in
  ``DistributedDataParallel`` and the objective in :class:`gca.distributed.GatheredObjective`, as the trainer
  runs them under ``torchrun``.

The step is the default two-pass step of GCA-HNG over a small embedding network (two linear layers on fixed
inputs), so that the generator dominates as it does at these batch sizes. The generator's graph work is
repeated on every process (it is not sharded by edges yet), so two processes can only save the embedding
network's share; the suite measures what that is, and the bytes each process sends per step: the all-gathers
of embeddings and labels (``GatheredObjective``, its backward's all-reduce of the gathered gradient) and DDP's
gradient all-reduce, counted where they are called.
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from costbench.harness import Runner

#: variant -> (processes, threads per process)
DDP_VARIANTS = {"1 process, 1 thread": (1, 1), "1 process, 2 threads": (1, 2), "2 processes x 1 thread": (2, 1)}
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
        dist.init_process_group("gloo")
    torch.manual_seed(cfg["seed"])
    classes = cfg["B"] // cfg["K"]
    net = nn.Sequential(nn.Linear(IN_DIM, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, cfg["D"]))
    objective = GCAHNG(cfg["D"], classes, num_layers=cfg["L"], heads=cfg["H"]).train()
    images = torch.randn(cfg["B"], IN_DIM, generator=torch.Generator().manual_seed(cfg["seed"]))
    labels = torch.arange(classes).repeat_interleave(cfg["K"])           # class-major: disjoint halves
    model, wrapped = net, objective
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        from gca.distributed import GatheredObjective
        share = slice(rank * cfg["B"] // world, (rank + 1) * cfg["B"] // world)
        images, labels = images[share], labels[share]
        model, wrapped = DistributedDataParallel(net), GatheredObjective(objective)

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
    return {"wall": [t for t, _ in timed], "cpu": [c for _, c in timed], "bytes_per_step": per_step,
            "peak_mem_rise_mb": rise_mb}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def work_ddp_variant(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Run one variant: in this process, or in ``processes`` fresh interpreters started as ``torchrun`` would."""
    processes, threads = DDP_VARIANTS[cfg["variant"]]
    cfg = {**cfg, "threads": threads}
    if processes == 1:
        results = [run_process(cfg)]
    else:
        here = Path(__file__).resolve()
        env = {**os.environ, "WORLD_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join([str(here.parents[2]), str(here.parents[1]),
                                              os.environ.get("PYTHONPATH", "")])}
        with tempfile.TemporaryDirectory(prefix="costbench-ddp-") as tmp:
            (Path(tmp) / "cfg.json").write_text(json.dumps(cfg))
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


def ddp_markdown(rows: List[Dict[str, Any]]) -> List[str]:
    """The ``ddp`` section of ``cost.md`` (empty when the suite did not run)."""
    runs = [r for r in rows if r.get("suite") == "ddp" and r.get("status") == "ok"]
    if not runs:
        return []
    first = runs[0]
    out = ["## One process against two (torch.distributed, gloo)", "",
           f"One two-pass GCA-HNG training step at equal global batch (K={first['K']}, L={first['L']}, "
           f"H={first['H']}, D={first['D']}; a two-layer embedding network on fixed inputs): in one process, or in "
           "two started as `torchrun` starts them, each with half the batch (DDP, `GatheredObjective`). Wall: "
           "seconds per step of the group (its slowest process), median over rounds of each run's median; CPU: "
           "the processes' CPU seconds per step together. Bytes: what one process sends per step: the "
           "all-gathers of embeddings and labels and their backward all-reduce (`GatheredObjective`), and DDP's "
           "gradient all-reduce of the embedding network. The generator's graph work runs on every process (not "
           "sharded yet), so two processes can save only the embedding network's share.", "",
           "| B | variant | wall s / step | vs 1 process, 1 thread | CPU s / step | all-gather KiB | all-reduce KiB "
           "| DDP all-reduce KiB | peak mem per process (MiB) | rounds |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for batch in sorted({r["B"] for r in runs}):
        base = None
        for variant in DDP_VARIANTS:
            v = [r for r in runs if r["B"] == batch and r["variant"] == variant]
            if not v:
                continue
            wall = statistics.median(r["time_step_s"] for r in v)
            base = wall if base is None else base
            sent = v[0]["bytes_per_step"]
            out.append(f"| {batch} | {variant} | {wall:.3f} | {wall / base:.2f} | "
                       f"{statistics.median(r['cpu_step_s'] for r in v):.3f} | {sent['all_gather'] / 1024:.1f} | "
                       f"{sent['all_reduce'] / 1024:.1f} | {sent['ddp_all_reduce'] / 1024:.1f} | "
                       f"{max(r['peak_mem_rise_mb'] for r in v):.0f} | {len(v)} |")
    return out + [""]


if __name__ == "__main__":          # one process of the two-process variant
    config = json.loads(Path(sys.argv[1]).read_text())
    result = run_process(config)
    Path(sys.argv[1]).with_name(f"rank{sys.argv[2]}.json").write_text(json.dumps(result))
