"""The ``steps`` suite: one whole generator iteration of the library's steps, side by side.

Variants, each in a fresh child process, alternating in rounds so that every variant sees the same machine
(the cores are shared, the load moves):

* ``two-pass, before``: the library's two-pass step as it was when the issue "A quarter of the authors'
  cost" was filed (commit :data:`BEFORE_COMMIT`, its ``gca`` exported with ``git archive`` and imported in a
  fresh interpreter): the "before" of the issue's before/after;
* ``plain``: the two-pass step of METHOD 2.6 on the plain reference paths (every directed edge, per-edge
  queries, nothing recomputed);
* ``two-pass``: the library's default two-pass step (one state, lambda and edge-to-node message per
  unordered pair, key-side queries);
* ``fused``: the fused step (:mod:`gca.train.step`): one propagation and one backward sweep for phases A
  and C, with the per-edge gathers recomputed in the backward pass (``gca.layer_kwargs.recompute=gathers``:
  no extra matrix product);
* ``fused, lean``: also the edge feed-forward block's GELU and LayerNorm outputs recomputed from its stored
  pre-activation (``recompute=all``: elementwise work, no extra product);
* ``fused, stored``: the fused step storing every activation (what the recomputation saves).

An iteration is :func:`gca.train.train_step` with its three optimisers (AdamW) on a fixed batch of
embeddings (a leaf parameter stands for the embedding network), as in the authors' figures quoted in the
issue "A quarter of the authors' cost" (B = 81, 162; L = 2, H = 4, D = 512).
"""
from __future__ import annotations

import contextlib
import io
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from costbench.harness import Memory, Runner, adaptive_counts, now, sync

#: The library when the issue "A quarter of the authors' cost" was filed (its gca/ equals that of 6d3fcbe,
#: the last code commit before the issue's work began in dba9a1b).
BEFORE_COMMIT = "92fb5d2"
BEFORE = "two-pass, before"

#: variant -> (train_step's fused, symmetric edges, key-side queries, recompute; None: the code predates it)
STEP_VARIANTS = {
    BEFORE: (False, True, True, None),
    "plain": (False, False, False, "none"),
    "two-pass": (False, True, True, "none"),
    "fused": (True, True, True, "gathers"),
    "fused, lean": (True, True, True, "all"),
    "fused, stored": (True, True, True, "none"),
}

#: The authors' official code, measured side by side with the library's two-pass step on this kind of machine
#: (issue "A quarter of the authors' cost": 2 threads, one generator iteration with its optimiser steps).
AUTHORS = {81: {"gflop": 503.0, "mem_gib": 3.3}, 162: {"gflop": 1999.0, "mem_gib": 12.6}}


def train_step_setup(cfg: Dict[str, Any], **objective_kwargs):
    """The child side of a ``train_step`` workload: threads and seed from ``cfg``, a leaf parameter standing for
    the embedding network's output ``[B, D]``, labels of ``B / K`` classes, a :class:`gca.GCAHNG` built with
    ``objective_kwargs`` and its three AdamW optimisers.

    Returns:
        ``(device, net, objective, labels, optimisers)``.
    """
    import torch
    from torch import nn

    from gca.model import GCAHNG
    from gca.train.step import Optimisers

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(cfg["seed"])
    device = torch.device(cfg["device"])
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
    # the heads cover cfg["num_classes"] when given (classes beyond the batch's: a memory's), else the batch's
    objective = GCAHNG(cfg["D"], cfg.get("num_classes") or classes, num_layers=cfg["L"], heads=cfg["H"],
                       **objective_kwargs).to(device).train()
    optimisers = Optimisers(metric=torch.optim.AdamW(net.parameters(), lr=1e-4),
                            generator=torch.optim.AdamW(objective.generator_parameters(), lr=1e-4),
                            classifier=torch.optim.AdamW(objective.classifier_parameters(), lr=1e-4))
    return device, net, objective, labels, optimisers


def export_source(commit: str, dest: Path) -> Optional[str]:
    """Write the ``gca`` package of ``commit`` (this repository's history) under ``dest``; returns why not, or
    ``None`` when it is there."""
    repo = Path(__file__).resolve().parents[2]
    try:
        tar = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit, "gca"],
                             capture_output=True, check=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no git history to export commit {commit} from ({type(exc).__name__})"
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    return None


