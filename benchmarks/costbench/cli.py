"""The command line of the cost benchmark: its options (:func:`parse_args`) and the run (:func:`main`):
measure every suite in child processes, then write ``cost.json``, ``cost.md`` and the plots."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

import costbench
from costbench.compile_suite import suite_compile
from costbench.ddp_suite import refresh_memory_model, suite_ddp
from costbench.harness import Runner, environment
from costbench.memory_suite import suite_memory
from costbench.report import write_markdown, write_plots
from costbench.steps import suite_steps
from costbench.suites import (
    SUITE_SHARES,
    suite_backbone,
    suite_fast_paths,
    suite_generator_step,
    suite_large_batch,
    suite_matmul,
    suite_profile,
    suite_propagation,
    suite_threads,
)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
FULL_SIZES = (64, 128, 256, 512, 1024, 2048)
QUICK_SIZES = (32, 64)
# large_batch: B = 2048 (the scaling suite's largest) and 4096 for the slope; quick: tiny sizes with a knn budget
# of a quarter of the score matrix, so that the search still runs in blocks.
LARGE_SIZES = (2048, 4096)
QUICK_LARGE_SIZES = (128, 512)


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the options and fill in the defaults of the full or the ``--quick`` run, and the sizes each suite
    measures.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The options, with the sizes and settings of the suites added (``sizes``, ``layers``, ``graphs``, ...).
    """
    p = argparse.ArgumentParser(description=costbench.__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: B in {32, 64}, L=1, D=128, 1 repeat")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    p.add_argument("--max-memory-gb", type=float, default=16.0, help="skip sizes estimated above this peak memory")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per configuration (default 5; quick 1)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 2; quick 1)")
    p.add_argument("--time-cap", type=float, default=None,
                   help="stop growing a line once a size's step took longer than this (s; default 30, quick 10)")
    p.add_argument("--config-budget", type=float, default=None,
                   help="seconds one configuration may take; repeats are reduced to fit (default 60, quick 10)")
    p.add_argument("--budget-min", type=float, default=None,
                   help="time budget of the whole run in minutes, shared out between suites (default 36, quick 2)")
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
                                                                  "threads", "large_batch", "steps", "compile",
                                                                  "memory", "ddp", "generator_step"],
                   help="run only these suites (default: all); the matmul probes always run")
    p.add_argument("--render-only", action="store_true",
                   help="measure nothing: rewrite cost.md and the plots from the cost.json already in --out")
    args = p.parse_args(argv)
    q = args.quick
    args.repeats = args.repeats if args.repeats is not None else (1 if q else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 2)
    args.time_cap = args.time_cap if args.time_cap is not None else (10.0 if q else 30.0)
    args.config_budget = args.config_budget if args.config_budget is not None else (10.0 if q else 60.0)
    args.budget_min = args.budget_min if args.budget_min is not None else (2.0 if q else 36.0)
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
    # steps: the authors' CUB batch (27 x 3) and twice it, the issue's settings; quick: one tiny size
    args.step_sizes = (24,) if q else (81, 162)
    args.step_per_class = 3
    args.step_layers = 1 if q else 2
    args.step_rounds = 1 if q else 3
    # compile: the authors' CUB batch, eager against inductor in two rounds; quick: eager only (no C++ compile)
    args.compile_batch = 24 if q else 81
    args.compile_per_class = 3
    args.compile_layers = 1 if q else 2
    args.compile_rounds = 1 if q else 2
    args.compile_backend = "inductor"
    # memory: a cross-batch memory of 1k-16k entries at the authors' CUB batch, two rounds; quick: a tiny batch
    args.memory_batch = 24 if q else 81
    args.memory_per_class = 3
    args.memory_layers = 1 if q else 2
    args.memory_rounds = 1 if q else 2
    # ddp: one process against two at equal global batch (CPU, gloo)
    args.ddp_sizes = (32,) if q else (64, 256, 384)
    args.ddp_per_class = 2
    args.ddp_layers = 1 if q else 2
    args.ddp_dim = 64 if q else 128
    args.ddp_rounds = 1 if q else 2
    args.large_sizes = QUICK_LARGE_SIZES if q else LARGE_SIZES
    args.large_k = 16
    args.large_layers = 1 if q else 2
    args.large_knn_max_scores = max(QUICK_LARGE_SIZES) ** 2 // 4 if q else None   # None: the library's default
    if args.repeats < 1 or args.warmup < 1:
        p.error("--repeats and --warmup must be at least 1")
    return args


def main(argv=None) -> int:
    """Run the benchmark (or, with ``--render-only``, only rewrite its report).

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 2 when CUDA was asked for and is not available.
    """
    args = parse_args(argv)
    if args.render_only:
        rows = json.loads((args.out / "cost.json").read_text())
        if any(r.get("suite") == "ddp" for r in rows):
            refresh_memory_model(rows)      # derived from the measured rows by this code
            (args.out / "cost.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
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
             ("propagation", suite_propagation), ("threads", suite_threads), ("large_batch", suite_large_batch),
             ("steps", suite_steps), ("compile", suite_compile), ("memory", suite_memory), ("ddp", suite_ddp),
             ("generator_step", suite_generator_step)]
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
