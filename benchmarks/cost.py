#!/usr/bin/env python
"""What does GCA-HNG cost?  One command, every figure measured side by side in one run.

Usage::

    python benchmarks/cost.py                 # the full benchmark (about 17 minutes on 2 CPU cores)
    python benchmarks/cost.py --quick         # smoke run (CI): tiny sizes, one repeat
    python benchmarks/cost.py --out DIR --device cuda --max-memory-gb 16 --repeats 5

Every configuration runs in a fresh child process (``forkserver`` by default: a clean process that has
only imported the libraries; ``--start-method spawn`` for a fully fresh interpreter), so its peak memory
can be read in isolation: on CPU the rise of the child's peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the runs minus before them, model and inputs already
built), on CUDA ``torch.cuda.max_memory_allocated`` minus the memory allocated before the runs.

Suites (the ``suite`` field of every row in ``cost.json``):

``environment``      versions, threads, CPU model, allocator settings, load average (one row).
``matmul``           this machine's ``torch.matmul`` throughput (2048 x 2048 fp32), at the start and the end,
                     and the latency of one small scatter (a probe of how busy the machine is).
``generator_step``   time and memory of GCA-HNG's per-iteration work on a batch of embeddings, against B:
                     phase A (``metric_losses`` with ``z`` requiring grad, backward) + phase C
                     (``generator_losses``, backward) = the "generator step"; phase A alone is the
                     "metric-side step". Full graph and k-nearest-neighbour graphs, L = 1 and 2.
``fast_paths``       the same step with the library's optimisations switched off one at a time:
                     ``symmetric_edges`` (one edge state per unordered pair) and ``GCAEdgeConv(fast=...)``.
``propagation``      forward + backward of the propagation network alone: PyG message passing against the
                     plain dense PyTorch reference (``gca.testing.dense.dense_propagation``), same weights; and
                     with / without torch-scatter where it is installed.
``threads``          the generator step with the default thread settings, one thread, and
                     ``OMP_WAIT_POLICY=PASSIVE`` (fresh ``spawn`` processes), to show how much a busy machine
                     costs.
``backbone``         a whole training step with an image backbone: baseline (forward, N-pair, backward, AdamW
                     step) against GCA-HNG's three-phase step (:func:`gca.train.step.train_step`).
``profile``          ``torch.profiler`` of one generator step at the authors' CUB batch (B = 81 = 27 x 3,
                     L = 2, H = 4): the operators where the time goes.

Outputs in ``--out`` (default ``benchmarks/results``): ``cost.json`` (a list of rows), ``cost.md``
(Markdown tables) and ``cost_time_vs_batch.png``, ``cost_memory_vs_batch.png``, ``cost_pyg_vs_dense.png``.

Sizes grow until one of three limits: the estimated peak memory of the next size exceeds
``--max-memory-gb`` (estimated from the previous size of the same line, scaled by the number of edges);
the previous size's step took longer than ``--time-cap`` seconds; or the run's time budget
(``--budget-min``, shared out between the suites) would be exceeded. Every size not measured is recorded
as a ``skipped`` row with its reason.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:          # run as a script from anywhere, without installing the package
    sys.path.insert(0, str(REPO_ROOT))

GB = 1024 ** 3
MB = 1024 ** 2
FULL_SIZES = (64, 128, 256, 512, 1024, 2048)
QUICK_SIZES = (32, 64)
# Rough bytes of saved activations per edge row, per layer and per channel (fp32), used only to estimate
# the memory of the first size of a line before anything of that line has been measured; afterwards the
# estimate is the previous measurement scaled by the number of edges.
FIRST_GUESS_FLOATS_PER_EDGE_CHANNEL = 60
# Share of the time budget of each suite, in running order.
# The scaling suite runs last, so that it also gets whatever the others leave.
SUITE_SHARES = {"profile": 0.04, "backbone": 0.08, "fast_paths": 0.13, "propagation": 0.13, "threads": 0.07,
                "generator_step": 0.52, "matmul_end": 0.03}


# ============================================================================================ child side
def _now() -> float:
    return time.perf_counter()


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Memory:
    """Peak memory rise of this (child) process from the moment it is created."""

    def __init__(self, device):
        import torch
        self.device = device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.base = torch.cuda.memory_allocated(device)
        else:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # KiB on Linux

    def rise_mb(self) -> float:
        import torch
        if self.device.type == "cuda":
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / MB
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base) / MB

    def peak_mb(self) -> float:
        import torch
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / MB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def _adaptive_counts(first_s: float, warmup: int, repeats: int, budget_s: float):
    """Fewer warm-ups and repeats for slow configurations: keep one configuration near ``budget_s``.

    ``first_s`` is the duration of the first (warm-up) iteration. At least one repeat (two when
    ``repeats >= 2``) is always kept.
    """
    left = max(budget_s - first_s, 0.0)
    extra_warmup = max(warmup - 1, 0)
    if extra_warmup and first_s * (extra_warmup + repeats) > left:
        extra_warmup = 0
    fit = int(left // max(first_s, 1e-9)) - extra_warmup
    return extra_warmup, max(min(repeats, fit), min(2, repeats))


def _setup_child(cfg: Dict[str, Any]):
    import torch
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(cfg["seed"])
    device = torch.device(cfg["device"])
    return torch, device


def _batch(torch, device, batch: int, dim: int, per_class: int, seed: int):
    """Random embeddings ``[B, D]`` and labels laid out chunk-major like the authors' sampler (K chunks of
    C classes); the last chunk is shortened when ``K`` does not divide ``B``."""
    gen = torch.Generator().manual_seed(seed)
    classes = math.ceil(batch / per_class)
    labels = torch.arange(classes).repeat(per_class)[:batch]
    z = torch.randn(batch, dim, generator=gen)
    return z.to(device), labels.to(device), classes


def _gca_model(cfg: Dict[str, Any], classes: int):
    from gca.model import GCAHNG
    layer_kwargs = {} if cfg.get("fast", True) else {"fast": False}
    return GCAHNG(cfg["D"], max(cfg["num_classes"], classes), num_layers=cfg["L"], heads=cfg["H"],
                  edges=cfg["graph"], k=cfg.get("k"), symmetric_edges=cfg.get("symmetric", "auto"),
                  layer_kwargs=layer_kwargs)


def work_generator_step(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Time phase A and phase C of GCA-HNG on a batch of embeddings; count their FLOPs; peak memory.

    One iteration: ``z = z0.clone().requires_grad_()`` (a leaf standing for the backbone's output),
    ``metric_losses(z, y)["total"].backward()`` (phase A, timed as the metric-side step), then
    ``generator_losses(z, y)["total"].backward()`` (phase C). Gradients are dropped between iterations
    (``set_to_none``, as the optimisers' ``zero_grad``). The first warm-up iteration runs under
    :class:`torch.utils.flop_counter.FlopCounterMode` to count the FLOPs of each phase.
    """
    torch, device = _setup_child(cfg)
    from torch.utils.flop_counter import FlopCounterMode
    z0, y, classes = _batch(torch, device, cfg["B"], cfg["D"], cfg["K"], cfg["seed"])
    model = _gca_model(cfg, classes).to(device).train()
    gen = torch.Generator(device=device).manual_seed(cfg["seed"])
    mem = _Memory(device)

    def one(count: bool = False):
        model.zero_grad(set_to_none=True)
        z = z0.clone().requires_grad_(True)
        counter_a = FlopCounterMode(display=False) if count else contextlib.nullcontext()
        counter_c = FlopCounterMode(display=False) if count else contextlib.nullcontext()
        _sync(device)
        t0 = _now()
        with counter_a:
            parts = model.metric_losses(z, y, generator=gen)
            parts["total"].backward()
        _sync(device)
        t1 = _now()
        with counter_c:
            g = model.generator_losses(z, y, generator=gen)
            g["total"].backward()
        _sync(device)
        t2 = _now()
        flops = (counter_a.get_total_flops(), counter_c.get_total_flops()) if count else None
        return t1 - t0, t2 - t1, flops, int(g["num_synthetics"])

    first_a, first_c, flops, synthetics = one(count=True)
    extra_warmup, repeats = _adaptive_counts(first_a + first_c, cfg["warmup"], cfg["repeats"], cfg["config_budget_s"])
    for _ in range(extra_warmup):
        one()
    times = [one()[:2] for _ in range(repeats)]
    steps = [a + c for a, c in times]
    step = statistics.median(steps)
    return {
        "time_step_s": step,
        "time_metric_s": statistics.median(a for a, _ in times),
        "time_generator_s": statistics.median(c for _, c in times),
        "time_step_all_s": steps,
        "time_first_s": first_a + first_c,
        "warmup": 1 + extra_warmup, "repeats": repeats,
        "peak_mem_rise_mb": mem.rise_mb(), "peak_mem_mb": mem.peak_mb(),
        "flops_metric": flops[0], "flops_generator": flops[1], "flops_step": flops[0] + flops[1],
        "gflops_per_s": (flops[0] + flops[1]) / step / 1e9,
        "synthetic_rows": synthetics,
        "classes_in_batch": classes,
    }


