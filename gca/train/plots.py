"""Pictures of a run, drawn from its ``metrics.jsonl``: losses, schedules, Recall@K, retrievals."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

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
    """Write ``losses.png``, ``schedules.png`` and ``recall.png`` into ``run_dir``; returns the paths."""
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


def plot_retrievals(images: Sequence[torch.Tensor], labels: torch.Tensor, embeddings: torch.Tensor, path: Path,
                    num_queries: int = 5, k: int = 5, seed: int = 0) -> Path:
    """A grid: each row a query image and its ``k`` nearest neighbours (green frame: same class)."""
    emb = torch.nn.functional.normalize(embeddings.float(), dim=1)
    rng = np.random.default_rng(seed)
    queries = rng.choice(len(labels), size=min(num_queries, len(labels)), replace=False)
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(1.4 * (k + 1), 1.4 * len(queries)), squeeze=False)
    for row, q in enumerate(queries):
        sims = emb @ emb[q]
        sims[q] = -float("inf")
        nn_idx = sims.topk(k).indices.tolist()
        for col, idx in enumerate([int(q)] + nn_idx):
            ax = axes[row][col]
            ax.imshow(_to_image(images[idx]), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            color = "black" if col == 0 else ("green" if labels[idx] == labels[q] else "red")
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