def _import_gca_from(source: str) -> None:
    """Make ``import gca`` load the package under ``source`` (a fresh interpreter only)."""
    if "gca" in sys.modules:
        raise RuntimeError("gca is already imported in this process: the 'before' variant needs a fresh one")
    sys.path.insert(0, source)
    import gca
    if not Path(gca.__file__).resolve().is_relative_to(Path(source).resolve()):
        raise RuntimeError(f"imported gca from {gca.__file__}, not from {source}")


def work_step_variant(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Time, count the FLOPs of, and measure the peak memory of ``train_step`` for one variant."""
    if cfg.get("source"):
        _import_gca_from(cfg["source"])


    fused, symmetric, fast, recompute = STEP_VARIANTS[cfg["variant"]]
    layer_kwargs = {"fast": fast} if recompute is None else {"fast": fast, "recompute": recompute}
    device, net, objective, labels, optimisers = train_step_setup(cfg, symmetric_edges=symmetric,
                                                                  layer_kwargs=layer_kwargs)
    step_kwargs = {"fused": True} if fused else {}
    mem = Memory(device)

    return timed_train_steps(cfg, device, mem, net, objective, labels, optimisers, **step_kwargs)


def timed_train_steps(cfg: Dict[str, Any], device, mem: Memory, net, objective, labels, optimisers,
                      **step_kwargs) -> Dict[str, Any]:
    """Time ``train_step`` on a fixed batch: the first call with its FLOPs counted, warm-up and timed repeats within
    ``cfg``'s budget; medians of wall and CPU seconds, the peak memory rise since ``mem`` was made."""
    from torch.utils.flop_counter import FlopCounterMode

    from gca.train.step import train_step

    def one(count: bool = False):
        counter = FlopCounterMode(display=False) if count else contextlib.nullcontext()
        sync(device)
        start, cpu_start = now(), time.process_time()
        with counter:
            train_step(net, objective, labels, labels, optimisers, **step_kwargs)
        sync(device)
        return now() - start, time.process_time() - cpu_start, (counter.get_total_flops() if count else None)

    first, _, flops = one(count=True)
    extra_warmup, repeats = adaptive_counts(first, cfg["warmup"], cfg["repeats"], cfg["config_budget_s"])
    for _ in range(extra_warmup):
        one()
    timed = [one()[:2] for _ in range(repeats)]
    step = statistics.median(t for t, _ in timed)
    # the process's CPU seconds: on a shared machine a step waits for a core, which wall time counts and CPU
    # time does not (on CPU with one thread it is the step's own compute; on GPU it means little)
    cpu_step = statistics.median(c for _, c in timed)
    return {"time_step_s": step, "time_step_all_s": [t for t, _ in timed], "cpu_step_s": cpu_step,
            "cpu_step_all_s": [c for _, c in timed], "time_first_s": first, "warmup": 1 + extra_warmup,
            "repeats": repeats, "peak_mem_rise_mb": mem.rise_mb(), "peak_mem_mb": mem.peak_mb(),
            "flops_step": flops, "gflops_per_s": flops / step / 1e9}


def suite_steps(args, runner: Runner, rows, device: str) -> None:
    """The variants of :data:`STEP_VARIANTS` at each of ``args.step_sizes``, alternating in
    ``args.step_rounds`` rounds (each round runs every variant once, in a fresh process)."""
    import tempfile

    from costbench.suites import Suite, child_common

    suite = Suite("steps", runner, rows)
    with tempfile.TemporaryDirectory(prefix="gca_before_") as before_dir:
        before_missing = export_source(BEFORE_COMMIT, Path(before_dir))
        for batch in args.step_sizes:
            for round_index in range(args.step_rounds):
                for variant in STEP_VARIANTS:
                    settings = {"variant": variant, "B": batch, "K": args.step_per_class, "L": args.step_layers,
                                "H": args.heads, "D": args.dim, "round": round_index}
                    if suite.left() <= 0:
                        suite.skip(settings, "time budget spent")
                        continue
                    child = {**child_common(args, device), **settings}
                    if variant == BEFORE:
                        if before_missing:
                            suite.skip(settings, before_missing)
                            continue
                        child["source"] = before_dir
                    # the commit's gca is imported by a fresh interpreter (the fork server has today's loaded)
                    suite.run(work_step_variant, settings, child, fresh=variant == BEFORE)


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
                            "cpu_s": statistics.median(r.get("cpu_step_s", float("nan")) for r in runs),
                            "cpus": [round(r.get("cpu_step_s", float("nan")), 3) for r in runs],
                            "gflop": max(r["flops_step"] for r in runs) / 1e9,
                            "mem_gib": max(r["peak_mem_rise_mb"] for r in runs) / 1024, "rounds": len(runs)}
    return out


