"""The ``steps`` suite: one whole generator iteration of the library's steps, side by side.

Variants, each in a fresh child process, alternating in rounds so that every variant sees the same machine
(the cores are shared, the load moves):

* ``plain``: the two-pass step of METHOD 2.6 on the plain reference paths (every directed edge, per-edge
  queries, nothing recomputed);
* ``two-pass``: the library's default two-pass step (one state, lambda and edge-to-node message per
  unordered pair, key-side queries);
* ``fused``: the fused step (:mod:`gca.train.step`): one propagation and one backward sweep for phases A
  and C, with the per-edge gathers recomputed in the backward pass (``gca.layer_kwargs.recompute=gathers``:
  no extra matrix product);
* ``fused, lean``: also the edge feed-forward activations recomputed (``recompute=all``: one more product);
* ``fused, stored``: the fused step storing every activation (what the recomputation saves).

An iteration is :func:`gca.train.train_step` with its three optimisers (AdamW) on a fixed batch of
embeddings (a leaf parameter stands for the embedding network), as in the authors' figures quoted in the
issue "A quarter of the authors' cost" (B = 81, 162; L = 2, H = 4, D = 512).
"""
from __future__ import annotations

import contextlib
import statistics
from typing import Any, Dict, List

from costbench.harness import Memory, Runner, adaptive_counts, now, sync

#: variant -> (train_step's fused, symmetric edges, key-side queries, recompute)
STEP_VARIANTS = {
    "plain": (False, False, False, "none"),
    "two-pass": (False, True, True, "none"),
    "fused": (True, True, True, "gathers"),
    "fused, lean": (True, True, True, "all"),
    "fused, stored": (True, True, True, "none"),
}

#: The authors' official code, measured side by side with the library's two-pass step on this kind of machine
#: (issue "A quarter of the authors' cost": 2 threads, one generator iteration with its optimiser steps).
AUTHORS = {81: {"gflop": 503.0, "mem_gib": 3.3}, 162: {"gflop": 1999.0, "mem_gib": 12.6}}


