"""ClassBalancedBatchSampler: coverage, balance, determinism, small classes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gca.data import ClassBalancedBatchSampler


def _labels(counts, seed=0, shuffle=True):
    labels = np.repeat(np.arange(len(counts)), counts)
    if shuffle:  # positions must not matter
        labels = np.random.default_rng(seed).permutation(labels)
    return labels


def _check_batches(batches, labels, C, K):
    for b in batches:
        assert len(b) == C * K
        lab = labels[np.asarray(b)]
        groups = lab.reshape(C, K)
        # class-major: each group of K has one label, and the C groups differ
        assert (groups == groups[:, :1]).all()
        assert len(set(groups[:, 0].tolist())) == C


@pytest.mark.parametrize(
    "counts,C,K",
    [
        ([5, 3, 8, 1, 2, 7, 4, 4], 3, 2),
        ([1, 1, 1, 1, 1], 2, 4),  # every class smaller than K
        ([40, 2, 2, 2], 2, 3),  # one dominant class needs many batches
        ([6] * 10, 5, 3),
        ([3, 9], 2, 3),
    ],
)
def test_coverage_and_balance(counts, C, K):
    labels = _labels(counts)
    s = ClassBalancedBatchSampler(labels, C, K, seed=1)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        _check_batches(batches, labels, C, K)
        seen = set(i for b in batches for i in b)
        assert seen == set(range(len(labels))), "every index must appear each epoch"


def test_len_formula_and_minimum():
    labels = _labels([5, 3, 8, 1, 2, 7, 4, 4])
    s = ClassBalancedBatchSampler(labels, 3, 2)
    chunks = sum(-(-c // 2) for c in [5, 3, 8, 1, 2, 7, 4, 4])  # 3+2+4+1+1+4+2+2 = 19
    assert len(s) == max(-(-chunks // 3), 4) == 7
    assert s.batch_size == 6
    skewed = ClassBalancedBatchSampler(_labels([40, 2, 2, 2]), 2, 3)
    assert len(skewed) == 14  # the 40-image class needs ceil(40/3) batches


def test_determinism_and_epochs():
    labels = _labels([7, 5, 6, 9, 3, 4], seed=3)
    a = ClassBalancedBatchSampler(labels, 3, 2, seed=42)
    b = ClassBalancedBatchSampler(labels, 3, 2, seed=42)
    assert list(a) == list(b) == list(a)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    c = ClassBalancedBatchSampler(labels, 3, 2, seed=43)
    assert list(c) != list(ClassBalancedBatchSampler(labels, 3, 2, seed=42))


def test_small_classes_repeat_all_items():
    labels = np.array([0, 0, 1, 2, 2, 2])
    s = ClassBalancedBatchSampler(labels, 3, 5)
    (batch,) = list(s)
    counts = Counter(batch)
    # class 1 has a single image: repeated 5 times
    assert counts[2] == 5
    # class 0 has 2 images: each appears 2 or 3 times
    assert sorted([counts[0], counts[1]]) == [2, 3]
    # class 2 has 3 images: each at least once
    assert all(counts[i] >= 1 for i in (3, 4, 5))


def test_chunks_of_large_classes_hold_distinct_items():
    labels = _labels([10, 10, 10], shuffle=False)
    s = ClassBalancedBatchSampler(labels, 3, 4)
    for b in s:
        for g in np.asarray(b).reshape(3, 4):
            assert len(set(g.tolist())) == 4


def test_labels_decide_not_positions():
    """Non-contiguous, non-zero-based labels as a tensor."""
    labels = torch.tensor([10, 99, 10, 7, 99, 7, 7, 10, 99, 5])
    s = ClassBalancedBatchSampler(labels, 2, 2, seed=0)
    lab = labels.numpy()
    _check_batches(list(s), lab, 2, 2)
    assert set(s.classes.tolist()) == {5, 7, 10, 99}


def test_drop_last_and_num_batches():
    labels = _labels([5, 5, 5, 5])
    d = ClassBalancedBatchSampler(labels, 2, 2, drop_last=True)
    assert len(d) == 4  # 2 full chunks per class, 8 chunks / 2
    _check_batches(list(d), labels, 2, 2)
    n = ClassBalancedBatchSampler(labels, 2, 2, num_batches=10)
    batches = list(n)
    assert len(batches) == len(n) == 10
    _check_batches(batches, labels, 2, 2)
    assert set(i for b in batches for i in b) == set(range(20))
    with pytest.raises(ValueError, match="num_batches=3 is too small"):
        ClassBalancedBatchSampler(labels, 2, 2, num_batches=3)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="exceeds the number of classes"):
        ClassBalancedBatchSampler([0, 0, 1, 1], 3, 2)
    with pytest.raises(ValueError, match=">= 1"):
        ClassBalancedBatchSampler([0, 1], 2, 0)
    with pytest.raises(ValueError, match="1-D"):
        ClassBalancedBatchSampler(np.zeros((2, 2)), 1, 1)
    with pytest.raises(ValueError, match="empty"):
        ClassBalancedBatchSampler([], 1, 1)


def test_dataloader_batch_sampler():
    labels = _labels([4, 6, 3, 5], seed=5)
    ds = TensorDataset(torch.arange(len(labels)), torch.as_tensor(labels))
    s = ClassBalancedBatchSampler(labels, 2, 3, seed=0)
    loader = DataLoader(ds, batch_sampler=s)
    seen = set()
    n = 0
    for idx, y in loader:
        n += 1
        assert idx.shape == (6,) and torch.equal(y, torch.as_tensor(labels)[idx])
        seen |= set(idx.tolist())
    assert n == len(loader) == len(s)
    assert seen == set(range(len(labels)))


def test_large_scale_speed():
    """SOP-like label distribution: many classes of ~5 images."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(11318), rng.integers(2, 9, size=11318))
    s = ClassBalancedBatchSampler(labels, 32, 4)
    batches = list(s)
    assert len(batches) == len(s)
    assert len(set(i for b in batches for i in b)) == len(labels)