def steps_summary_lines(rows: List[Dict[str, Any]]) -> List[str]:
    """One summary line per measured size: each fused variant against the two-pass step and the authors."""
    lines = []
    for batch in sorted({r["B"] for r in rows if r.get("suite") == "steps" and r.get("status") == "ok"}):
        v = _by_variant(rows, batch)
        t = v.get("two-pass")
        if t is None:
            continue
        parts = []
        for name in ("fused", "fused, lean"):
            if name not in v:
                continue
            f = v[name]
            before = v.get(BEFORE)
            against = f"{f['cpu_s'] / t['cpu_s']:.2f}x" + (f", {f['cpu_s'] / before['cpu_s']:.2f}x before"
                                                           if before else "")
            text = f"{name} {f['cpu_s']:.2f} CPU s ({against}), {f['gflop']:.0f} GFLOP, {f['mem_gib']:.2f} GiB"
            if batch in AUTHORS:
                a = AUTHORS[batch]
                text += f" ({f['gflop'] / a['gflop']:.2f}x / {f['mem_gib'] / a['mem_gib']:.2f}x the authors')"
            parts.append(text)
        head = (f"- Steps at B={batch} against two-pass {t['cpu_s']:.2f} CPU s, {t['gflop']:.0f} GFLOP, "
                f"{t['mem_gib']:.2f} GiB")
        if BEFORE in v:
            b = v[BEFORE]
            head += (f" (before, {BEFORE_COMMIT}: {b['cpu_s']:.2f} CPU s, {b['gflop']:.0f} GFLOP, "
                     f"{b['mem_gib']:.2f} GiB)")
        lines.append(head + ": " + "; ".join(parts) + ".")
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
           "on the same machine. CPU time: the process's CPU seconds per step (one thread: its own compute, "
           "whatever else runs on the machine), median over the rounds of each process's median; wall time "
           "likewise, which on a shared machine also counts the waits for a core; FLOPs: "
           "`FlopCounterMode` (matrix products); memory: peak RSS rise of the process. "
           f"`{BEFORE}`: the two-pass step of the library when the issue was filed (commit {BEFORE_COMMIT}'s "
           "`gca`, imported in a fresh interpreter); `plain`: the plain reference paths; `two-pass`: today's "
           "default step; `fused`: one propagation and one backward sweep, per-edge gathers recomputed in "
           "backward (`recompute=gathers`); `fused, lean`: the feed-forward block's GELU and LayerNorm outputs "
           "recomputed too (`recompute=all`, elementwise, no extra product); `fused, stored`: the fused step "
           "without recomputation. The authors' figures are the issue's side-by-side measurement of their "
           "official code (not run here).", "",
           "| B | variant | CPU s / step | per round | CPU time vs two-pass | vs before | wall s / step | per round "
           "| GFLOP | peak mem (GiB) | GFLOP vs authors | memory vs authors |",
           "|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for batch in sizes:
        v = _by_variant(rows, batch)
        ref, before = v.get("two-pass"), v.get(BEFORE)
        for variant, m in v.items():
            ratio = f"{m['cpu_s'] / ref['cpu_s']:.2f}" if ref else ""
            ratio += f" | {m['cpu_s'] / before['cpu_s']:.2f}" if before else " | "
            a = AUTHORS.get(batch)
            fl = f"{m['gflop'] / a['gflop']:.2f}" if a else ""
            me = f"{m['mem_gib'] / a['mem_gib']:.2f}" if a else ""
            out.append(f"| {batch} | {variant} | {m['cpu_s']:.2f} | {', '.join(map(str, m['cpus']))} | {ratio} | "
                       f"{m['time_s']:.2f} | {', '.join(map(str, m['times']))} | {m['gflop']:.1f} | "
                       f"{m['mem_gib']:.2f} | {fl} | {me} |")
        if batch in AUTHORS:
            a = AUTHORS[batch]
            out.append(f"| {batch} | authors (issue) | | | | | | | {a['gflop']:.0f} | {a['mem_gib']:.1f} "
                       "| 1.00 | 1.00 |")
    return out + [""]
