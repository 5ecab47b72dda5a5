"""The suites of the cost benchmark: the ``suite_*`` functions that choose the configurations of each suite
(sizes, variants, when to stop growing) and run them in child processes, and the :class:`Suite` bookkeeping
of their rows and time budgets."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from costbench.harness import GB, Runner, Work
from costbench.workloads import (
    work_backbone,
    work_generator_step,
    work_knn_search,
    work_matmul,
    work_profile,
    work_propagation,
)

# Rough bytes of saved activations per edge row, per layer and per channel (fp32), used only to estimate
# the memory of the first size of a line before anything of that line has been measured; afterwards the
# estimate is the previous measurement scaled by the number of edges.
FIRST_GUESS_FLOATS_PER_EDGE_CHANNEL = 60
# Share of the time budget of each suite, in running order (relative: a suite gets its share over the sum of
# the shares of the suites still to run). The scaling suite runs last, so that it also gets whatever the others
# leave. large_batch, steps, compile, memory and ddp were added on top of shares that summed to 1, with the run's budget
# raised to match (18 -> 36 min), so that the other suites keep the time they had.
SUITE_SHARES = {"profile": 0.04, "backbone": 0.08, "fast_paths": 0.13, "propagation": 0.13, "threads": 0.07,
                "large_batch": 0.33, "steps": 0.25, "compile": 0.45, "memory": 0.2, "ddp": 0.2, "generator_step": 0.52,
                "matmul_end": 0.03}


def num_edges(batch: int, graph: str, k: Optional[int]) -> int:
    """Directed edges of the batch graph, self-loops included (as :func:`gca.build_batch_graph`)."""
    return batch * batch if graph == "full" else batch * (k + 1)


def first_memory_guess_gb(batch: int, graph: str, k: Optional[int], layers: int, dim: int) -> float:
    """A rough estimate of the peak memory of a line's first size (see ``FIRST_GUESS_...``)."""
    return num_edges(batch, graph, k) * max(layers, 1) * dim * 4 * FIRST_GUESS_FLOATS_PER_EDGE_CHANNEL / GB


class Suite:
    """The rows and the time budget of one suite.

    The suite's deadline is its share (:data:`SUITE_SHARES`) of what is left of the run's budget when it starts,
    among the suites still to run.

    Args:
        name: the suite (a key of :data:`SUITE_SHARES`), written in the ``suite`` field of its rows.
        runner: the run's child-process runner and clock.
        rows: the run's rows, appended to.
    """

    def __init__(self, name: str, runner: Runner, rows: List[Dict[str, Any]]):
        self.name, self.runner, self.rows = name, runner, rows
        shares = list(SUITE_SHARES)
        remaining = sum(SUITE_SHARES[s] for s in shares[shares.index(name):])
        self.deadline = time.monotonic() + max(runner.left(), 0.0) * SUITE_SHARES[name] / remaining

    def left(self) -> float:
        """Seconds left to this suite: to its own deadline or the run's, whichever comes first."""
        return min(self.deadline, self.runner.deadline) - time.monotonic()

    def add(self, settings: Dict[str, Any], result: Dict[str, Any]) -> Dict[str, Any]:
        """Append and return the row ``{"suite": name, **settings, **result}``."""
        row = {"suite": self.name, **settings, **result}
        self.rows.append(row)
        return row

    def skip(self, settings: Dict[str, Any], reason: str) -> Dict[str, Any]:
        """Record ``settings`` as a ``skipped`` row with its ``reason`` (and print it)."""
        print(f"  skip {self._label(settings)}: {reason}", flush=True)
        return self.add(settings, {"status": "skipped", "reason": reason})

    def run(self, work: Work, settings: Dict[str, Any], child_cfg: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        """Run one configuration in a child and record its row.

        Args:
            work: the workload function the child runs.
            settings: the settings written in the row.
            child_cfg: the configuration passed to ``work``.
            **kwargs: ``env`` and ``fresh`` of :meth:`costbench.harness.Runner.run`.

        Returns:
            The recorded row.
        """
        print(f"  run  {self._label(settings)} ...", end="", flush=True)
        result = self.runner.run(work, child_cfg, **kwargs)
        row = self.add(settings, result)
        print(" " + _summary(row), flush=True)
        return row

    @staticmethod
    def _label(settings: Dict[str, Any]) -> str:
        keys = ("variant", "graph", "k", "B", "L", "symmetric", "fast", "threads_setting", "backbone")
        return " ".join(f"{k}={settings[k]}" for k in keys if settings.get(k) is not None)


def _summary(row: Dict[str, Any]) -> str:
    """One line of progress output for a row: its status, or its main time and peak memory."""
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
    """The part of every child configuration taken from the command line: device, threads, seed, counts."""
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
            reason = _size_skip_reason(suite, settings, prev, batch, graph, k, layers, args)
            if reason is not None and reason.startswith("estimated peak memory"):
                stopped[line] = reason              # a line stops growing at its memory or time cap
            elif prev and prev["time_step_s"] > args.time_cap:
                stopped[line] = reason = (f"B={prev['B']} took {prev['time_step_s']:.1f} s > time cap "
                                          f"{args.time_cap:g} s")
            if reason is not None:
                suite.skip(settings, reason)
                continue
            row = suite.run(work_generator_step, settings, {**child_common(args, device), **settings})
            if row["status"] == "ok":
                last[line] = row
            else:
                stopped[line] = f"B={batch} failed: {row.get('reason')}"


def _size_skip_reason(suite: "Suite", settings: Dict[str, Any], prev: Optional[Dict[str, Any]], batch: int,
                      graph: str, k: Optional[int], layers: int, args) -> Optional[str]:
    """Why the generator step at ``batch`` should not run (``None``: run it): its peak memory, estimated from
    the previous size's row ``prev`` scaled by the edges (or a first guess), over ``--max-memory-gb``; its
    time (at least 3 iterations) over what is left of the suite's budget; or no budget left. Writes the memory
    estimate into ``settings``."""
    growth = num_edges(batch, graph, k) / num_edges(prev["B"], graph, k) if prev else None
    est_gb = (prev["peak_mem_rise_mb"] * growth / 1024 if prev
              else first_memory_guess_gb(batch, graph, k, layers, args.dim))
    settings["est_mem_gb"] = est_gb
    if est_gb > args.max_memory_gb:
        return f"estimated peak memory {est_gb:.1f} GB > budget {args.max_memory_gb:g} GB"
    est_s = prev["time_step_s"] * growth * 3 if prev else 0.0    # >= 3 iterations
    if prev and est_s > suite.left():
        return f"estimated {est_s:.0f} s > {max(suite.left(), 0):.0f} s left of the time budget"
    if suite.left() <= 0:
        return "time budget spent"
    return None


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
            current[(symmetric, fast)] = suite.run(work_generator_step, settings, cfg)
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
                            "torch_scatter": (bool(pyg_typing.WITH_TORCH_SCATTER) if use_scatter is None
                                              else use_scatter),
                            "edges": num_edges(batch, "full", None)}
                if why:
                    suite.skip(settings, why)
                    continue
                cfg = {**child_common(args, device), **settings, "disable_torch_scatter": use_scatter is False,
                       "repeats": min(args.repeats, 3)}
                current[(variant, symmetric, fast, use_scatter)] = suite.run(work_propagation, settings, cfg)
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
            suite.run(work_generator_step, settings, cfg, env=env, fresh=True)


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
        suite.run(work_backbone, settings, cfg)


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
    suite.run(work_profile, settings, cfg)


