"""Tiny data and configs for tests that train for real: seconds-long runs on an image folder they write."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image


def write_pattern_folder(root: Path, classes: int = 12, per_class: int = 6, size: int = 20, seed: int = 0) -> Path:
    """An ImageFolder of grayscale PNGs, one sub-folder per class; each class is a noisy version (10% of the
    pixels flipped) of its own random binary pattern, so a small CNN learns it within a few steps."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c in range(classes):
        pattern = rng.random((size, size)) > 0.5
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            noisy = pattern ^ (rng.random((size, size)) < 0.1)
            Image.fromarray((noisy * 255).astype(np.uint8), mode="L").save(folder / f"{i}.png")
    return root


def tiny_run_overrides(tmp_path: Path, *extra: str) -> List[str]:
    """Config overrides for a run on ``write_pattern_folder(tmp_path / "data")`` (written on first use): half
    the classes train (a third of those held out for validation), 2 classes x 3 samples per batch, the
    Omniglot CNN at 16 px, D = 16, one GCA layer, 3 epochs, no plots; ``extra`` overrides come last and win."""
    root = Path(tmp_path) / "data"
    if not root.exists():
        write_pattern_folder(root)
    return [f"data.root={root}", "data.dataset=imagefolder", "data.dataset_kwargs={image_mode: L, train_fraction: 0.5}",
            "data.transform=omniglot", "data.image_size=16", "data.val_fraction=0.34", "data.classes_per_batch=2",
            "data.samples_per_class=3", "model.backbone=omniglot_cnn", "model.embedding_dim=16", "gca.num_layers=1",
            "gca.heads=2", "solver.epochs=3", "eval.batch_size=64", "plots=false",
            f"output_dir={Path(tmp_path) / 'runs'}", *extra]


def comparable_records(run_dir: Path) -> List[dict]:
    """A run's ``metrics.jsonl`` without what legitimately differs between two runs of one config: wall times,
    the run's name and the notes a resumed run adds."""
    records = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] != "resume":
            record.pop("seconds", None)
            record.pop("name", None)
            records.append(record)
    return records