def test_uniform_class_sampling_ignores_class_size():
    labels = np.concatenate([np.zeros(60, int), np.repeat(np.arange(1, 11), 4)])    # one big class, ten small
    counts = {}
    for mode in ("coverage", "uniform"):
        sampler = ClassBalancedBatchSampler(labels, 4, 2, seed=0, class_sampling=mode)
        seen = np.zeros(11)
        for epoch in range(40):
            sampler.set_epoch(epoch)
            for batch in sampler:
                classes = np.unique(labels[batch])
                assert len(classes) == 4 and len(batch) == 8
                seen[classes] += 1
        counts[mode] = seen / seen.sum()
    assert counts["coverage"][0] > 3 * counts["coverage"][1:].mean()      # the big class dominates
    assert abs(counts["uniform"][0] - 1 / 11) < 0.02                     # every class alike
    assert np.abs(counts["uniform"][1:] - 1 / 11).max() < 0.02


# ------------------------------------------------------------------------------------ data-parallel shares
@pytest.mark.parametrize("class_sampling", ["coverage", "uniform"])
@pytest.mark.parametrize("world_size", [2, 3])
def test_process_shares_are_the_global_batches_split_by_class(class_sampling, world_size):
    """Each process's batch is its slice of the batch that one process with world_size x C classes would draw:
    laid side by side they are that batch, and within a step no class is in two processes."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 17, size=300) * 7 + 5           # label values, not positions, decide the classes
    c, k = 3, 4
    single = ClassBalancedBatchSampler(labels, c * world_size, k, seed=11, class_sampling=class_sampling)
    shares = [ClassBalancedBatchSampler(labels, c, k, seed=11, class_sampling=class_sampling, rank=r,
                                        world_size=world_size) for r in range(world_size)]
    for epoch in (0, 4):
        for s in [single, *shares]:
            s.set_epoch(epoch)
        whole = list(single)
        per_rank = [list(s) for s in shares]
        assert all(len(p) == len(whole) == len(shares[0]) for p in per_rank)
        for step, batch in enumerate(whole):
            parts = [p[step] for p in per_rank]
            assert all(len(part) == c * k for part in parts)
            assert sum(parts, []) == batch
            classes = [set(labels[part].tolist()) for part in parts]
            assert all(len(cl) == c for cl in classes)
            assert len(set().union(*classes)) == c * world_size


def test_process_share_checks():
    labels = np.repeat(np.arange(6), 4)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size\).*rank=2, world_size=2"):
        ClassBalancedBatchSampler(labels, 2, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"classes_per_batch=8 \(4 per process x 2 processes\) exceeds the number "
                                         r"of classes \(6\)"):
        ClassBalancedBatchSampler(labels, 4, 2, world_size=2)
    s = ClassBalancedBatchSampler(labels, 3, 2, rank=1, world_size=2)
    assert s.batch_size == 6 and "rank=1, world_size=2" in repr(s)
