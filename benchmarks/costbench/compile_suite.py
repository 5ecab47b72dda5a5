"""The ``compile`` suite: one generator training iteration, eager against ``torch.compile`` (inductor).

Variants, each in a fresh child process, alternating in rounds so that both see the same machine:

* ``eager``: the library's default two-pass step (:func:`gca.train.train_step`, one edge state per unordered
  pair, key-side queries), as the ``steps`` suite's ``two-pass``;
* ``compiled``: the same step after :meth:`gca.GCAGenerator.compile_layers` (the propagation blocks compiled
  with inductor, its default ``dynamic=True``; config key ``gca.compile``), with an empty inductor cache, so that
  the first iteration pays the whole compilation as a first run on a machine does;
* ``compiled, static``: the same with torch's ``dynamic=None`` (static shapes until one changes; a training run
  with a fixed batch size keeps them).

An iteration is :func:`gca.train.train_step` with its three optimisers (AdamW) on a fixed batch of embeddings (a
leaf parameter stands for the embedding network) at the authors' CUB batch (B = 81 = 27 x 3; L = 2, H = 4,
D = 512). The first iteration (the compilation) is recorded apart from the steady-state median; memory is the
process's peak rise (compilation included) and the peak of the tensors one steady step allocates. The quick run
measures the eager step only: the inductor compile takes tens of seconds on a CPU (it builds C++ kernels). The
full run's budget (``--budget-min``) was raised from 28 to 36 minutes for this suite's share.
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, List

from costbench.harness import MB, Memory, Runner, adaptive_counts, now, sync

#: variant -> the keyword arguments of ``compile_layers`` (``None``: eager)
COMPILE_VARIANTS = {"eager": None, "compiled": {}, "compiled, static": {"dynamic": None}}


def _step_tensor_peak_mb(step, device) -> float:
    """The peak of the memory one call of ``step`` allocates, over what was allocated when it started (MiB).

    CUDA: the allocator's peak statistics. CPU: the allocation events of ``torch.profiler`` (they include the
    buffers of compiled kernels, which a dispatch mode does not see).
    """
    import torch
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / MB
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak / MB


def work_compile_variant(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Time one ``train_step`` eager or with compiled propagation blocks: the first iteration, the steady-state
    median, and the peak memory."""
    import os
    import shutil
    import tempfile

    from costbench.steps import train_step_setup
    from gca.train.step import train_step

    device, net, objective, labels, optimisers = train_step_setup(cfg)
    cache, compile_kwargs = None, COMPILE_VARIANTS[cfg["variant"]]
    if compile_kwargs is not None:
        # an empty cache: the first iteration compiles everything, as a first run on a machine does, and the rounds
        # do not reuse each other's kernels
        cache = tempfile.mkdtemp(prefix="costbench-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        objective.generator.compile_layers(backend=cfg["backend"], **compile_kwargs)
    mem = Memory(device)

    def one() -> float:
        sync(device)
        start = now()
        train_step(net, objective, labels, labels, optimisers)
        sync(device)
        return now() - start

    try:
        first = one()        # compiles the blocks: phases A and C feed them different inputs, two graphs
        second = one()
        extra_warmup, repeats = adaptive_counts(second, cfg["warmup"], cfg["repeats"], cfg["config_budget_s"])
        for _ in range(extra_warmup):
            one()
        times = [one() for _ in range(repeats)]
        step_peak = _step_tensor_peak_mb(one, device)
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
    step = statistics.median(times)
    from torch._dynamo.utils import counters
    return {"time_step_s": step, "time_step_all_s": times, "time_first_s": first, "time_second_s": second,
            "time_compile_s": max(first - step, 0.0), "warmup": 2 + extra_warmup, "repeats": repeats,
            "peak_mem_rise_mb": mem.rise_mb(), "peak_mem_mb": mem.peak_mb(), "step_tensor_peak_mb": step_peak,
            "graphs_compiled": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values()))}


def suite_compile(args, runner: Runner, rows, device: str) -> None:
    """The variants of :data:`COMPILE_VARIANTS` at ``args.compile_batch``, alternating in ``args.compile_rounds``
    rounds (each round runs every variant once, in fresh processes); the quick run records the compiled variants
    as skipped."""
    from costbench.suites import Suite, child_common

    suite = Suite("compile", runner, rows)
    for round_index in range(args.compile_rounds):
        for variant, compile_kwargs in COMPILE_VARIANTS.items():
            settings = {"variant": variant, "B": args.compile_batch, "K": args.compile_per_class,
                        "L": args.compile_layers, "H": args.heads, "D": args.dim, "round": round_index,
                        "backend": None if compile_kwargs is None else args.compile_backend}
            if compile_kwargs is not None and args.quick:
                suite.skip(settings, "quick run: the inductor compile takes tens of seconds on a CPU (C++ kernels)")
                continue
            if suite.left() <= 0:
                suite.skip(settings, "time budget spent")
                continue
            suite.run(work_compile_variant, settings, {**child_common(args, device), **settings})


