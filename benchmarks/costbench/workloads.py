"""The workloads of the cost benchmark: the ``work_*`` functions that each child process runs on one
configuration (a dict), returning its measured figures (a dict) to the parent.

The children unpickle these functions by their module name, so this module must stay importable as
``costbench.workloads`` (``benchmarks/`` on ``sys.path``); the forkserver preloads it (see
:class:`costbench.harness.Runner`).
"""
from __future__ import annotations

import contextlib
import math
import statistics
from typing import Any, Dict

from costbench.harness import MB, Memory, adaptive_counts, now, sync


def _setup_child(cfg: Dict[str, Any]):
    """Apply the child's thread count and seed; return ``torch`` and the configuration's ``torch.device``."""
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
    """The :class:`gca.model.GCAHNG` of a configuration (graph, layers, heads, symmetric and fast settings)."""
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
    mem = Memory(device)

    def one(count: bool = False):
        model.zero_grad(set_to_none=True)
        z = z0.clone().requires_grad_(True)
        counter_a = FlopCounterMode(display=False) if count else contextlib.nullcontext()
        counter_c = FlopCounterMode(display=False) if count else contextlib.nullcontext()
        sync(device)
        t0 = now()
        with counter_a:
            parts = model.metric_losses(z, y, generator=gen)
            parts["total"].backward()
        sync(device)
        t1 = now()
        with counter_c:
            g = model.generator_losses(z, y, generator=gen)
            g["total"].backward()
        sync(device)
        t2 = now()
        flops = (counter_a.get_total_flops(), counter_c.get_total_flops()) if count else None
        return t1 - t0, t2 - t1, flops, int(g["num_synthetics"])

    first_a, first_c, flops, synthetics = one(count=True)
    extra_warmup, repeats = adaptive_counts(first_a + first_c, cfg["warmup"], cfg["repeats"], cfg["config_budget_s"])
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
    from gca.nn.propagation import GraphPropagation
    from gca.testing.dense import dense_propagation
    z0, y, _ = _batch(torch, device, cfg["B"], cfg["D"], cfg["K"], cfg["seed"])
    torch.manual_seed(cfg["seed"])
    layer_kwargs = {} if cfg.get("fast", True) else {"fast": False}
    prop = GraphPropagation(cfg["D"], cfg["L"], cfg["H"], **layer_kwargs).to(device).eval()
    mem = Memory(device)

    def one(count: bool = False):
        prop.zero_grad(set_to_none=True)
        z = z0.clone().requires_grad_(True)
        counter = FlopCounterMode(display=False) if count else contextlib.nullcontext()
        sync(device)
        t0 = now()
        with counter:
            if cfg["variant"] == "dense":
                h, e = dense_propagation(prop, z, y)
            else:
                graph = build_batch_graph(z, y, "full")
                h, e = prop(graph.x, graph.edge_index, graph.edge_attr, graph.same_class,
                            symmetric=cfg.get("symmetric", False))
            (h.sum() + e.sum()).backward()
        sync(device)
        return now() - t0, (counter.get_total_flops() if count else None)

    first, flops = one(count=True)
    extra_warmup, repeats = adaptive_counts(first, cfg["warmup"], cfg["repeats"], cfg["config_budget_s"])
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
        sync(device)
        t0 = now()
        a @ b
        sync(device)
        times.append(now() - t0)
    t = statistics.median(times)
    src = torch.randn(4096, 512, device=device)
    index = torch.arange(64, device=device).repeat(64).view(-1, 1).expand_as(src)
    out = torch.zeros(64, 512, device=device)
    for _ in range(3):
        out.zero_().scatter_add_(0, index, src)
    scatter_times = []
    for _ in range(20):
        sync(device)
        t0 = now()
        out.zero_().scatter_add_(0, index, src)
        sync(device)
        scatter_times.append(now() - t0)
    return {"matmul_n": n, "time_s": t, "gflops_per_s": 2 * n ** 3 / t / 1e9, "repeats": cfg["repeats"],
            "scatter_probe_ms": statistics.median(scatter_times) * 1e3}


