"""Kill a training job with SIGKILL at random moments, resume it each time, and compare with one uninterrupted run.

    python scripts/kill_soak.py --kills 24 --out benchmarks/results/kill_soak.txt

One reference run trains without interruption. Then trials: a fresh run directory is trained with
``gca train ... --resume`` and killed with SIGKILL after a random delay, again and again, until an attempt
finishes; its final weights (``last.pt``: model, objective, metric loss; ``best.pt``: model), ``result.json``
and ``metrics.jsonl`` records (without wall times and resume notes) must equal the reference's exactly.
Trials repeat until at least ``--kills`` kills have landed. Runs are deterministic (``deterministic=true``),
so any difference is a resume bug. Prints one line per attempt and a summary: kills, trials, mismatches.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from gca.testing.runs import comparable_records
from gca.train.checkpoint import load_checkpoint

DEFAULT_OVERRIDES = ["solver.max_steps=30", "solver.steps_per_epoch=10", "checkpoint_every_steps=3",
                     "deterministic=true", "plots=false"]


def _command(config: str, overrides, out_dir: Path, name: str, resume: bool):
    cmd = [sys.executable, "-m", "gca.cli", "train", "--config", config, *overrides,
           f"output_dir={out_dir}", f"name={name}", "--no-progress"]
    return cmd + (["--resume"] if resume else [])


def _differences(reference: Path, run: Path):
    """What differs between two finished runs (an empty list when they are identical)."""
    problems = []
    result_a, result_b = (json.loads((d / "result.json").read_text()) for d in (reference, run))
    result_a.pop("name")
    result_b.pop("name")
    if result_a != result_b:
        problems.append(f"result.json: {result_a} vs {result_b}")
    records_a, records_b = comparable_records(reference), comparable_records(run)
    if records_a != records_b:
        problems.append(f"metrics.jsonl: {len(records_a)} vs {len(records_b)} records differ")
    steps = [r["step"] for r in records_b if r["kind"] == "train"]
    if len(steps) != len(set(steps)):
        problems.append("metrics.jsonl holds a step more than once")
    for name, keys in (("last.pt", ("model", "objective", "metric_loss")), ("best.pt", ("model",))):
        a, b = load_checkpoint(reference / name, required=keys), load_checkpoint(run / name, required=keys)
        for key in keys:
            sa, sb = a[key] or {}, b[key] or {}
            if sa.keys() != sb.keys() or any(not torch.equal(sa[k], sb[k]) for k in sa):
                problems.append(f"{name}[{key}] differs")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="omniglot")
    parser.add_argument("--kills", type=int, default=20, help="at least this many SIGKILLs in all")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    parser.add_argument("--work-dir", default="runs/kill_soak")
    parser.add_argument("--out", default=None, help="also write the printed report to this file")
    parser.add_argument("overrides", nargs="*", help="config overrides (default: a 30-step Omniglot job)")
    args = parser.parse_args(argv)
    overrides = args.overrides or DEFAULT_OVERRIDES
    work = Path(args.work_dir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    lines = []

    def say(text):
        print(text, flush=True)
        lines.append(text)

    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    say(f"kill soak: config {args.config} {' '.join(overrides)}; at least {args.kills} kills; "
        f"kill-time seed {args.seed}")
    say(f"settings: OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']} MALLOC_MMAP_THRESHOLD_="
        f"{env.get('MALLOC_MMAP_THRESHOLD_', 'unset')} torch {torch.__version__}")
    start = time.perf_counter()
    subprocess.run(_command(args.config, overrides, work, "reference", False), env=env, check=True,
                   stdout=subprocess.DEVNULL)
    duration = time.perf_counter() - start
    say(f"reference run: {duration:.1f} s uninterrupted")

    rng = random.Random(args.seed)
    kills = trials = mismatches = 0
    while kills < args.kills:
        trials += 1
        name = f"trial_{trials:02d}"
        attempt = 0
        while True:
            attempt += 1
            # a delay anywhere in a whole run's length, so kills land at start-up, in steps, at checkpoints,
            # in validation, in the final test and in the plots alike
            delay = rng.uniform(0.5, duration)
            proc = subprocess.Popen(_command(args.config, overrides, work, name, True), env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                _, err = proc.communicate(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                kills += 1
                last = work / name / "last.pt"
                where = "no checkpoint yet"
                if last.is_file():
                    state = load_checkpoint(last, required=("step",))
                    where = f"checkpoint at step {state['step']}, epoch {state['epoch']}, " \
                            f"step_in_epoch {state['step_in_epoch']}"
                say(f"  {name} attempt {attempt}: SIGKILL after {delay:.1f} s ({where})")
                continue
            if proc.returncode != 0:
                say(f"  {name} attempt {attempt}: exited with {proc.returncode}: {err.decode()[-400:]}")
                mismatches += 1
                break
            problems = _differences(work / "reference", work / name)
            mismatches += bool(problems)
            say(f"  {name} attempt {attempt}: finished; {'identical to the reference' if not problems else problems}")
            break
    say(f"summary: {kills} kills over {trials} trials, {mismatches} mismatches "
        f"({time.perf_counter() - start:.0f} s in all)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
