"""The report of the cost benchmark, written from the rows of ``cost.json``: the summary lines, the Markdown
tables of ``cost.md`` and the plots (time and memory against batch size, PyG against dense)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from costbench.compile_suite import compile_markdown, compile_summary_lines
from costbench.ddp_suite import ddp_markdown
from costbench.memory_suite import memory_markdown
from costbench.steps import steps_markdown, steps_summary_lines


def _fmt(value, digits: int = 2, unit: str = "") -> str:
    """A table cell: a float with ``digits`` decimals, anything else as is, ``unit`` appended; "–" when missing."""
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
    """The measured (``status == "ok"``) rows of ``suite``."""
    return [r for r in rows if r["suite"] == suite and r.get("status") == "ok"]


def _find(rows, suite: str, **match) -> Optional[Dict[str, Any]]:
    """The first measured row of ``suite`` whose fields equal ``match`` (``None``: none)."""
    for r in _ok(rows, suite):
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def summary_lines(rows: List[Dict[str, Any]]) -> List[str]:
    """The headline figures of the run, each computed from the rows (nothing when a row is missing).

    Args:
        rows: the rows of ``cost.json``.

    Returns:
        Markdown list items, one per figure.
    """
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
            lines.append(f"- Propagation fwd+bwd at B={batch}, L={dense['L']}: dense {dense['time_s']:.3f} s, "
                         f"PyG plain {plain['time_s']:.3f} s (dense/PyG {dense['time_s'] / plain['time_s']:.2f}×), "
                         f"PyG default {default['time_s']:.3f} s "
                         f"(dense/PyG {dense['time_s'] / default['time_s']:.2f}×).")
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
    lines += large_batch_summary_lines(rows)
    lines += steps_summary_lines(rows)
    lines += compile_summary_lines(rows)
    return lines


def _large_batch_rows(rows):
    """The measured rows of the large_batch suite: the generator steps by B, and the knn searches by variant."""
    done = _ok(rows, "large_batch")
    steps = sorted((r for r in done if r.get("variant") == "generator step"), key=lambda r: r["B"])
    searches = {r["variant"]: r for r in done if r.get("variant", "").startswith("knn search")}
    return steps, searches


def large_batch_summary_lines(rows: List[Dict[str, Any]]) -> List[str]:
    """The summary line of the large_batch suite (none when it measured nothing).

    Args:
        rows: the rows of ``cost.json``.

    Returns:
        At most one Markdown list item: the generator step at each B (time, FLOPs, peak memory rise, growth
        with B), then the knn search's own peak memory in blocks against one ``B x B`` block.
    """
    steps, searches = _large_batch_rows(rows)
    parts = []
    if steps:
        first = steps[0]
        slope_t = _slope([(r["B"], r["time_step_s"]) for r in steps])
        slope_m = _slope([(r["B"], r["peak_mem_rise_mb"]) for r in steps])
        growth = (f" (time ∝ B^{slope_t:.1f}, memory ∝ B^{slope_m:.1f})"
                  if slope_t is not None and slope_m is not None else "")
        parts.append(f"generator step, knn k={first['k']}, L={first['L']}, H={first['H']}, D={first['D']} "
                     "(time / FLOPs / peak memory rise): " + ", ".join(
                         f"B={r['B']} {r['time_step_s']:.2f} s / {r['flops_step'] / 1e9:.0f} GFLOP / "
                         f"{r['peak_mem_rise_mb'] / 1024:.2f} GB" for r in steps) + growth)
    blocks = searches.get("knn search, blocks")
    if blocks:
        whole = searches.get("knn search, one B x B block")
        parts.append(f"knn search alone at B={blocks['B']}: peak {blocks['peak_tensor_mb']:.3g} MiB of tensors "
                     f"(RSS rise {blocks['peak_mem_rise_mb']:.0f} MiB) in {blocks['blocks']} block(s) of "
                     f"{blocks['rows_per_block']} rows ({blocks['score_block_mb']:.3g} MiB of scores each)"
                     + (f", against {whole['peak_tensor_mb']:.3g} MiB (RSS rise {whole['peak_mem_rise_mb']:.0f} MiB) "
                        f"with one {whole['B']} x {whole['B']} block ({whole['score_matrix_mb']:.3g} MiB of scores)"
                        if whole else ""))
    return ["- Large batch: " + "; ".join(parts) + "."] if parts else []


def large_batch_markdown(rows: List[Dict[str, Any]]) -> List[str]:
    """The section of ``cost.md`` on the large_batch suite (no lines when the run has no such rows).

    Args:
        rows: the rows of ``cost.json``.

    Returns:
        The Markdown lines: the generator steps at each B, then the knn search alone.
    """
    suite = [r for r in rows if r["suite"] == "large_batch"]
    if not suite:
        return []
    out = ["", "## Large batches: the knn graph at B = " + " and ".join(
               str(b) for b in sorted({r["B"] for r in suite if r.get("variant") == "generator step"})), "",
           "One generator step (as in the table against batch size) with the knn graph, without the scaling suite's "
           "time cap. The knn search (`gca.graph.knn_edge_index`) scores the batch in blocks of rows that hold at "
           "most `max_scores` scores at once (the library's default is 2**22, 16 MiB in float32; `--quick` uses a "
           "quarter of the B x B matrix) instead of the B x B matrix. The search alone is measured below against "
           "one B x B block: peak tensors = the most bytes of the tensors it creates alive at once (exact); RSS "
           "rise = the peak resident set size of a fresh process over its first search, embeddings already "
           "allocated (blurred by the allocator: tens of MiB either way).", "",
           "| B | k | L | edges | step (s) | metric side A (s) | generator C (s) | peak mem (GB) | GFLOP | GFLOP/s | "
           "% matmul | reps | load | status |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in suite if r.get("variant") == "generator step"), key=lambda r: r["B"]):
        head = f"| {r['B']} | {r['k']} | {r['L']} | {r['edges']} |"
        if r.get("status") == "ok":
            out.append(f"{head} {_fmt(r['time_step_s'], 3)} | {_fmt(r['time_metric_s'], 3)} | "
                       f"{_fmt(r['time_generator_s'], 3)} | {_fmt(r['peak_mem_rise_mb'] / 1024, 2)} | "
                       f"{_fmt(r['flops_step'] / 1e9, 1)} | {_fmt(r['gflops_per_s'], 1)} | "
                       f"{_percent_of_matmul(rows, r['gflops_per_s'])} | {r['warmup']}+{r['repeats']} | "
                       f"{_fmt(r.get('load_avg_1min_start'), 1)} | ok |")
        else:
            out.append(f"{head} | | | | | | | | | {r['status']}: {r.get('reason', '')} |")
    out += ["", "| knn search | B | D | k | rows per block | blocks | scores per block (MiB) | B x B scores (MiB) | "
            "time (s) | GFLOP | peak tensors (MiB) | RSS rise (MiB) | reps | status |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in suite if r.get("variant", "").startswith("knn search")):
        head = f"| {r['variant'][len('knn search, '):]} | {r['B']} | {r['D']} | {r['k']} |"
        if r.get("status") == "ok":
            out.append(f"{head} {r['rows_per_block']} | {r['blocks']} | {r['score_block_mb']:.3g} | "
                       f"{r['score_matrix_mb']:.3g} | {_fmt(r['time_s'], 3)} | {_fmt(r['flops'] / 1e9, 1)} | "
                       f"{_fmt(r['peak_tensor_mb'], 2)} | {_fmt(r['peak_mem_rise_mb'], 1)} | "
                       f"{r['warmup']}+{r['repeats']} | ok |")
        else:
            out.append(f"{head} | | | | | | | | | {r['status']}: {r.get('reason', '')} |")
    return out


def write_markdown(rows: List[Dict[str, Any]], path: Path) -> None:
    """All tables of the run in one Markdown file.

    Args:
        rows: the rows of ``cost.json``.
        path: the file written (``cost.md``).
    """
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
    out += large_batch_markdown(rows)
    out += steps_markdown(rows)
    out += compile_markdown(rows)
    out += memory_markdown(rows)
    out += ddp_markdown(rows)
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
                "| variant | torch-scatter | B | L | time (s) | peak mem (GB) | GFLOP | GFLOP/s | dense / this | "
                "status |",
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
                out.append(f"| {r['backbone']} | {r['device']} | {'x'.join(map(str, r['image_shape']))} | "
                           f"{r['batch']} | {r['D']} | {r['L']} | {_fmt(r['time_baseline_s'], 3)} | "
                           f"{_fmt(r['time_gca_s'], 3)} | "
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
    """Log-log plots of time and memory against B (one line per graph kind and L), and PyG vs dense.

    Args:
        rows: the rows of ``cost.json``.
        out_dir: the folder the PNG files are written to.

    Returns:
        The files written.
    """
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
