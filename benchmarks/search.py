"""Choose settings on the validation classes, never the test classes, and record the search.

    python benchmarks/search.py --name proxy_routing --config omniglot --seeds 0 1 \\
        --base loss.metric=proxy_anchor solver.max_steps=600 \\
        --candidate "Proxy-Anchor=gca.enabled=false" \\
        --candidate "as class samples, full gradient=gca.synthetic_loss_mode=embeddings gca.synthetic_gradient=full"

Every (candidate, seed) is one :class:`gca.train.Trainer` run with ``eval.test=false``: the checkpoint is
selected on the validation split carved from the training classes, and the test classes are never embedded.
Each run is appended to ``benchmarks/results/search_<name>.json`` as it finishes (``--resume`` keeps those);
``search_<name>.md`` is rewritten with, per candidate, the best validation R@1 (mean ± std over seeds), its
difference to the first candidate paired by seed, the validation curve, and the generator's state at the end
(gamma, w_syn and the diagnostics of :mod:`gca.diagnostics`, averaged over the last epoch).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from quality import folder_name  # noqa: E402  (benchmarks/ is on sys.path: this script's folder)

from gca.train import Trainer, load_config  # noqa: E402
from gca.train.plots import read_metrics  # noqa: E402

END_STATE_KEYS = ("next_gamma", "next_synthetic_weight", "diag_cos_synthetic", "diag_cos_hardest_real",
                  "diag_harder_than_real", "diag_label_accuracy", "diag_unchanged", "diag_lambda_channel_std",
                  "diag_lambda_negative_std")


def parse_candidate(text: str):
    if "=" not in text:
        raise SystemExit(f"--candidate {text!r} must look like 'label=key=value key=value ...'")
    label, overrides = text.split("=", 1)
    return label.strip(), overrides.split()


def run_one(config: str, base: List[str], label: str, overrides: List[str], seed: int, workdir: Path) -> Dict:
    name = f"{folder_name(label, limit=50)}_s{seed}"
    cfg = load_config(config, base + overrides + [f"seed={seed}", f"name={name}", f"output_dir={workdir}",
                                                  "eval.test=false", "plots=false"])
    start = time.perf_counter()
    trainer = Trainer(cfg, progress=False)
    trainer.resume()        # an interrupted run continues exactly (a finished one is only evaluated again)
    result = trainer.fit()
    records = read_metrics(workdir / name)
    epochs = [r for r in records if r["kind"] == "epoch"]
    curve = [{"epoch": r["epoch"], "step": r["step"], "R@1": r["R@1"]} for r in records if r["kind"] == "val"]
    end_state = {k: epochs[-1][k] for k in END_STATE_KEYS if epochs and k in epochs[-1]}
    return {"label": label, "overrides": overrides, "seed": seed, "val_R@1": result.get("val_R@1"),
            "best_step": result.get("val_step"), "steps": result["steps"], "curve": curve,
            "end_state": end_state, "seconds": round(time.perf_counter() - start, 1)}


def markdown(meta: Dict, runs: List[Dict]) -> str:
    labels = list(dict.fromkeys(r["label"] for r in runs))
    by = {label: {r["seed"]: r for r in runs if r["label"] == label} for label in labels}
    first = labels[0]
    minutes = sum(r["seconds"] for r in runs) / 60
    out = [f"# Search on validation: {meta['name']}", "",
           f"`python benchmarks/search.py {meta['command']}`", "",
           f"Config `{meta['config']}` with `{' '.join(meta['base'])}`; seeds {meta['seeds']}; {len(runs)} runs, "
           f"{minutes:.0f} minutes (torch {meta['environment']['torch']}, {meta['environment']['threads']} threads, "
           f"OMP_WAIT_POLICY={meta['environment']['OMP_WAIT_POLICY']}). Validation classes only (`eval.test=false`: "
           "the test classes were never embedded). Best validation R@1 over the evaluations, in %, mean ± std over "
           "seeds; the difference to the first row is paired by seed (mean ± std of the per-seed differences).", "",
           "| candidate | overrides | val R@1 | vs first row | best at step | gamma | w_syn | cos syn / hardest real "
           "| harder than real | label acc. | unchanged |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label in labels:
        rows = by[label]
        vals = np.array([100 * r["val_R@1"] for r in rows.values()])
        cell = f"{vals.mean():.2f} ± {vals.std(ddof=1) if len(vals) > 1 else 0:.2f}"
        if label == first:
            diff = "(reference)"
        else:
            d = np.array([100 * (rows[s]["val_R@1"] - by[first][s]["val_R@1"]) for s in rows if s in by[first]])
            diff = f"{d.mean():+.2f} ± {d.std(ddof=1) if len(d) > 1 else float('inf'):.2f}" if len(d) else ""
        best_steps = sorted({r["best_step"] for r in rows.values()})

        def mean_of(key, scale=1.0, fmt="{:.3g}"):
            values = [r["end_state"][key] for r in rows.values() if key in r["end_state"]]
            return fmt.format(scale * float(np.mean(values))) if values else ""
        cos = f"{mean_of('diag_cos_synthetic', fmt='{:.2f}')} / {mean_of('diag_cos_hardest_real', fmt='{:.2f}')}" \
            if any("diag_cos_synthetic" in r["end_state"] for r in rows.values()) else ""
        out.append(f"| {label} | `{' '.join(next(iter(rows.values()))['overrides'])}` | {cell} | {diff} | "
                   f"{', '.join(map(str, best_steps))} | {mean_of('next_gamma')} | "
                   f"{mean_of('next_synthetic_weight')} | {cos} | {mean_of('diag_harder_than_real', fmt='{:.2f}')} | "
                   f"{mean_of('diag_label_accuracy', fmt='{:.2f}')} | {mean_of('diag_unchanged', fmt='{:.2f}')} |")
    out += ["", "Validation R@1 (%) by step, mean over seeds:", ""]
    steps = sorted({c["step"] for r in runs for c in r["curve"]})
    out.append("| candidate | " + " | ".join(map(str, steps)) + " |")
    out.append("|---|" + "---:|" * len(steps))
    for label in labels:
        cells = []
        for step in steps:
            v = [c["R@1"] for r in by[label].values() for c in r["curve"] if c["step"] == step]
            cells.append(f"{100 * np.mean(v):.1f}" if v else "")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--config", default="omniglot")
    parser.add_argument("--base", nargs="*", default=[], help="overrides shared by every candidate")
    parser.add_argument("--candidate", action="append", required=True, help="'label=overrides' (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "search")
    parser.add_argument("--resume", action="store_true", help="keep the runs already recorded")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    candidates = [parse_candidate(c) for c in args.candidate]
    json_path = args.out / f"search_{args.name}.json"
    meta = {"name": args.name, "config": args.config, "base": args.base, "seeds": args.seeds,
            "candidates": [{"label": lab, "overrides": ov} for lab, ov in candidates],
            "command": " ".join(a if " " not in a else repr(a) for a in (argv if argv is not None else sys.argv[1:])),
            "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                            "python": platform.python_version(),
                            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset"),
                            "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "unset")}}
    runs = json.loads(json_path.read_text())["runs"] if args.resume and json_path.is_file() else []
    done = {(r["label"], r["seed"]) for r in runs}
    workdir = args.workdir / args.name
    for seed in args.seeds:                       # seed-major, so an interrupted search stays paired
        for label, overrides in candidates:
            if (label, seed) in done:
                continue
            print(f"[search {args.name}] {label} seed {seed} ...", flush=True)
            runs.append(run_one(args.config, args.base, label, overrides, seed, workdir))
            print(f"[search {args.name}]   val R@1 {100 * runs[-1]['val_R@1']:.2f} in {runs[-1]['seconds']:.0f} s",
                  flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
            (args.out / f"search_{args.name}.md").write_text(markdown(meta, runs))
    print((args.out / f"search_{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