def suite_large_batch(args, runner: Runner, rows, device: str) -> None:
    """The knn graph at large batches: the knn search alone at the largest size, its budgeted blocks against one
    ``B x B`` block of scores, then one generator step at each size (``args.large_sizes``).

    Unlike the scaling suite there is no time cap (the largest size is the point of the suite): a size is skipped
    only when its estimated peak memory exceeds ``--max-memory-gb`` or its estimated time what is left of the
    suite's budget.
    """
    suite = Suite("large_batch", runner, rows)
    k, layers, largest = args.large_k, args.large_layers, max(args.large_sizes)
    search = {"graph": "knn", "k": k, "B": largest, "D": args.dim, "K": args.per_class}
    for variant, max_scores in (("blocks", args.large_knn_max_scores), ("one B x B block", largest * largest)):
        settings = {"variant": f"knn search, {variant}", **search, "max_scores_setting": max_scores}
        if not 1 <= k <= largest - 1:
            suite.skip(settings, f"k={k} needs B > k")
            continue
        if suite.left() <= 0:
            suite.skip(settings, "time budget spent")
            continue
        suite.run(work_knn_search, settings, {**child_common(args, device), **search, "max_scores": max_scores})
    prev: Optional[Dict[str, Any]] = None
    for batch in args.large_sizes:
        settings = {"variant": "generator step", "graph": "knn", "k": k, "B": batch, "L": layers, "H": args.heads,
                    "D": args.dim, "K": args.per_class, "num_classes": args.num_classes, "symmetric": False,
                    "fast": True, "edges": num_edges(batch, "knn", k)}
        if not 1 <= k <= batch - 1:
            suite.skip(settings, f"k={k} needs B > k")
            continue
        reason = _size_skip_reason(suite, settings, prev, batch, "knn", k, layers, args)
        if reason is not None:
            suite.skip(settings, reason)
            continue
        row = suite.run(work_generator_step, settings, {**child_common(args, device), **settings})
        if row["status"] == "ok":
            prev = row


def suite_matmul(args, runner: Runner, rows, device: str, when: str) -> None:
    """This machine's matmul throughput, measured in a child like every other configuration."""
    cfg = {**child_common(args, device), "n": args.matmul_n, "repeats": max(args.repeats, 3)}
    print(f"  run  matmul ({when}) ...", end="", flush=True)
    row = {"suite": "matmul", "when": when, "device": device, **runner.run(work_matmul, cfg)}
    rows.append(row)
    print(" " + _summary(row), flush=True)
