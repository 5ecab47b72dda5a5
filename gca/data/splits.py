"""Class-disjoint validation carve-out from a training split.

Model selection in zero-shot retrieval must not look at the test classes.
:func:`split_classes` divides the *training* classes into two disjoint class
sets (train / validation); :class:`ClassSubset` wraps a dataset restricted to
some indices and renumbers the labels to ``0..C'-1``.

Example::

    train_full = create_dataset("cub200", split="train", transform=tf)
    train, val = carve_validation(train_full, val_fraction=0.2, seed=0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
from torch.utils.data import Dataset

__all__ = ["split_classes", "ClassSubset", "carve_validation"]


def split_classes(
    labels: Union[Sequence[int], np.ndarray], val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split items into two class-disjoint index sets.

    Args:
        labels: Label of every item (any integer class ids).
        val_fraction: Fraction of the *classes* that go to validation: ``round(val_fraction * C)``, clamped to
            ``1..C-1``.
        seed: Seed of the random class choice (deterministic for a given seed).

    Returns:
        (train_idx, val_idx): Sorted ``int64`` index arrays into ``labels``; every class's items are all in one of
            them, and together they cover every item once.

    Raises:
        ValueError: If there are fewer than two classes or ``val_fraction`` is not in (0, 1).
    """
    labels = np.asarray(labels).reshape(-1)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    classes = np.unique(labels)
    n = len(classes)
    if n < 2:
        raise ValueError(f"need at least 2 classes to carve out a class-disjoint validation split, got {n}")
    n_val = min(max(int(round(val_fraction * n)), 1), n - 1)
    rng = np.random.default_rng(seed)
    val_classes = classes[rng.permutation(n)[:n_val]]
    is_val = np.isin(labels, val_classes)
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)


class ClassSubset(Dataset):
    """A subset of a labelled dataset with labels renumbered to ``0..C'-1``.

    Exposes ``labels`` (new contiguous ``int64`` ids, in the order of the
    original label values), ``num_classes``, ``class_names`` and
    ``original_classes`` (the original label of each new class).

    Args:
        dataset: Dataset returning ``(x, label)`` and exposing ``.labels`` (and optionally ``.class_names``).
        indices: Item indices to keep (in this order).
        split: Name of the subset (default: the parent's ``split``).
    """

    def __init__(self, dataset, indices: Union[Sequence[int], np.ndarray], split: Optional[str] = None) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        parent = np.asarray(dataset.labels, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(parent)):
            raise IndexError(f"subset indices out of range 0..{len(parent) - 1}")
        sub = parent[self.indices]
        self.original_classes, inverse = np.unique(sub, return_inverse=True)
        self.labels = inverse.reshape(-1).astype(np.int64)
        self._label_map = {int(o): i for i, o in enumerate(self.original_classes)}
        names = getattr(dataset, "class_names", None)
        self.class_names = [names[o] if names is not None else str(o) for o in self.original_classes.tolist()]
        self.split = split if split is not None else getattr(dataset, "split", None)
        self.name = getattr(dataset, "name", type(dataset).__name__)

    @property
    def num_classes(self) -> int:
        return len(self.original_classes)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int):
        x, y = self.dataset[int(self.indices[i])]
        return x, self._label_map[int(y)]

    def __repr__(self) -> str:
        return f"ClassSubset({self.dataset!r}, items={len(self)}, classes={self.num_classes})"


def carve_validation(dataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[ClassSubset, ClassSubset]:
    """Split a training dataset into class-disjoint ``(train, val)`` subsets.

    See :func:`split_classes`.  The subsets are named ``split="train_minus_val"``
    and ``split="val"``.  Both subsets share the parent's transform; to
    evaluate validation without augmentation, build a second parent dataset
    with the test transform and wrap it with ``ClassSubset(parent, val_idx)``
    using the indices from :func:`split_classes`.
    """
    train_idx, val_idx = split_classes(dataset.labels, val_fraction, seed)
    return ClassSubset(dataset, train_idx, split="train_minus_val"), ClassSubset(dataset, val_idx, split="val")