def _by_variant(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per variant: the median over the rounds of the steady step, the first iteration and the compilation, and
    the largest memory figures."""
    out = {}
    for variant in COMPILE_VARIANTS:
        runs = [r for r in rows if r.get("suite") == "compile" and r.get("status") == "ok" and r["variant"] == variant]
        if runs:
            out[variant] = {"time_s": statistics.median(r["time_step_s"] for r in runs),
                            "first_s": statistics.median(r["time_first_s"] for r in runs),
                            "compile_s": statistics.median(r["time_compile_s"] for r in runs),
                            "rise_gib": max(r["peak_mem_rise_mb"] for r in runs) / 1024,
                            "step_gib": max(r["step_tensor_peak_mb"] for r in runs) / 1024,
                            "rounds": len(runs), "row": runs[0]}
    return out


def _payback(eager_s: float, compiled_s: float, compile_s: float) -> str:
    """How many steps the compilation takes to pay back, in words."""
    saved = eager_s - compiled_s
    return f"paid back after {compile_s / saved:.0f} steps" if saved > 0 else "never paid back"


def _versus(name: str, m: Dict[str, Any], eager: Dict[str, Any]) -> str:
    """One variant against eager, in words."""
    return (f"{name} {m['time_s']:.2f} s ({eager['time_s'] / m['time_s']:.2f}x eager's speed; compilation "
            f"{m['compile_s']:.0f} s, {_payback(eager['time_s'], m['time_s'], m['compile_s'])}; step tensors "
            f"{m['step_gib']:.2f} GiB)")


def compile_summary_lines(rows: List[Dict[str, Any]]) -> List[str]:
    """One summary line: the compiled steps against the eager one (nothing unless eager and one compiled variant
    were measured)."""
    v = _by_variant(rows)
    compiled = [name for name in COMPILE_VARIANTS if COMPILE_VARIANTS[name] is not None and name in v]
    if "eager" not in v or not compiled:
        return []
    e, r = v["eager"], v["eager"]["row"]
    return [f"- torch.compile of the propagation blocks ({v[compiled[0]]['row']['backend']}) at B={r['B']}, "
            f"L={r['L']}, D={r['D']}, median over {e['rounds']} round(s): eager {e['time_s']:.2f} s (step tensors "
            f"{e['step_gib']:.2f} GiB); " + "; ".join(_versus(name, v[name], e) for name in compiled) + "."]


def compile_markdown(rows: List[Dict[str, Any]]) -> List[str]:
    """The ``compile`` section of ``cost.md`` (empty when the suite did not run)."""
    mine = [r for r in rows if r.get("suite") == "compile"]
    if not mine:
        return []
    out = ["## torch.compile of the propagation blocks: eager against compiled", "",
           "One `gca.train.train_step` (the default two-pass step) with its three AdamW optimisers on a fixed batch "
           "of embeddings, eager and with `GCAGenerator.compile_layers()` (config key `gca.compile`; inductor, "
           "an empty inductor cache; `compiled`: its default `dynamic=True`; `compiled, static`: torch's "
           "`dynamic=None`, static shapes until one changes), each in a fresh process, the variants alternating "
           "in rounds. "
           "first: the first iteration (the compilation included); step: the median of the steady iterations; "
           "compile: first minus step; step tensors: the peak of what one steady step allocates "
           "(`torch.profiler` memory events on CPU, the allocator's peak on CUDA); process rise: the peak memory "
           "rise of the process (CPU: RSS, the compilation included).", "",
           "| variant | round | B | L | D | first (s) | step (s) | compile (s) | step tensors (GiB) | "
           "process rise (GiB) | graphs | graph breaks | status |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in mine:
        head = f"| {r['variant']} | {r['round']} | {r['B']} | {r['L']} | {r['D']} |"
        if r.get("status") == "ok":
            out.append(f"{head} {r['time_first_s']:.2f} | {r['time_step_s']:.3f} | "
                       f"{r['time_compile_s']:.1f} | {r['step_tensor_peak_mb'] / 1024:.3f} | "
                       f"{r['peak_mem_rise_mb'] / 1024:.2f} | {r['graphs_compiled']} | {r['graph_breaks']} | ok |")
        else:
            out.append(f"{head} | | | | | | | {r['status']}: {r.get('reason', '')} |")
    return out + [""]
