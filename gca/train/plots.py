"""Pictures of a run, drawn from its ``metrics.jsonl``: losses, schedules, Recall@K, retrievals."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def read_metrics(run_dir: Path) -> List[Dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(run_dir: Path) -> List[Path]:
    """Write ``losses.png``, ``schedules.png``, ``diagnostics.png`` (GCA-HNG runs) and ``recall.png`` into
    ``run_dir``; returns the paths."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    written = []
    train = [r for r in records if r["kind"] == "train"]
    if train:
        keys = [k for k in ("total", "metric", "synthetic", "node", "classifier", "generator") if k in train[0]]
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
        steps = [r["step"] for r in train]
        for ax, key in zip(axes[0], keys):
            ax.plot(steps, [r[key] for r in train], lw=1)
            ax.set_title(key)
            ax.set_xlabel("step")
        fig.tight_layout()
        written.append(_save(fig, run_dir / "losses.png"))
    epochs = [r for r in records if r["kind"] == "epoch" and "next_gamma" in r]
    if epochs:
        fig, ax = plt.subplots(figsize=(4.5, 3))
        ax.plot([r["epoch"] + 1 for r in epochs], [r["next_gamma"] for r in epochs], marker="o",
                label=r"hardness $\gamma=e^{-\alpha/\bar J_m}$")
        if "next_synthetic_weight" in epochs[0]:
            ax.plot([r["epoch"] + 1 for r in epochs], [r["next_synthetic_weight"] for r in epochs], marker="s",
                    label=r"$w_{syn}=1-e^{-\beta/\bar J_{gen}}$")
        ax.set_xlabel("after epoch")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, run_dir / "schedules.png"))
    diag = [r for r in records if r["kind"] == "epoch" and "diag_cos_synthetic" in r]
    if diag:
        written.append(_plot_diagnostics(diag, run_dir / "diagnostics.png"))
    curves = {kind: [r for r in records if r["kind"] == kind] for kind in ("val", "test_curve")}
    if any(curves.values()):
        fig, ax = plt.subplots(figsize=(4.5, 3))
        for kind, rows in curves.items():
            for key in sorted({k for r in rows for k in r if k.startswith("R@")}, key=lambda k: int(k[2:])):
                ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], marker=".",
                        label=f"{'validation' if kind == 'val' else 'test (curve)'} {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("recall")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, run_dir / "recall.png"))
    return written


def _plot_diagnostics(epochs: List[Dict], path: Path) -> Path:
    """Three panels over epochs: how hard the synthetics are, how often they keep their label (and how
    often lambda has nothing to do), and how lambda varies across channels and negatives."""
    x = [r["epoch"] + 1 for r in epochs]
    panels = [
        ("hardness (cosine to the anchor)", [("diag_cos_synthetic", "synthetic"),
                                             ("diag_cos_hardest_real", "hardest real negative")], None),
        ("shares", [("diag_harder_than_real", "synthetic harder than every real negative"),
                    ("diag_label_accuracy", "synthetic keeps its label (classifier)"),
                    ("diag_unchanged", "candidate unchanged (d- <= d+)")], (-0.02, 1.02)),
        ("lambda", [("diag_lambda_mean", "mean"), ("diag_lambda_channel_std", "std across channels"),
                    ("diag_lambda_negative_std", "std across an anchor's negatives")], (-0.02, 1.02)),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.3))
    for ax, (title, keys, ylim) in zip(axes, panels):
        for key, label in keys:
            if key in epochs[0]:
                ax.plot(x, [r.get(key, np.nan) for r in epochs], marker=".", label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch (mean over its steps)")
        if ylim:
            ax.set_ylim(*ylim)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_retrievals(rows: Sequence[Tuple[torch.Tensor, Sequence[Tuple[torch.Tensor, bool]]]], path: Path) -> Path:
    """A grid: each row a query image (black frame) and its nearest neighbours in rank order, framed green
    when they share the query's class and red otherwise. ``rows`` holds ``(query_image, [(image, same_class),
    ...])``."""
    k = max(len(neighbours) for _, neighbours in rows)
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(1.4 * (k + 1), 1.4 * len(rows)), squeeze=False)
    for row, (query, neighbours) in enumerate(rows):
        cells = [(query, "black")] + [(image, "green" if hit else "red") for image, hit in neighbours]
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(cells):
                ax.axis("off")
                continue
            image, color = cells[col]
            ax.imshow(_to_image(image), cmap="gray")
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3)
        axes[row][0].set_ylabel("query", fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path))


def _to_image(t: torch.Tensor) -> np.ndarray:
    a = t.detach().float().cpu()
    if a.dim() == 3 and a.shape[0] in (1, 3):
        a = a.permute(1, 2, 0)
    a = a.numpy()
    a = (a - a.min()) / max(a.max() - a.min(), 1e-8)
    return a.squeeze()


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