def work_backbone(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """A whole training step with an image backbone: baseline against GCA-HNG, interleaved in one process.

    Both use :func:`gca.train.step.train_step` with their own objective and optimisers: the baseline
    (:class:`gca.objective.MetricLossObjective`: forward, metric loss, backward, value clipping, AdamW step);
    GCA-HNG runs the three phases of METHOD 2.6. The same embedding model and images are used; the baseline runs
    first (its warm-up gives its peak memory), then GCA-HNG's warm-up (peak memory of the whole process, which
    includes the baseline's), then the timed repeats alternate baseline and GCA-HNG steps so that both see the
    same load on the machine.
    """
    torch, device = _setup_child(cfg)
    from gca.backbones import EmbeddingModel, create_backbone
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
        sync(device)
        t0 = now()
        train_step(model, objective, images, labels, opts, clip_value=10.0)
        sync(device)
        return now() - t0

    base_trainer, gca_trainer = "baseline", "gca"

    mem = Memory(device)
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
    return {"time_baseline_s": tb, "time_gca_s": tg, "ratio": tg / tb,
            "ratio_of_pairs_median": statistics.median(ratios), "time_baseline_all_s": base_times,
            "time_gca_all_s": gca_times, "warmup": cfg["warmup"],
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
        sync(device)

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


def _live_tensor_peak(fn) -> int:
    """Run ``fn()`` and return the peak bytes of the tensors it creates that are alive at once.

    Every new tensor an operator returns is followed with a weak reference until it is freed; views (which share
    their base's memory) and results that are one of the inputs (in-place ones) are not counted again. Unlike the
    peak RSS this is not blurred by the allocator's fragmentation or cached pages, so a difference of a few score
    blocks shows.
    """
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Tracker(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live: Dict[int, Any] = {}
            self.peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            # drop the freed ones first: a new tensor may reuse a freed one's id
            self.live = {key: (ref, size) for key, (ref, size) in self.live.items() if ref() is not None}
            if not func.is_view:
                inputs = {id(a) for a in tree_leaves((args, kwargs))}
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, torch.Tensor) and id(t) not in inputs and id(t) not in self.live:
                        self.live[id(t)] = (weakref.ref(t), t.untyped_storage().nbytes())
            self.peak = max(self.peak, sum(size for _, size in self.live.values()))
            return out

    with Tracker() as tracker:
        fn()
    return tracker.peak


def work_knn_search(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Time, FLOPs and peak memory of the knn search alone (:func:`gca.graph.knn_edge_index`) on a batch of
    embeddings.

    ``cfg["max_scores"]`` is the search's budget of scores held at once (``None``: the library's default,
    :data:`gca.graph.KNN_MAX_SCORES`; ``B * B``: one block, the whole score matrix). A search on 64 rows runs
    before the memory baseline, so that loading the kernels is not counted. Memory is measured twice: the peak
    RSS rise of the first search (GPU: max allocated), and the peak of the search's tensors alive at once
    (:func:`_live_tensor_peak`, exact). FLOPs are counted on a further search, the timed repeats come last.
    """
    torch, device = _setup_child(cfg)
    from torch.utils.flop_counter import FlopCounterMode

    from gca.graph import KNN_MAX_SCORES, knn_chunk_rows, knn_edge_index
    z, _, _ = _batch(torch, device, cfg["B"], cfg["D"], cfg["K"], cfg["seed"])
    max_scores = cfg.get("max_scores") or KNN_MAX_SCORES
    knn_edge_index(z[:64], min(cfg["k"], 63), max_scores=max_scores)

    def one():
        sync(device)
        t0 = now()
        edges = knn_edge_index(z, cfg["k"], max_scores=max_scores)
        sync(device)
        return now() - t0, edges.shape[1]

    mem = Memory(device)
    first, num_edges = one()
    rise_mb, peak_mb = mem.rise_mb(), mem.peak_mb()
    tensor_peak = _live_tensor_peak(lambda: knn_edge_index(z, cfg["k"], max_scores=max_scores))
    with FlopCounterMode(display=False) as counter:
        knn_edge_index(z, cfg["k"], max_scores=max_scores)
    flops = counter.get_total_flops()
    extra_warmup, repeats = adaptive_counts(first, cfg["warmup"], cfg["repeats"], cfg["config_budget_s"])
    for _ in range(extra_warmup):
        one()
    times = [one()[0] for _ in range(repeats)]
    t = statistics.median(times)
    rows = knn_chunk_rows(cfg["B"], max_scores)
    return {"time_s": t, "time_all_s": times, "time_first_s": first, "warmup": 1 + extra_warmup, "repeats": repeats,
            "peak_mem_rise_mb": rise_mb, "peak_mem_mb": peak_mb, "peak_tensor_mb": tensor_peak / MB, "flops": flops,
            "gflops_per_s": flops / t / 1e9, "max_scores": max_scores, "rows_per_block": rows,
            "blocks": math.ceil(cfg["B"] / rows), "score_block_mb": rows * cfg["B"] * 4 / MB,
            "score_matrix_mb": cfg["B"] ** 2 * 4 / MB, "embeddings_mb": cfg["B"] * cfg["D"] * 4 / MB,
            "num_edges": num_edges}
