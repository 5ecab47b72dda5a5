"""The paper's setting on a lent GPU, in a few minutes: does it run, in one precision, and what does it cost?

    bash scripts/gpu_smoke.sh                       # on a GPU machine; writes runs/gpu_smoke/
    python scripts/gpu_smoke.py --device cpu --steps 4 --image-size 32 --no-cost    # a local dry run

1. Writes a CUB-200-2011-format copy (``--classes`` classes of ``--per-class`` random images; no data can be
   downloaded on the lent machine) and trains ``paper/res_cub200`` on it with random ResNet-50 weights under
   bf16 autocast: the baseline (N-pair) and N-pair + GCA-HNG, ``--steps`` steps each, same seed.
2. Checks that every logged loss is finite and that baseline and GCA-HNG compute the metric loss in the same
   precision (float32, bit-identical J_m on the same embeddings) while the backbone ran in bf16.
3. Records steps per second and peak GPU memory of both, then runs the cost benchmark's whole-step rows
   (``benchmarks/cost.py --suites backbone``: EfficientNet-Lite0 and ResNet-50 on CUDA).

Writes ``gpu_smoke.json`` and prints a summary; exits non-zero when a check fails.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gca.train import Trainer, load_config  # noqa: E402
from gca.train.plots import read_metrics  # noqa: E402


def write_cub(root: Path, classes: int, per_class: int, size: int = 64, seed: int = 0) -> Path:
    """A CUB_200_2011-format folder: each class a noisy colour pattern of its own."""
    base = root / "CUB_200_2011"
    rng = np.random.default_rng(seed)
    images, labels, names = [], [], []
    image_id = 0
    for c in range(1, classes + 1):
        name = f"{c:03d}.Class_{c}"
        names.append(f"{c} {name}")
        pattern = rng.random((size, size, 3))
        (base / "images" / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            image_id += 1
            pixels = np.clip(pattern + 0.2 * rng.standard_normal(pattern.shape), 0, 1)
            rel = f"{name}/img_{j:03d}.jpg"
            Image.fromarray((255 * pixels).astype(np.uint8)).save(base / "images" / rel)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "classes.txt").write_text("\n".join(names) + "\n")
    return root


def train(args, name: str, extra) -> dict:
    cfg = load_config("paper/res_cub200", [
        f"data.root={args.out / 'data'}", f"data.image_size={args.image_size}", "data.num_workers=4",
        "model.pretrained=false", f"device={args.device}", "solver.amp=bf16", f"solver.max_steps={args.steps}",
        f"solver.steps_per_epoch={args.steps // 2}", "solver.epochs=2", "solver.warmup_epochs=1",
        "eval.every_epochs=1", "log_every_steps=1", "plots=false", f"output_dir={args.out / 'runs'}",
        f"name={name}", *extra])
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    # a smoke run measures a fresh run: an earlier attempt's folder (this script's own output) goes first
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    trainer = Trainer(cfg, progress=False)
    start = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - start
    records = read_metrics(trainer.run_dir)
    train_records = [r for r in records if r["kind"] == "train"]
    epoch_seconds = sum(r["seconds"] for r in records if r["kind"] == "epoch")
    finite = all(math.isfinite(v) for r in train_records for k, v in r.items()
                 if isinstance(v, float) and k not in ("epoch", "step"))
    return {"trainer": trainer, "result": result, "finite": finite, "steps": trainer.step,
            "steps_per_second": trainer.step / epoch_seconds if epoch_seconds else None, "wall_s": wall,
            "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2 ** 30 if args.device.startswith("cuda")
            else None}


def same_precision(baseline: Trainer, method: Trainer) -> dict:
    """J_m of both paths on one batch of bf16-autocast embeddings: dtype and value."""
    images, labels = next(iter(torch.utils.data.DataLoader(
        baseline.train_set, batch_sampler=baseline._epoch_batches()[:1])))
    images, labels = images.to(baseline.device), labels.to(baseline.device)
    baseline.model.eval()
    with torch.no_grad():
        with baseline._autocast():
            z_autocast = baseline.model(images)
        z = z_autocast.float()
        base_jm = baseline.metric_loss(z, labels)
        with method._autocast():
            parts = method.objective.metric_losses(z, labels)
    return {"backbone_dtype": str(z_autocast.dtype), "baseline_metric_dtype": str(base_jm.dtype),
            "gca_metric_dtype": str(parts["metric"].dtype), "gca_synthetic_dtype": str(parts["synthetic"].dtype),
            "metric_equal": bool(torch.equal(base_jm, parts["metric"]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "gpu_smoke")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--classes", type=int, default=64)
    p.add_argument("--per-class", type=int, default=4)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--no-cost", action="store_true", help="skip the cost benchmark's whole-step rows")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device here; run it on a lent GPU (or pass --device cpu for a dry run)",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    write_cub(args.out / "data", args.classes, args.per_class)
    runs = {"baseline": train(args, "baseline", ["gca.enabled=false"]), "gca": train(args, "gca", [])}
    precision = same_precision(runs["baseline"]["trainer"], runs["gca"]["trainer"])
    report = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "config": "paper/res_cub200 (random weights)",
        "image_size": args.image_size, "steps": args.steps, "precision": precision,
        **{name: {k: v for k, v in r.items() if k != "trainer"} for name, r in runs.items()},
    }
    checks = {"baseline losses finite": runs["baseline"]["finite"], "GCA-HNG losses finite": runs["gca"]["finite"],
              "backbone ran in bf16": precision["backbone_dtype"] == "torch.bfloat16",
              "J_m float32 in both": precision["baseline_metric_dtype"] == precision["gca_metric_dtype"]
              == "torch.float32",
              "J_m identical": precision["metric_equal"]}
    report["checks"] = checks
    if not args.no_cost:
        cost_out = args.out / "cost"
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cost.py"), "--device", args.device,
                               "--suites", "backbone", "--out", str(cost_out), "--budget-min", "6"],
                              capture_output=True, text=True)
        report["cost_backbone"] = json.loads((cost_out / "cost.json").read_text()) if proc.returncode == 0 \
            else {"failed": proc.stderr[-2000:]}
    (args.out / "gpu_smoke.json").write_text(json.dumps(report, indent=1, default=str))
    for name in ("baseline", "gca"):
        r = runs[name]
        print(f"{name:9s} steps {r['steps']}, {r['steps_per_second'] or float('nan'):.2f} steps/s, peak GPU memory "
              f"{r['peak_gpu_memory_gb'] if r['peak_gpu_memory_gb'] is not None else float('nan'):.2f} GB, "
              f"val/test R@1 {r['result'].get('R@1', float('nan')):.3f}")
    for check, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {check}")
    print(f"wrote {args.out / 'gpu_smoke.json'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
