"""Class-balanced ``C x K`` batch sampler for metric learning.

Every batch holds ``classes_per_batch`` (C) distinct classes with
``samples_per_class`` (K) items each, so pair/triplet miners and the GCA-HNG
graph always see positives and negatives.  Each epoch covers the whole
dataset: every index appears in at least one batch.

Use it as ``DataLoader(dataset, batch_sampler=sampler)`` and call
``sampler.set_epoch(epoch)`` before every epoch to get a new (deterministic)
shuffle.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["ClassBalancedBatchSampler"]


class ClassBalancedBatchSampler(Sampler[list[int]]):
    """Yield batches of ``C`` classes x ``K`` samples covering the data every epoch.

    Args:
        labels: Label of every dataset item (1-D; numpy array, list or tensor).  Only label *values* matter: items
            are grouped by label, never by position.
        classes_per_batch: ``C``, distinct classes per batch (``<=`` the number of classes).
        samples_per_class: ``K``, items per class in a batch.  Batch size is ``C * K``.
        seed: Base seed; the shuffle of an epoch depends only on ``(seed, epoch)``.
        drop_last: ``False`` (default): each class's items are cut into chunks of ``K`` and an incomplete last chunk
            is topped up with other items of the same class, so every item is seen each epoch.  ``True``: incomplete
            last chunks of classes with at least ``K`` items are dropped (a few items may be skipped in an epoch);
            classes with fewer than ``K`` items still contribute one chunk.
        class_sampling: ``"coverage"`` (default): the epoch construction below, which shows every item once per
            epoch, so a class appears in proportion to its size.  ``"uniform"``: as the authors' code, each batch
            draws its ``C`` classes uniformly at random (without replacement within the batch) and ``K`` random
            items of each, whatever the class sizes; an epoch has the same number of batches but need not show every
            item.
        num_batches: Fixed number of batches per epoch.  Must be at least the minimum needed to cover the data
            (``len`` of a sampler built without it); the extra batches are filled with additional random chunks.
        rank, world_size: data-parallel training over ``world_size`` processes.  Every process builds the same
            global batches of ``world_size * C`` classes (from ``seed`` and the epoch alone) and yields its own
            share: process ``rank`` gets the ``C`` classes ``rank * C`` to ``(rank + 1) * C - 1`` of each global
            batch.  So within a step the processes hold disjoint classes, and the processes' batches laid side
            by side in rank order are exactly the batches of the sampler built with ``classes_per_batch =
            world_size * C`` and ``world_size=1``.

    Epoch construction:
        1. Each class's items are shuffled and cut into chunks of ``K``.  A class
           with fewer than ``K`` items is repeated (all its items, as often as they
           fit, then a random subset without replacement) to fill one chunk;
           otherwise a chunk holds ``K`` distinct items.
        2. The number of batches is ``B = max(ceil(total_chunks / C),
           max chunks of one class)`` (or ``num_batches``); missing chunks are
           added for randomly chosen classes with spare room (a class never gets
           more than ``B`` chunks).
        3. Chunks are laid out class by class (classes in random order) and chunk
           ``j`` goes to batch ``j mod B``, so a batch never holds two chunks of the
           same class; the batch order is shuffled.

        Order within a batch is class-major: ``[K items of class a, K items of
        class b, ...]``; labels of consecutive groups of K are equal.

        ``len(sampler)`` is the number of batches per epoch (the same for every
        epoch).
    """

    def __init__(
        self,
        labels: Union[Sequence[int], np.ndarray, torch.Tensor],
        classes_per_batch: int,
        samples_per_class: int,
        seed: int = 0,
        drop_last: bool = False,
        num_batches: Optional[int] = None,
        class_sampling: str = "coverage",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
        if labels.size == 0:
            raise ValueError("labels is empty")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must be in [0, world_size) and world_size >= 1, got rank={rank}, "
                             f"world_size={world_size}")
        self.rank, self.world_size = int(rank), int(world_size)
        self.classes_per_rank = int(classes_per_batch)
        # the global batch: every process's classes
        self.classes_per_batch = int(classes_per_batch) * self.world_size
        self.samples_per_class = int(samples_per_class)
        if self.classes_per_rank < 1 or self.samples_per_class < 1:
            raise ValueError(
                f"classes_per_batch and samples_per_class must be >= 1, got {classes_per_batch}, {samples_per_class}"
            )
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        if class_sampling not in ("coverage", "uniform"):
            raise ValueError(f"class_sampling must be 'coverage' or 'uniform', got {class_sampling!r}")
        self.class_sampling = class_sampling
        self.epoch = 0

        classes, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(classes) + 1))
        self.classes = classes
        self._class_indices = [order[bounds[c] : bounds[c + 1]].astype(np.int64) for c in range(len(classes))]
        n_classes = len(classes)
        if self.classes_per_batch > n_classes:
            across = (f" ({self.classes_per_rank} per process x {self.world_size} processes)"
                      if self.world_size > 1 else "")
            raise ValueError(
                f"classes_per_batch={self.classes_per_batch}{across} exceeds the number of classes ({n_classes})"
            )
        k = self.samples_per_class
        counts = np.array([len(ix) for ix in self._class_indices])
        if self.drop_last:
            self._chunks = np.maximum(counts // k, 1)
        else:
            self._chunks = -(-counts // k)  # ceil
        total = int(self._chunks.sum())
        self.min_batches = max(math.ceil(total / self.classes_per_batch), int(self._chunks.max()))
        if num_batches is None:
            self.num_batches = self.min_batches
        else:
            if int(num_batches) < self.min_batches:
                raise ValueError(
                    f"num_batches={num_batches} is too small to cover the data; at least {self.min_batches} "
                    f"batches of {self.classes_per_batch} classes x {k} samples are needed"
                )
            self.num_batches = int(num_batches)

    @property
    def batch_size(self) -> int:
        """Items per batch of this process, ``C * K``."""
        return self.classes_per_rank * self.samples_per_class

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of ``epoch`` (deterministic given ``seed`` and ``epoch``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def _fill_chunk(self, rng: np.random.Generator, idx: np.ndarray, k: int) -> np.ndarray:
        """One chunk of ``k`` items of a class (repeating items when the class is smaller)."""
        n = len(idx)
        if n >= k:
            return rng.choice(idx, size=k, replace=False)
        reps = np.tile(rng.permutation(idx), k // n)
        rest = rng.choice(idx, size=k % n, replace=False)
        return np.concatenate([reps, rest])

    def _epoch_batches(self) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch]))
        k, c_per, n_batches = self.samples_per_class, self.classes_per_batch, self.num_batches
        n_classes = len(self._class_indices)
        if self.class_sampling == "uniform":
            return np.stack([np.concatenate([self._fill_chunk(rng, self._class_indices[c], k)
                                             for c in rng.choice(n_classes, size=c_per, replace=False)])
                             for _ in range(n_batches)])

        # 1. chunks of K per class
        per_class: list[list[np.ndarray]] = []
        for c, idx in enumerate(self._class_indices):
            n = len(idx)
            perm = rng.permutation(idx)
            n_full = n // k
            chunks = list(perm[: n_full * k].reshape(n_full, k)) if n_full else []
            rem = n - n_full * k
            if n < k:
                chunks = [self._fill_chunk(rng, idx, k)]
            elif rem and not self.drop_last:
                tail = perm[n_full * k :]
                top_up = rng.choice(perm[: n_full * k], size=k - rem, replace=False)
                chunks.append(np.concatenate([tail, top_up]))
            per_class.append(chunks)

        # 2. extra chunks so that B * C slots are filled, at most B chunks per class
        counts = np.array([len(ch) for ch in per_class])
        missing = n_batches * c_per - int(counts.sum())
        if missing > 0:
            spare = n_batches - counts
            slot_class = np.repeat(np.arange(n_classes), spare)
            picked = rng.choice(slot_class, size=missing, replace=False)
            for c in picked.tolist():
                per_class[c].append(self._fill_chunk(rng, self._class_indices[c], k))

        # 3. class-grouped layout, chunk j -> batch j mod B
        flat: list[np.ndarray] = []
        for c in rng.permutation(n_classes).tolist():
            flat.extend(per_class[c])
        grid = np.stack(flat).reshape(c_per, n_batches, k)  # grid[r, b] = chunk r*B + b
        batches = grid.transpose(1, 0, 2).reshape(n_batches, c_per * k)
        return batches[rng.permutation(n_batches)]

    def __iter__(self) -> Iterator[list[int]]:
        share = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        for batch in self._epoch_batches():
            yield batch[share].tolist()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(classes={len(self.classes)}, items={sum(len(i) for i in self._class_indices)}, "
            f"C={self.classes_per_rank}, K={self.samples_per_class}, batches={self.num_batches}, seed={self.seed}"
            + (f", rank={self.rank}, world_size={self.world_size})" if self.world_size > 1 else ")")
        )