def work_step_variant(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Time, count the FLOPs of, and measure the peak memory of ``train_step`` for one variant."""
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    from gca.model import GCAHNG
    from gca.train.step import Optimisers, train_step

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(cfg["seed"])
    device = torch.device(cfg["device"])
    fused, symmetric, fast, recompute = STEP_VARIANTS[cfg["variant"]]
    classes = cfg["B"] // cfg["K"]
    labels = torch.arange(classes).repeat(cfg["K"]).to(device)

    class Embeddings(nn.Module):
        """Stands for the embedding network: its output is a trained ``[B, D]`` parameter."""

        def __init__(self):
            super().__init__()
            self.z = nn.Parameter(torch.randn(cfg["B"], cfg["D"], generator=torch.Generator().manual_seed(cfg["seed"])))

        def forward(self, _images):
            return self.z

    net = Embeddings().to(device)
    objective = GCAHNG(cfg["D"], classes, num_layers=cfg["L"], heads=cfg["H"], symmetric_edges=symmetric,
                       layer_kwargs={"fast": fast, "recompute": recompute}).to(device).train()
    optimisers = Optimisers(metric=torch.optim.AdamW(net.parameters(), lr=1e-4),
                            generator=torch.optim.AdamW(objective.generator_parameters(), lr=1e-4),
                            classifier=torch.optim.AdamW(objective.classifier_parameters(), lr=1e-4))
    mem = Memory(device)

    def one(count: bool = False):
        counter = FlopCounterMode(display=False) if count else contextlib.nullcontext()
        sync(device)
        start = now()
        with counter:
            train_step(net, objective, labels, labels, optimisers, fused=fused)
        sync(device)
        return now() - start, (counter.get_total_flops() if count else None)

    first, flops = one(count=True)
    extra_warmup, repeats = adaptive_counts(first, cfg["warmup"], cfg["repeats"], cfg["config_budget_s"])
    for _ in range(extra_warmup):
        one()
    times = [one()[0] for _ in range(repeats)]
    step = statistics.median(times)
    return {"time_step_s": step, "time_step_all_s": times, "time_first_s": first, "warmup": 1 + extra_warmup,
            "repeats": repeats, "peak_mem_rise_mb": mem.rise_mb(), "peak_mem_mb": mem.peak_mb(),
            "flops_step": flops, "gflops_per_s": flops / step / 1e9}


def suite_steps(args, runner: Runner, rows, device: str) -> None:
    """The variants of :data:`STEP_VARIANTS` at each of ``args.step_sizes``, alternating in
    ``args.step_rounds`` rounds (each round runs every variant once, in a fresh process)."""
    from costbench.suites import Suite, child_common

    suite = Suite("steps", runner, rows)
    for batch in args.step_sizes:
        for round_index in range(args.step_rounds):
            for variant in STEP_VARIANTS:
                settings = {"variant": variant, "B": batch, "K": args.step_per_class, "L": args.step_layers,
                            "H": args.heads, "D": args.dim, "round": round_index}
                if suite.left() <= 0:
                    suite.skip(settings, "time budget spent")
                    continue
                suite.run(work_step_variant, settings, {**child_common(args, device), **settings})


def _by_variant(rows: List[Dict[str, Any]], batch: int) -> Dict[str, Dict[str, Any]]:
    """Per variant at size ``batch``: the median step time over the rounds, and the FLOPs and peak memory rise
    (the largest over the rounds)."""
    out = {}
    for variant in STEP_VARIANTS:
        runs = [r for r in rows if r.get("suite") == "steps" and r.get("status") == "ok" and r["B"] == batch
                and r["variant"] == variant]
        if runs:
            out[variant] = {"time_s": statistics.median(r["time_step_s"] for r in runs),
                            "times": [round(r["time_step_s"], 3) for r in runs],
                            "gflop": max(r["flops_step"] for r in runs) / 1e9,
                            "mem_gib": max(r["peak_mem_rise_mb"] for r in runs) / 1024, "rounds": len(runs)}
    return out


def steps_summary_lines(rows: List[Dict[str, Any]]) -> List[str]:
    """One summary line per measured size: the fused step against the two-pass step and the authors."""
    lines = []
    for batch in sorted({r["B"] for r in rows if r.get("suite") == "steps" and r.get("status") == "ok"}):
        v = _by_variant(rows, batch)
        if "fused" not in v or "two-pass" not in v:
            continue
        f, t = v["fused"], v["two-pass"]
        text = (f"- Steps at B={batch}: fused {f['time_s']:.2f} s / {f['gflop']:.0f} GFLOP / {f['mem_gib']:.2f} GiB "
                f"against two-pass {t['time_s']:.2f} s / {t['gflop']:.0f} GFLOP / {t['mem_gib']:.2f} GiB "
                f"(time {f['time_s'] / t['time_s']:.2f}x in the same run)")
        if batch in AUTHORS:
            a = AUTHORS[batch]
            text += (f"; against the authors' {a['gflop']:.0f} GFLOP / {a['mem_gib']:.1f} GiB: "
                     f"{f['gflop'] / a['gflop']:.2f}x FLOPs, {f['mem_gib'] / a['mem_gib']:.2f}x memory")
        lines.append(text + ".")
    return lines


def steps_markdown(rows: List[Dict[str, Any]]) -> List[str]:
    """The ``steps`` section of ``cost.md`` (empty when the suite did not run)."""
    sizes = sorted({r["B"] for r in rows if r.get("suite") == "steps" and r.get("status") == "ok"})
    if not sizes:
        return []
    first = next(r for r in rows if r.get("suite") == "steps" and r.get("status") == "ok")
    out = ["## Steps side by side: plain reference, two-pass, fused", "",
           "One `gca.train.train_step` with its three AdamW optimisers on a fixed batch of embeddings "
           f"(L={first['L']}, H={first['H']}, D={first['D']}, K={first['K']} samples per class), every variant in a "
           "fresh process, the variants alternating in rounds "
           "on the same machine. Time: median over the rounds of each process's median step; FLOPs: "
           "`FlopCounterMode` (matrix products); memory: peak RSS rise of the process. `plain`: the plain "
           "reference paths; `two-pass`: the default step; `fused`: one propagation and one backward sweep, "
           "per-edge gathers recomputed in backward (`recompute=gathers`); `fused, lean`: the feed-forward "
           "activations recomputed too (`recompute=all`, one more matrix product); `fused, stored`: the fused "
           "step without recomputation. The authors' figures are the issue's side-by-side measurement of "
           "their official code (not run here).", "",
           "| B | variant | step (s) | per round (s) | time vs two-pass | GFLOP | peak mem (GiB) | GFLOP vs authors "
           "| memory vs authors |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for batch in sizes:
        v = _by_variant(rows, batch)
        ref = v.get("two-pass")
        for variant, m in v.items():
            ratio = f"{m['time_s'] / ref['time_s']:.2f}" if ref else ""
            a = AUTHORS.get(batch)
            fl = f"{m['gflop'] / a['gflop']:.2f}" if a else ""
            me = f"{m['mem_gib'] / a['mem_gib']:.2f}" if a else ""
            out.append(f"| {batch} | {variant} | {m['time_s']:.2f} | {', '.join(map(str, m['times']))} | {ratio} | "
                       f"{m['gflop']:.1f} | {m['mem_gib']:.2f} | {fl} | {me} |")
        if batch in AUTHORS:
            a = AUTHORS[batch]
            out.append(f"| {batch} | authors (issue) | | | | {a['gflop']:.0f} | {a['mem_gib']:.1f} | 1.00 | 1.00 |")
    return out + [""]