def work_propagation(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Forward + backward of the propagation network alone on the full graph (eval mode: no dropout).

    ``variant="pyg"``: :class:`gca.nn.GraphPropagation` on the PyG batch graph, with the ``symmetric``
    and ``fast`` settings of ``cfg``; ``variant="dense"``: :func:`gca.testing.dense.dense_propagation` on
    ``[B, B, D]`` tensors. Both are built from the same seed, so they hold the same weights. The loss is
    the sum of the node states and of the edge states, so every output gets a gradient.
    """
    torch, device = _setup_child(cfg)
    if cfg.get("disable_torch_scatter"):
        import torch_geometric.typing
        torch_geometric.typing.WITH_TORCH_SCATTER = False
    from torch.utils.flop_counter import FlopCounterMode
    from gca.graph import build_batch_graph
    from gca.testing.dense import dense_propagation
    from gca.nn.propagation import GraphPropagation
    z0, y, _ = _batch(torch, device, cfg["B"], cfg["D"], cfg["K"], cfg["seed"])
    torch.manual_seed(cfg["seed"])
    layer_kwargs = {} if cfg.get("fast", True) else {"fast": False}
    prop = GraphPropagation(cfg["D"], cfg["L"], cfg["H"], **layer_kwargs).to(device).eval()
    mem = _Memory(device)

    def one(count: bool = False):
        prop.zero_grad(set_to_none=True)
        z = z0.clone().requires_grad_(True)
        counter = FlopCounterMode(display=False) if count else contextlib.nullcontext()
        _sync(device)
        t0 = _now()
        with counter:
            if cfg["variant"] == "dense":
                h, e = dense_propagation(prop, z, y)
            else:
                graph = build_batch_graph(z, y, "full")
                h, e = prop(graph.x, graph.edge_index, graph.edge_attr, graph.same_class,
                            symmetric=cfg.get("symmetric", False))
            (h.sum() + e.sum()).backward()
        _sync(device)
        return _now() - t0, (counter.get_total_flops() if count else None)

    first, flops = one(count=True)
    extra_warmup, repeats = _adaptive_counts(first, cfg["warmup"], cfg["repeats"], cfg["config_budget_s"])
    for _ in range(extra_warmup):
        one()
    times = [one()[0] for _ in range(repeats)]
    t = statistics.median(times)
    return {"time_s": t, "time_all_s": times, "warmup": 1 + extra_warmup, "repeats": repeats,
            "peak_mem_rise_mb": mem.rise_mb(), "peak_mem_mb": mem.peak_mb(), "flops": flops,
            "gflops_per_s": flops / t / 1e9}


def work_matmul(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Matrix-multiply throughput (``n x n`` fp32 ``torch.matmul``, median of repeats) and the latency of a
    small scatter-add (``[4096, 512] -> [64, 512]``), a probe of thread-scheduling overhead."""
    torch, device = _setup_child(cfg)
    n = cfg["n"]
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(cfg["repeats"]):
        _sync(device)
        t0 = _now()
        a @ b
        _sync(device)
        times.append(_now() - t0)
    t = statistics.median(times)
    src = torch.randn(4096, 512, device=device)
    index = torch.arange(64, device=device).repeat(64).view(-1, 1).expand_as(src)
    out = torch.zeros(64, 512, device=device)
    for _ in range(3):
        out.zero_().scatter_add_(0, index, src)
    scatter_times = []
    for _ in range(20):
        _sync(device)
        t0 = _now()
        out.zero_().scatter_add_(0, index, src)
        _sync(device)
        scatter_times.append(_now() - t0)
    return {"matmul_n": n, "time_s": t, "gflops_per_s": 2 * n ** 3 / t / 1e9, "repeats": cfg["repeats"],
            "scatter_probe_ms": statistics.median(scatter_times) * 1e3}


def work_backbone(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """A whole training step with an image backbone: baseline against GCA-HNG, interleaved in one process.

    Both use :func:`gca.train.step.train_step` with their own objective and optimisers: the baseline
    (:class:`gca.objective.MetricLossObjective`: forward, metric loss, backward, value clipping, AdamW step);
    GCA-HNG runs the three phases of METHOD 2.6. The same embedding model and images are used; the baseline runs first (its warm-up
    gives its peak memory), then GCA-HNG's warm-up (peak memory of the whole process, which includes the
    baseline's), then the timed repeats alternate baseline and GCA-HNG steps so that both see the same
    load on the machine.
    """
    torch, device = _setup_child(cfg)
    from gca.backbones import create_backbone, EmbeddingModel
    from gca.losses.npair import NPairLoss
    from gca.model import GCAHNG
    from gca.objective import MetricLossObjective
    from gca.train.step import Optimisers, train_step

    pretrained_note = "pretrained" if cfg["pretrained"] else "random init"
    try:
        backbone = create_backbone(cfg["backbone"], pretrained=cfg["pretrained"], **cfg.get("backbone_kwargs", {}))
    except Exception as exc:             # weights unavailable offline: the cost does not depend on them
        backbone = create_backbone(cfg["backbone"], pretrained=False, **cfg.get("backbone_kwargs", {}))
        pretrained_note = f"random init ({type(exc).__name__}: {exc})"[:200]
    model = EmbeddingModel(backbone, cfg["D"]).to(device).train()
    classes, per_class = cfg["classes"], cfg["K"]
    gen_images = torch.Generator().manual_seed(cfg["seed"])
    images = torch.randn(classes * per_class, *cfg["image_shape"], generator=gen_images).to(device)
    labels = torch.arange(classes).repeat(per_class).to(device)
    metric_loss = NPairLoss()
    gca = GCAHNG(cfg["D"], cfg["num_classes"], num_layers=cfg["L"], heads=cfg["H"], metric_loss=metric_loss).to(device)
    baseline = MetricLossObjective(metric_loss)

    def optimisers(objective):
        metric = torch.optim.AdamW([{"params": model.head_parameters()}, {"params": model.backbone_parameters()}],
                                   lr=1e-4, weight_decay=1e-4)
        if not objective.trains_generator:
            return Optimisers(metric)
        return Optimisers(metric, torch.optim.AdamW(objective.generator_parameters(), lr=1e-4, weight_decay=1e-4),
                          torch.optim.AdamW(objective.classifier_parameters(), lr=1e-3))

    runs = {"baseline": (baseline, optimisers(baseline)), "gca": (gca, optimisers(gca))}

    def timed(which):
        objective, opts = runs[which]
        _sync(device)
        t0 = _now()
        train_step(model, objective, images, labels, opts, clip_value=10.0)
        _sync(device)
        return _now() - t0

    base_trainer, gca_trainer = "baseline", "gca"

    mem = _Memory(device)
    first_base = timed(base_trainer)
    for _ in range(max(cfg["warmup"] - 1, 0)):
        timed(base_trainer)
    base_mem = mem.rise_mb()
    first_gca = timed(gca_trainer)
    for _ in range(max(cfg["warmup"] - 1, 0)):
        timed(gca_trainer)
    gca_mem = mem.rise_mb()
    per_pair = first_base + first_gca
    repeats = max(min(cfg["repeats"], int(cfg["config_budget_s"] // max(per_pair, 1e-9))), min(2, cfg["repeats"]))
    base_times, gca_times = [], []
    for _ in range(repeats):
        base_times.append(timed(base_trainer))
        gca_times.append(timed(gca_trainer))
    tb, tg = statistics.median(base_times), statistics.median(gca_times)
    ratios = [g / b for g, b in zip(gca_times, base_times)]
    return {"time_baseline_s": tb, "time_gca_s": tg, "ratio": tg / tb, "ratio_of_pairs_median": statistics.median(ratios),
            "time_baseline_all_s": base_times, "time_gca_all_s": gca_times, "warmup": cfg["warmup"],
            "repeats": repeats, "peak_mem_rise_baseline_mb": base_mem, "peak_mem_rise_gca_mb": gca_mem,
            "weights": pretrained_note, "backbone_params": sum(p.numel() for p in model.parameters()),
            "gca_params": sum(p.numel() for p in gca.parameters())}


def work_profile(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Time, FLOPs and memory of the generator step at one size, then ``torch.profiler`` on one more
    step: the operators by self time, overall and with their input shapes."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    base = work_generator_step(cfg)
    _, device = _setup_child(cfg)
    z0, y, classes = _batch(torch, device, cfg["B"], cfg["D"], cfg["K"], cfg["seed"])
    model = _gca_model(cfg, classes).to(device).train()
    gen = torch.Generator(device=device).manual_seed(cfg["seed"])

    def one():
        model.zero_grad(set_to_none=True)
        z = z0.clone().requires_grad_(True)
        model.metric_losses(z, y, generator=gen)["total"].backward()
        model.generator_losses(z, y, generator=gen)["total"].backward()
        _sync(device)

    one()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        one()
    time_attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"

    def table(events, with_shapes: bool):
        events = sorted(events, key=lambda e: getattr(e, time_attr), reverse=True)
        total = sum(getattr(e, time_attr) for e in events) or 1.0
        rows = []
        for e in events[:cfg["top"]]:
            row = {"op": e.key, "self_ms": getattr(e, time_attr) / 1e3, "share": getattr(e, time_attr) / total,
                   "calls": e.count}
            if with_shapes:
                row["shapes"] = str(e.input_shapes)[:120]
            rows.append(row)
        return rows, total / 1e3

    by_op, total_ms = table(prof.key_averages(), False)
    by_shape, _ = table(prof.key_averages(group_by_input_shape=True), True)
    base.update({"profile_total_self_ms": total_ms, "top_ops": by_op, "top_ops_by_shape": by_shape})
    return base


WORKERS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    "generator_step": work_generator_step, "propagation": work_propagation, "matmul": work_matmul,
    "backbone": work_backbone, "profile": work_profile,
}


def _child_entry(conn, worker: str, cfg: Dict[str, Any]) -> None:
    """Run one worker in this child process and send its result (or the error) back."""
    import warnings
    warnings.filterwarnings("ignore")
    try:
        result = WORKERS[worker](cfg)
        result["status"] = "ok"
    except Exception as exc:           # reported as a failed row, never hidden
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500],
                  "traceback": traceback.format_exc()[-2000:]}
    import torch
    result["threads"] = torch.get_num_threads()
    conn.send(result)
    conn.close()


# ============================================================================================ parent side
class Runner:
    """Starts one child process per configuration and keeps the run's clock."""

    def __init__(self, start_method: str, budget_s: float, child_timeout_s: float):
        if start_method == "forkserver" and "forkserver" not in mp.get_all_start_methods():
            start_method = "spawn"
        self.start_method = start_method
        self.ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            self.ctx.set_forkserver_preload(["torch", "torch_geometric", "gca.model", "gca.testing.dense",
                                             "gca.backbones", "gca.train.step"])
        self.spawn_ctx = mp.get_context("spawn")
        self.t_start = time.monotonic()
        self.deadline = self.t_start + budget_s
        self.child_timeout_s = child_timeout_s

    def elapsed(self) -> float:
        return time.monotonic() - self.t_start

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, worker: str, cfg: Dict[str, Any], env: Optional[Dict[str, str]] = None,
            fresh: bool = False) -> Dict[str, Any]:
        """Run ``worker(cfg)`` in a child and return its result with ``wall_s`` and the load average.

        ``env``/``fresh``: a fresh ``spawn`` interpreter whose environment has ``env`` applied (a value of
        ``None`` removes the variable), for settings read when the libraries load, such as
        ``OMP_WAIT_POLICY``.
        """
        ctx = self.spawn_ctx if (env or fresh) else self.ctx
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child_entry, args=(send, worker, cfg), daemon=True)
        load_start = os.getloadavg()[0]
        saved = {key: os.environ.get(key) for key in (env or {})}
        t0 = time.monotonic()
        try:
            for key, value in (env or {}).items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            proc.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        send.close()
        result: Optional[Dict[str, Any]] = None
        if recv.poll(self.child_timeout_s):
            try:
                result = recv.recv()
            except EOFError:
                result = None
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join()
        if result is None:
            code = proc.exitcode
            why = ("killed (signal 9: out of memory?)" if code == -9 else
                   f"timed out after {self.child_timeout_s:.0f} s" if code in (None, -15) else f"exit code {code}")
            result = {"status": "failed", "reason": f"child process {why}"}
        result["wall_s"] = time.monotonic() - t0
        result["load_avg_1min_start"] = load_start
        result["load_avg_1min_end"] = os.getloadavg()[0]
        return result


def environment(args, device: str) -> Dict[str, Any]:
    """Versions, threads, CPU and allocator settings recorded with the results."""
    import torch
    import torch_geometric
    import torch_geometric.typing as pyg_typing
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    env = {key: os.environ.get(key, "unset") for key in
           ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
            "MKL_NUM_THREADS")}
    row = {
        "suite": "environment", "status": "ok",
        "torch": torch.__version__, "torch_geometric": torch_geometric.__version__,
        "torch_scatter_installed": bool(pyg_typing.WITH_TORCH_SCATTER),
        "threads": args.threads or torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu_model": cpu,
        "device": device, "python": platform.python_version(), "platform": platform.platform(),
        "allocator": {k: env[k] for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")},
        "thread_env": {k: env[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")},
        "load_avg_1min_start": os.getloadavg()[0], "start_method": args.start_method,
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "quick": args.quick, "seed": args.seed,
        "max_memory_gb": args.max_memory_gb, "time_cap_s": args.time_cap, "budget_min": args.budget_min,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        row["gpu"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(Exception):
        row["mem_total_gb"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return row


def num_edges(batch: int, graph: str, k: Optional[int]) -> int:
    """Directed edges of the batch graph, self-loops included (as :func:`gca.build_batch_graph`)."""
    return batch * batch if graph == "full" else batch * (k + 1)


def first_memory_guess_gb(batch: int, graph: str, k: Optional[int], layers: int, dim: int) -> float:
    """A rough estimate of the peak memory of a line's first size (see ``FIRST_GUESS_...``)."""
    return num_edges(batch, graph, k) * max(layers, 1) * dim * 4 * FIRST_GUESS_FLOATS_PER_EDGE_CHANNEL / GB


class Suite:
    """The rows and the time budget of one suite."""

    def __init__(self, name: str, runner: Runner, rows: List[Dict[str, Any]]):
        self.name, self.runner, self.rows = name, runner, rows
        shares = list(SUITE_SHARES)
        remaining = sum(SUITE_SHARES[s] for s in shares[shares.index(name):])
        self.deadline = time.monotonic() + max(runner.left(), 0.0) * SUITE_SHARES[name] / remaining

    def left(self) -> float:
        return min(self.deadline, self.runner.deadline) - time.monotonic()

    def add(self, settings: Dict[str, Any], result: Dict[str, Any]) -> Dict[str, Any]:
        row = {"suite": self.name, **settings, **result}
        self.rows.append(row)
        return row

    def skip(self, settings: Dict[str, Any], reason: str) -> Dict[str, Any]:
        print(f"  skip {self._label(settings)}: {reason}", flush=True)
        return self.add(settings, {"status": "skipped", "reason": reason})

    def run(self, worker: str, settings: Dict[str, Any], child_cfg: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        print(f"  run  {self._label(settings)} ...", end="", flush=True)
        result = self.runner.run(worker, child_cfg, **kwargs)
        row = self.add(settings, result)
        print(" " + _summary(row), flush=True)
        return row

    @staticmethod
    def _label(settings: Dict[str, Any]) -> str:
        keys = ("variant", "graph", "k", "B", "L", "symmetric", "fast", "threads_setting", "backbone")
        return " ".join(f"{k}={settings[k]}" for k in keys if settings.get(k) is not None)


def _summary(row: Dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return f"{row.get('status')}: {row.get('reason')}"
    if "matmul_n" in row:
        return f"{row['gflops_per_s']:.1f} GFLOP/s, scatter probe {row['scatter_probe_ms']:.2f} ms"
    for key in ("time_step_s", "time_s", "time_gca_s"):
        if key in row:
            extra = f", ratio {row['ratio']:.2f}" if "ratio" in row else ""
            mem = row.get("peak_mem_rise_mb", row.get("peak_mem_rise_gca_mb", float("nan")))
            return f"{row[key]:.3f} s{extra}, peak +{mem:.0f} MB ({row['wall_s']:.0f} s wall)"
    return "ok"


# ---------------------------------------------------------------------------------------- suites
def child_common(args, device: str) -> Dict[str, Any]:
    return {"device": device, "threads": args.threads, "seed": args.seed, "warmup": args.warmup,
            "repeats": args.repeats, "config_budget_s": args.config_budget}


def suite_generator_step(args, runner: Runner, rows, device: str) -> None:
    """Generator-step time and memory against B, one line per (graph kind, L), sizes interleaved so that
    every line gets as far as the budget allows."""
    suite = Suite("generator_step", runner, rows)
    lines = [(graph, k, layers) for graph, k in args.graphs for layers in args.layers]
    last: Dict[Any, Dict[str, Any]] = {}            # line -> last measured row
    stopped: Dict[Any, str] = {}                    # line -> reason the line stopped growing
    for batch in args.sizes:
        for line in lines:
            graph, k, layers = line
            settings = {"graph": graph, "k": k, "B": batch, "L": layers, "H": args.heads, "D": args.dim,
                        "K": args.per_class, "num_classes": args.num_classes,
                        "symmetric": graph == "full", "fast": True, "edges": num_edges(batch, graph, k)}
            if graph == "knn" and not 1 <= k <= batch - 1:
                suite.skip(settings, f"k={k} needs B > k")
                continue
            if line in stopped:
                suite.skip(settings, stopped[line])
                continue
            prev = last.get(line)
            growth = num_edges(batch, graph, k) / num_edges(prev["B"], graph, k) if prev else None
            est_gb = (prev["peak_mem_rise_mb"] * growth / 1024 if prev
                      else first_memory_guess_gb(batch, graph, k, layers, args.dim))
            settings["est_mem_gb"] = est_gb
            if est_gb > args.max_memory_gb:
                stopped[line] = f"estimated peak memory {est_gb:.1f} GB > budget {args.max_memory_gb:g} GB"
                suite.skip(settings, stopped[line])
                continue
            if prev and prev["time_step_s"] > args.time_cap:
                stopped[line] = f"B={prev['B']} took {prev['time_step_s']:.1f} s > time cap {args.time_cap:g} s"
                suite.skip(settings, stopped[line])
                continue
            est_s = prev["time_step_s"] * growth * 3 if prev else 0.0    # >= 3 iterations
            if prev and est_s > suite.left():
                suite.skip(settings, f"estimated {est_s:.0f} s > {max(suite.left(), 0):.0f} s left of the time budget")
                continue
            if suite.left() <= 0:
                suite.skip(settings, "time budget spent")
                continue
            row = suite.run("generator_step", settings, {**child_common(args, device), **settings})
            if row["status"] == "ok":
                last[line] = row
            else:
                stopped[line] = f"B={batch} failed: {row.get('reason')}"


def _group_fits(suite: "Suite", previous: Dict[Any, Dict[str, Any]], batch: int) -> Optional[str]:
    """Why a group of variants at size ``batch`` should be skipped as a whole (``None``: run it).

    The group's wall time is predicted from the previous size's rows (``previous``: variant -> row),
    scaled by the number of full-graph edges; running half of a comparison would be of no use.
    """
    if suite.left() <= 0:
        return "time budget spent"
    if not previous:
        return None
    if any(r.get("status") != "ok" for r in previous.values()):
        return "a variant of the previous size failed or was skipped"
    predicted = sum(r["wall_s"] * (batch / r["B"]) ** 2 for r in previous.values())
    if predicted > suite.left():
        return f"estimated {predicted:.0f} s for the group > {suite.left():.0f} s left of the time budget"
    return None


def suite_fast_paths(args, runner: Runner, rows, device: str) -> None:
    """The generator step with each optimisation off: (symmetric, fast) in all four combinations."""
    suite = Suite("fast_paths", runner, rows)
    variants = [(True, True), (False, True), (True, False), (False, False)]
    previous: Dict[Any, Dict[str, Any]] = {}
    for batch in args.fast_sizes:
        why = _group_fits(suite, previous, batch)
        if not why and previous and max(r["time_step_s"] for r in previous.values()) > args.time_cap:
            why = f"a variant took longer than the time cap ({args.time_cap:g} s) at the previous size"
        current: Dict[Any, Dict[str, Any]] = {}
        for symmetric, fast in variants:
            settings = {"graph": "full", "k": None, "B": batch, "L": args.fast_layers, "H": args.heads, "D": args.dim,
                        "K": args.per_class, "num_classes": args.num_classes, "symmetric": symmetric, "fast": fast,
                        "edges": num_edges(batch, "full", None)}
            if why:
                suite.skip(settings, why)
                continue
            cfg = {**child_common(args, device), **settings, "repeats": min(args.repeats, 3)}
            current[(symmetric, fast)] = suite.run("generator_step", settings, cfg)
        if why:
            break
        previous = current


def suite_propagation(args, runner: Runner, rows, device: str) -> None:
    """PyG message passing against the dense reference: forward + backward of the propagation only."""
    import torch_geometric.typing as pyg_typing
    suite = Suite("propagation", runner, rows)
    variants = [("pyg", True, True), ("pyg", False, False), ("dense", False, False)]
    scatter_modes = [None]
    if pyg_typing.WITH_TORCH_SCATTER:
        scatter_modes = [True, False]
    else:
        suite.add({"variant": "pyg", "torch_scatter": True},
                  {"status": "skipped", "reason": "torch-scatter is not installed "
                   "(torch_geometric.typing.WITH_TORCH_SCATTER is False): PyG used torch's native scatter"})
    previous: Dict[Any, Dict[str, Any]] = {}
    for batch in args.dense_sizes:
        why = _group_fits(suite, previous, batch)
        if not why and previous and max(r["time_s"] for r in previous.values()) > args.time_cap:
            why = f"a variant took longer than the time cap ({args.time_cap:g} s) at the previous size"
        current: Dict[Any, Dict[str, Any]] = {}
        for variant, symmetric, fast in variants:
            for use_scatter in (scatter_modes if variant == "pyg" else [None]):
                settings = {"variant": variant, "graph": "full", "B": batch, "L": args.dense_layers, "H": args.heads,
                            "D": args.dim, "K": args.per_class, "symmetric": symmetric, "fast": fast,
                            "torch_scatter": bool(pyg_typing.WITH_TORCH_SCATTER) if use_scatter is None else use_scatter,
                            "edges": num_edges(batch, "full", None)}
                if why:
                    suite.skip(settings, why)
                    continue
                cfg = {**child_common(args, device), **settings, "disable_torch_scatter": use_scatter is False,
                       "repeats": min(args.repeats, 3)}
                current[(variant, symmetric, fast, use_scatter)] = suite.run("propagation", settings, cfg)
        if why:
            break
        previous = current


def suite_threads(args, runner: Runner, rows, device: str) -> None:
    """The generator step in fresh interpreters: default threads with ``OMP_WAIT_POLICY=PASSIVE``, one
    thread, and default threads with OpenMP's default wait policy (last: it can be very slow on a busy
    machine, so it gets half the usual time per configuration)."""
    suite = Suite("threads", runner, rows)
    if args.quick:
        suite.add({"threads_setting": "all"}, {"status": "skipped", "reason": "not run with --quick"})
        return
    if device != "cpu":
        suite.add({"threads_setting": "all"}, {"status": "skipped", "reason": "CPU only"})
        return
    variants = [("OMP_WAIT_POLICY=PASSIVE", None, {"OMP_WAIT_POLICY": "PASSIVE"}),
                ("1 thread", 1, {"OMP_WAIT_POLICY": None}),
                ("OMP_WAIT_POLICY unset (libgomp default)", None, {"OMP_WAIT_POLICY": None})]
    for batch in args.thread_sizes:
        for label, threads, env in variants:
            settings = {"threads_setting": label, "graph": "full", "k": None, "B": batch, "L": args.fast_layers,
                        "H": args.heads, "D": args.dim, "K": args.per_class, "num_classes": args.num_classes,
                        "symmetric": True, "fast": True}
            if suite.left() <= 0:
                suite.skip(settings, "time budget spent")
                continue
            cfg = {**child_common(args, device), **settings, "threads": threads or args.threads,
                   "repeats": min(args.repeats, 3), "config_budget_s": args.config_budget / 2}
            suite.run("generator_step", settings, cfg, env=env, fresh=True)


def suite_backbone(args, runner: Runner, rows, device: str) -> None:
    """GCA-HNG training step over the baseline step with the same image backbone."""
    suite = Suite("backbone", runner, rows)
    if args.quick:
        plans = [("omniglot_cnn", (1, 28, 28), False, {})]
    else:
        plans = [("efficientnet_lite0", (3, 224, 224), True, {})]
        if device.startswith("cuda"):
            plans.append(("resnet50", (3, 224, 224), True, {}))
        else:
            suite.add({"backbone": "resnet50", "device": "cuda"},
                      {"status": "skipped", "reason": "not measured: no GPU in this run"})
    for name, shape, pretrained, kwargs in plans:
        settings = {"backbone": name, "image_shape": list(shape), "batch": args.backbone_classes * 2,
                    "classes": args.backbone_classes, "K": 2, "D": args.backbone_dim, "L": args.backbone_layers,
                    "H": args.heads, "num_classes": args.num_classes, "graph": "full", "symmetric": True, "fast": True,
                    "device": device}
        if suite.left() <= 0:
            suite.skip(settings, "time budget spent")
            continue
        cfg = {**child_common(args, device), **settings, "pretrained": pretrained, "backbone_kwargs": kwargs,
               "image_shape": shape}
        suite.run("backbone", settings, cfg)


def suite_profile(args, runner: Runner, rows, device: str) -> None:
    """Where the time of one generator step goes (torch.profiler), at the authors' CUB batch."""
    suite = Suite("profile", runner, rows)
    batch, per_class = args.profile_batch
    settings = {"graph": "full", "k": None, "B": batch, "K": per_class, "L": args.profile_layers, "H": args.heads,
                "D": args.dim, "num_classes": args.num_classes, "symmetric": True, "fast": True,
                "edges": num_edges(batch, "full", None)}
    if suite.left() <= 0:
        suite.skip(settings, "time budget spent")
        return
    cfg = {**child_common(args, device), **settings, "top": 15, "repeats": min(args.repeats, 3)}
    suite.run("profile", settings, cfg)


def suite_matmul(args, runner: Runner, rows, device: str, when: str) -> None:
    """This machine's matmul throughput, measured in a child like every other configuration."""
    cfg = {**child_common(args, device), "n": args.matmul_n, "repeats": max(args.repeats, 3)}
    print(f"  run  matmul ({when}) ...", end="", flush=True)
    row = {"suite": "matmul", "when": when, "device": device, **runner.run("matmul", cfg)}
    rows.append(row)
    print(" " + _summary(row), flush=True)


# ============================================================================================ reporting
def _fmt(value, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _matmul_by_time(rows) -> List[float]:
    """Matmul throughputs of the run in the order measured (start, end)."""
    return [r["gflops_per_s"] for r in rows if r["suite"] == "matmul" and r.get("status") == "ok"]


def _percent_of_matmul(rows, gflops: float) -> str:
    """Achieved throughput as a share of each matmul measurement of the run, e.g. ``"76% / 38%"``."""
    values = _matmul_by_time(rows)
    return " / ".join(f"{100 * gflops / v:.0f}%" for v in values) if values else "–"


def _slope(points) -> Optional[float]:
    """Exponent of a power law through the first and last ``(B, value)`` points (log-log slope)."""
    points = sorted(points)
    if len(points) < 2 or points[0][0] == points[-1][0]:
        return None
    (b0, v0), (b1, v1) = points[0], points[-1]
    return math.log(v1 / v0) / math.log(b1 / b0)


def _ok(rows, suite):
    return [r for r in rows if r["suite"] == suite and r.get("status") == "ok"]


def _find(rows, suite: str, **match) -> Optional[Dict[str, Any]]:
    for r in _ok(rows, suite):
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def summary_lines(rows: List[Dict[str, Any]]) -> List[str]:
    """The headline figures of the run, each computed from the rows (nothing when a row is missing)."""
    lines: List[str] = []
    steps = _ok(rows, "generator_step")
    for layers in sorted({r["L"] for r in steps}):
        parts = []
        for graph, k in (("full", None), ("knn", 16), ("knn", 32)):
            pts = sorted((r["B"], r["time_step_s"], r["peak_mem_rise_mb"] / 1024) for r in steps
                         if r["graph"] == graph and r.get("k") == k and r["L"] == layers)
            if pts:
                name = "full" if graph == "full" else f"knn k={k}"
                slope_t = _slope([(b, t) for b, t, _ in pts])
                slope_m = _slope([(b, m) for b, _, m in pts])
                growth = (f" (time ∝ B^{slope_t:.1f}, memory ∝ B^{slope_m:.1f})"
                          if slope_t is not None and slope_m is not None else "")
                parts.append(f"{name}: " + ", ".join(f"B={b} {t:.2f} s / {m:.2f} GB" for b, t, m in pts) + growth)
        if parts:
            lines.append(f"- Generator step, L={layers} (time / peak memory rise): " + "; ".join(parts) + ".")
    for batch in sorted({r["B"] for r in _ok(rows, "fast_paths")}):
        base = _find(rows, "fast_paths", B=batch, symmetric=True, fast=True)
        nosym = _find(rows, "fast_paths", B=batch, symmetric=False, fast=True)
        nofast = _find(rows, "fast_paths", B=batch, symmetric=True, fast=False)
        plain = _find(rows, "fast_paths", B=batch, symmetric=False, fast=False)
        if base and nosym and nofast and plain:
            lines.append(
                f"- Fast paths at B={batch}, L={base['L']} (full graph): symmetric pairs "
                f"{nosym['time_step_s'] / base['time_step_s']:.2f}× faster "
                f"({nosym['time_step_s']:.2f} → {base['time_step_s']:.2f} s, memory "
                f"{nosym['peak_mem_rise_mb'] / 1024:.2f} → {base['peak_mem_rise_mb'] / 1024:.2f} GB, "
                f"{nosym['flops_step'] / base['flops_step']:.2f}× fewer FLOPs); fast edge queries "
                f"{nofast['time_step_s'] / base['time_step_s']:.2f}×; both against neither "
                f"{plain['time_step_s'] / base['time_step_s']:.2f}×.")
    for batch in sorted({r["B"] for r in _ok(rows, "propagation")}):
        dense = _find(rows, "propagation", B=batch, variant="dense")
        plain = _find(rows, "propagation", B=batch, variant="pyg", symmetric=False)
        default = _find(rows, "propagation", B=batch, variant="pyg", symmetric=True)
        if dense and plain and default:
            lines.append(f"- Propagation fwd+bwd at B={batch}, L={dense['L']}: dense {dense['time_s']:.3f} s, PyG plain "
                         f"{plain['time_s']:.3f} s (dense/PyG {dense['time_s'] / plain['time_s']:.2f}×), PyG default "
                         f"{default['time_s']:.3f} s (dense/PyG {dense['time_s'] / default['time_s']:.2f}×).")
    for r in _ok(rows, "backbone"):
        lines.append(f"- Whole training step, {r['backbone']} ({r['device']}, batch {r['batch']}, "
                     f"{'x'.join(map(str, r['image_shape']))}): baseline {r['time_baseline_s']:.2f} s, GCA-HNG "
                     f"{r['time_gca_s']:.2f} s, ratio {r['ratio']:.2f}× (peak memory "
                     f"{r['peak_mem_rise_baseline_mb'] / 1024:.2f} → {r['peak_mem_rise_gca_mb'] / 1024:.2f} GB).")
    for r in _ok(rows, "profile"):
        share = {op["op"]: op["share"] for op in r["top_ops"]}
        mm = share.get("aten::mm", 0) + share.get("aten::addmm", 0) + share.get("aten::bmm", 0)
        matmul = _matmul_by_time(rows)
        lines.append(f"- B={r['B']} ({r['B'] // r['K']}x{r['K']}), L={r['L']}, H={r['H']}: generator step "
                     f"{r['time_step_s']:.2f} s, {r['flops_step'] / 1e9:.0f} GFLOP, {r['gflops_per_s']:.1f} GFLOP/s"
                     + (f" = {_percent_of_matmul(rows, r['gflops_per_s'])} of the matmul throughput measured at the "
                        "start / end of the run (" + " / ".join(f"{v:.1f}" for v in matmul) + " GFLOP/s)"
                        if matmul else "")
                     + f", peak memory rise {r['peak_mem_rise_mb'] / 1024:.2f} GB; matrix products take "
                       f"{100 * mm:.0f}% of the operator time.")
    threads = _ok(rows, "threads")
    if threads:
        lines.append("- Thread settings (B=" + str(threads[0]["B"]) + f", L={threads[0]['L']}): " + "; ".join(
            f"{r['threads_setting']} ({r['threads']} thread{'s' if r['threads'] != 1 else ''}) "
            f"{r['time_step_s']:.2f} s" for r in threads) + ".")
    return lines


def write_markdown(rows: List[Dict[str, Any]], path: Path) -> None:
    """All tables of the run in one Markdown file."""
    env = next(r for r in rows if r["suite"] == "environment")
    out: List[str] = ["# GCA-HNG cost benchmark", "",
                      f"Command: `{env['command']}`", "", "## Summary", ""]
    out += summary_lines(rows) or ["(no measured rows)"]
    out += ["", "## Environment", "", "| setting | value |", "|---|---|"]
    for key in ("device", "gpu", "cpu_model", "cpu_count", "mem_total_gb", "threads", "torch", "torch_geometric",
                "torch_scatter_installed", "allocator", "thread_env", "start_method", "load_avg_1min_start",
                "load_avg_1min_end", "elapsed_min", "seed", "max_memory_gb", "time_cap_s", "budget_min"):
        if key in env:
            value = env[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            elif isinstance(value, float):
                value = f"{value:.2f}"
            out.append(f"| {key} | {value} |")
    out += ["", "## Matrix-multiply throughput of this machine (same run)", "",
            "| when | n | GFLOP/s | small scatter probe (ms) | load avg |", "|---|---|---|---|---|"]
    for r in rows:
        if r["suite"] == "matmul":
            out.append(f"| {r.get('when')} | {r.get('matmul_n', '–')} | {_fmt(r.get('gflops_per_s'), 1)} | "
                       f"{_fmt(r.get('scatter_probe_ms'), 2)} | {_fmt(r.get('load_avg_1min_start'), 1)} |")
    out += ["", "## Generator step against batch size", "",
            "Generator step = phase A (`metric_losses`, backward) + phase C (`generator_losses`, backward) on a "
            "batch of embeddings: graph build, propagation, synthesis, losses and backward. Metric side = phase A "
            "alone. Times are medians; memory is the peak RSS rise of a fresh process (GPU: max allocated). "
            "% matmul = achieved GFLOP/s over the matmul GFLOP/s measured at the start / end of the run (the two "
            "differ when the load on the machine changed). reps = warm-up + timed iterations; load = the 1-minute load "
            "average when the configuration started (this process included). FLOPs are what "
            "`torch.utils.flop_counter.FlopCounterMode` counts: matrix products only.", "",
            "| graph | L | B | edges | step (s) | metric side A (s) | generator C (s) | peak mem (GB) | GFLOP | "
            "GFLOP/s | % matmul | reps | load | status |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["suite"] == "generator_step"),
                    key=lambda r: (r["graph"], r.get("k") or 0, r["L"], r["B"])):
        graph = r["graph"] if r["graph"] == "full" else f"knn k={r['k']}"
        if r.get("status") == "ok":
            out.append(f"| {graph} | {r['L']} | {r['B']} | {r['edges']} | {_fmt(r['time_step_s'], 3)} | "
                       f"{_fmt(r['time_metric_s'], 3)} | {_fmt(r['time_generator_s'], 3)} | "
                       f"{_fmt(r['peak_mem_rise_mb'] / 1024, 2)} | {_fmt(r['flops_step'] / 1e9, 1)} | "
                       f"{_fmt(r['gflops_per_s'], 1)} | {_percent_of_matmul(rows, r['gflops_per_s'])} | "
                       f"{r['warmup']}+{r['repeats']} | {_fmt(r.get('load_avg_1min_start'), 1)} | ok |")
        else:
            out.append(f"| {graph} | {r['L']} | {r['B']} | {r['edges']} | | | | | | | | | | {r['status']}: "
                       f"{r.get('reason', '')} |")
    fast = [r for r in rows if r["suite"] == "fast_paths"]
    if fast:
        out += ["", "## Fast paths: before / after", "",
                "Full graph, generator step. `symmetric`: one edge state per unordered pair (half the edge work); "
                "`fast`: GCAEdgeConv projects the N keys instead of the E edge queries. Speed-up = time of the "
                "plain path (symmetric=False, fast=False) / time of the row.", "",
                "| B | L | symmetric | fast | step (s) | metric side A (s) | generator C (s) | peak mem (GB) | GFLOP | "
                "speed-up vs plain | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in fast:
            plain = next((p for p in fast if p["B"] == r["B"] and not p["symmetric"] and not p["fast"]
                          and p.get("status") == "ok"), None)
            if r.get("status") == "ok":
                ratio = plain["time_step_s"] / r["time_step_s"] if plain else None
                out.append(f"| {r['B']} | {r['L']} | {r['symmetric']} | {r['fast']} | {_fmt(r['time_step_s'], 3)} | "
                           f"{_fmt(r['time_metric_s'], 3)} | {_fmt(r['time_generator_s'], 3)} | "
                           f"{_fmt(r['peak_mem_rise_mb'] / 1024, 2)} | {_fmt(r['flops_step'] / 1e9, 1)} | "
                           f"{_fmt(ratio, 2, '×')} | ok |")
            else:
                out.append(f"| {r['B']} | {r['L']} | {r['symmetric']} | {r['fast']} | | | | | | | "
                           f"{r['status']}: {r.get('reason', '')} |")
    prop = [r for r in rows if r["suite"] == "propagation"]
    if prop:
        out += ["", "## Propagation: PyG message passing vs the dense PyTorch reference", "",
                "Forward + backward of the propagation network alone on the full graph (eval mode), same weights. "
                "`pyg sym+fast` is the library's default path; `pyg plain` (no symmetric pairs, plain edge queries) "
                "does the same arithmetic as `dense` (`gca.testing.dense.dense_propagation`, `[B, B, D]` tensors). "
                "Ratio = dense time / row time (> 1: faster than dense).", "",
                "| variant | torch-scatter | B | L | time (s) | peak mem (GB) | GFLOP | GFLOP/s | dense / this | status |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in prop:
            if "B" not in r:
                out.append(f"| {r['variant']} | {r.get('torch_scatter')} | | | | | | | | {r['status']}: "
                           f"{r.get('reason', '')} |")
                continue
            name = r["variant"] if r["variant"] == "dense" else ("pyg sym+fast" if r["symmetric"] else "pyg plain")
            dense = next((d for d in prop if d.get("variant") == "dense" and d.get("B") == r["B"]
                          and d.get("status") == "ok"), None)
            if r.get("status") == "ok":
                ratio = dense["time_s"] / r["time_s"] if dense else None
                out.append(f"| {name} | {r['torch_scatter']} | {r['B']} | {r['L']} | {_fmt(r['time_s'], 3)} | "
                           f"{_fmt(r['peak_mem_rise_mb'] / 1024, 2)} | {_fmt(r['flops'] / 1e9, 1)} | "
                           f"{_fmt(r['gflops_per_s'], 1)} | {_fmt(ratio, 2, '×')} | ok |")
            else:
                out.append(f"| {name} | {r.get('torch_scatter')} | {r['B']} | {r['L']} | | | | | | {r['status']}: "
                           f"{r.get('reason', '')} |")
    threads = [r for r in rows if r["suite"] == "threads"]
    if threads:
        out += ["", "## Thread settings (generator step, full graph, fresh interpreters)", "",
                "| setting | threads | B | L | step (s) | peak mem (GB) | status |", "|---|---|---|---|---|---|---|"]
        for r in threads:
            if r.get("status") == "ok":
                out.append(f"| {r['threads_setting']} | {r['threads']} | {r['B']} | {r['L']} | "
                           f"{_fmt(r['time_step_s'], 3)} | {_fmt(r['peak_mem_rise_mb'] / 1024, 2)} | ok |")
            else:
                out.append(f"| {r['threads_setting']} | | {r.get('B', '')} | {r.get('L', '')} | | | {r['status']}: "
                           f"{r.get('reason', '')} |")
    bb = [r for r in rows if r["suite"] == "backbone"]
    if bb:
        out += ["", "## Whole training step with an image backbone: GCA-HNG over the baseline", "",
                "Baseline = forward + N-pair + backward + value clipping + AdamW step; GCA-HNG = the three-phase "
                "step of `gca.train.step.train_step` (full graph, symmetric, fast). Same model, images and "
                "process; timed steps alternate. Memory: peak RSS rise after the baseline's warm-up, then after "
                "GCA-HNG's.", "",
                "| backbone | device | images | batch | D | L | baseline (s) | GCA-HNG (s) | ratio | "
                "peak mem baseline (GB) | peak mem GCA-HNG (GB) | weights | status |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in bb:
            if r.get("status") == "ok":
                out.append(f"| {r['backbone']} | {r['device']} | {'x'.join(map(str, r['image_shape']))} | {r['batch']} | "
                           f"{r['D']} | {r['L']} | {_fmt(r['time_baseline_s'], 3)} | {_fmt(r['time_gca_s'], 3)} | "
                           f"{_fmt(r['ratio'], 2, '×')} | {_fmt(r['peak_mem_rise_baseline_mb'] / 1024, 2)} | "
                           f"{_fmt(r['peak_mem_rise_gca_mb'] / 1024, 2)} | {r['weights']} | ok |")
            else:
                out.append(f"| {r['backbone']} | {r.get('device', '')} | | | | | | | | | | | {r['status']}: "
                           f"{r.get('reason', '')} |")
    prof = [r for r in rows if r["suite"] == "profile"]
    for r in prof:
        out += ["", f"## Where the time goes: torch.profiler, B = {r['B']} ({r['B'] // r['K']} x {r['K']}), "
                f"L = {r['L']}, H = {r['H']}, D = {r['D']}", ""]
        if r.get("status") != "ok":
            out.append(f"{r['status']}: {r.get('reason', '')}")
            continue
        out += [f"Generator step {r['time_step_s']:.3f} s (metric side {r['time_metric_s']:.3f} s), "
                f"{r['flops_step'] / 1e9:.1f} GFLOP ({r['gflops_per_s']:.1f} GFLOP/s), peak memory rise "
                f"{r['peak_mem_rise_mb'] / 1024:.2f} GB. Profiled step: {r['profile_total_self_ms'] / 1e3:.2f} s of "
                "operator self time.", "",
                "| operator | self time (ms) | share | calls |", "|---|---|---|---|"]
        for op in r["top_ops"]:
            out.append(f"| `{op['op']}` | {op['self_ms']:.1f} | {100 * op['share']:.1f}% | {op['calls']} |")
        out += ["", "By operator and input shapes:", "", "| operator | input shapes | self time (ms) | share | calls |",
                "|---|---|---|---|---|"]
        for op in r["top_ops_by_shape"]:
            out.append(f"| `{op['op']}` | `{op['shapes']}` | {op['self_ms']:.1f} | {100 * op['share']:.1f}% | "
                       f"{op['calls']} |")
    path.write_text("\n".join(out) + "\n")


def write_plots(rows: List[Dict[str, Any]], out_dir: Path) -> List[Path]:
    """Log-log plots of time and memory against B (one line per graph kind and L), and PyG vs dense."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    written = []
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    def batch_axis(ax, sizes):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(sizes))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())

    steps = _ok(rows, "generator_step")
    lines = sorted({(r["graph"], r.get("k") or 0, r["L"]) for r in steps})
    kinds = sorted({(g, k) for g, k, _ in lines})
    colours = {kind: f"C{i}" for i, kind in enumerate(kinds)}
    for key, ylabel, name, scale in (("time_step_s", "generator step (s)", "cost_time_vs_batch.png", 1.0),
                                     ("peak_mem_rise_mb", "peak memory rise (GB)", "cost_memory_vs_batch.png", 1024)):
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        for graph, k, layers in lines:
            pts = sorted((r["B"], r[key] / scale) for r in steps
                         if (r["graph"], r.get("k") or 0, r["L"]) == (graph, k, layers))
            label = f"{'full' if graph == 'full' else f'knn k={k}'}, L={layers}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colours[(graph, k)], label=label,
                    marker="o" if layers == 1 else "s", linestyle="-" if layers == 1 else "--")
        batch_axis(ax, {r["B"] for r in steps} or {64})
        ax.set_yscale("log")
        ax.set_xlabel("batch size B")
        ax.set_ylabel(ylabel)
        ax.set_title(f"GCA-HNG {ylabel} vs B")
        ax.grid(True, which="both", alpha=0.3)
        if lines:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        written.append(out_dir / name)
    prop = _ok(rows, "propagation")
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for label, pred in (("PyG, symmetric + fast (default)", lambda r: r["variant"] == "pyg" and r["symmetric"]),
                        ("PyG, plain", lambda r: r["variant"] == "pyg" and not r["symmetric"]),
                        ("dense PyTorch reference", lambda r: r["variant"] == "dense")):
        pts = sorted((r["B"], r["time_s"]) for r in prop if pred(r))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    batch_axis(ax, {r["B"] for r in prop} or {64})
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("propagation forward + backward (s)")
    ax.set_title("Propagation: PyG vs dense (full graph)")
    ax.grid(True, which="both", alpha=0.3)
    if prop:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "cost_pyg_vs_dense.png", dpi=120)
    plt.close(fig)
    written.append(out_dir / "cost_pyg_vs_dense.png")
    return written


# ============================================================================================ main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: B in {32, 64}, L=1, D=128, 1 repeat")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results", help="output folder")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    p.add_argument("--max-memory-gb", type=float, default=16.0, help="skip sizes estimated above this peak memory")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per configuration (default 5; quick 1)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 2; quick 1)")
    p.add_argument("--time-cap", type=float, default=None,
                   help="stop growing a line once a size's step took longer than this (s; default 30, quick 10)")
    p.add_argument("--config-budget", type=float, default=None,
                   help="seconds one configuration may take; repeats are reduced to fit (default 60, quick 10)")
    p.add_argument("--budget-min", type=float, default=None,
                   help="time budget of the whole run in minutes, shared out between suites (default 18, quick 2)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in the children (0: torch's default)")
    p.add_argument("--omp-wait-policy", default="passive", choices=("passive", "inherit"),
                   help="OMP_WAIT_POLICY of the child processes when it is not set already: 'passive' sets "
                        "PASSIVE (spinning OpenMP threads make every small operator tens of times slower when "
                        "the cores are shared, see the threads suite); 'inherit' leaves the environment alone")
    p.add_argument("--dim", type=int, default=None, help="embedding width D (default 512; quick 128)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--per-class", type=int, default=2, help="K samples per class in a batch (labels: B/K classes)")
    p.add_argument("--num-classes", type=int, default=100,
                   help="training classes of the heads (at least the classes in the batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-method", default="forkserver", choices=("forkserver", "spawn"))
    p.add_argument("--child-timeout", type=float, default=900.0, help="kill a configuration after this many seconds")
    p.add_argument("--suites", nargs="+", default=None, choices=["profile", "backbone", "fast_paths", "propagation",
                                                                  "threads", "generator_step"],
                   help="run only these suites (default: all); the matmul probes always run")
    p.add_argument("--render-only", action="store_true",
                   help="measure nothing: rewrite cost.md and the plots from the cost.json already in --out")
    args = p.parse_args(argv)
    q = args.quick
    args.repeats = args.repeats if args.repeats is not None else (1 if q else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 2)
    args.time_cap = args.time_cap if args.time_cap is not None else (10.0 if q else 30.0)
    args.config_budget = args.config_budget if args.config_budget is not None else (10.0 if q else 60.0)
    args.budget_min = args.budget_min if args.budget_min is not None else (2.0 if q else 18.0)
    args.dim = args.dim if args.dim is not None else (128 if q else 512)
    args.sizes = QUICK_SIZES if q else FULL_SIZES
    args.layers = (1,) if q else (1, 2)
    args.graphs = [("full", None), ("knn", 16)] if q else [("full", None), ("knn", 16), ("knn", 32)]
    args.fast_sizes = (32,) if q else (64, 128)
    args.fast_layers = 1 if q else 2
    args.dense_sizes = (32,) if q else (64, 128, 256)
    args.dense_layers = 1
    args.thread_sizes = (64,)
    args.profile_batch = (32, 2) if q else (81, 3)
    args.profile_layers = 1 if q else 2
    args.backbone_classes = 8 if q else 16
    args.backbone_dim = 64 if q else 512
    args.backbone_layers = 1 if q else 2
    args.matmul_n = 512 if q else 2048
    if args.repeats < 1 or args.warmup < 1:
        p.error("--repeats and --warmup must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render_only:
        rows = json.loads((args.out / "cost.json").read_text())
        write_markdown(rows, args.out / "cost.md")
        plots = write_plots(rows, args.out)
        print(f"rewrote {args.out / 'cost.md'}, " + ", ".join(p.name for p in plots))
        return 0
    import torch
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA requested but not available", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, Any]] = []
    inherited_policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    if args.omp_wait_policy == "passive" and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"     # read by the children's OpenMP runtime when it loads
    env = environment(args, device)
    env["thread_env"]["OMP_WAIT_POLICY (inherited)"] = inherited_policy
    rows.append(env)
    print(f"GCA-HNG cost benchmark: device={device}, threads={env['threads']}, torch {env['torch']}, "
          f"PyG {env['torch_geometric']}, torch-scatter {'yes' if env['torch_scatter_installed'] else 'no'}, "
          f"load avg {env['load_avg_1min_start']:.1f}, budget {args.budget_min:g} min", flush=True)
    runner = Runner(args.start_method, args.budget_min * 60, args.child_timeout)
    print("[matmul] peak throughput", flush=True)
    suite_matmul(args, runner, rows, device, "start")
    steps = [("profile", suite_profile), ("backbone", suite_backbone), ("fast_paths", suite_fast_paths),
             ("propagation", suite_propagation), ("threads", suite_threads), ("generator_step", suite_generator_step)]
    assert [name for name, _ in steps] + ["matmul_end"] == list(SUITE_SHARES)
    for name, fn in steps:
        if args.suites and name not in args.suites:
            continue
        print(f"[{name}] ({runner.elapsed() / 60:.1f} min elapsed, {max(runner.left(), 0) / 60:.1f} min left)",
              flush=True)
        fn(args, runner, rows, device)
    print("[matmul] again at the end", flush=True)
    suite_matmul(args, runner, rows, device, "end")
    env["load_avg_1min_end"] = os.getloadavg()[0]
    env["elapsed_min"] = runner.elapsed() / 60
    (args.out / "cost.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    write_markdown(rows, args.out / "cost.md")
    plots = write_plots(rows, args.out)
    print(f"wrote {args.out / 'cost.json'}, {args.out / 'cost.md'}, " + ", ".join(p.name for p in plots)
          + f" in {runner.elapsed() / 60:.1f} min", flush=True)
    failed = [r for r in rows if r.get("status") == "failed"]
    for r in failed:
        print(f"FAILED {r['suite']}: {r.get('reason')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
