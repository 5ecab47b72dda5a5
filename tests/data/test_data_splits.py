"""Class-disjoint validation carve-out: split_classes, carve_validation and ClassSubset."""

from __future__ import annotations

import numpy as np
import pytest

from gca.data import ClassSubset, ImageFolderDML, carve_validation, split_classes


def test_split_classes_disjoint_and_deterministic():
    labels = np.repeat(np.arange(10), [3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    tr, va = split_classes(labels, val_fraction=0.3, seed=1)
    assert len(np.unique(labels[va])) == 3 and len(np.unique(labels[tr])) == 7
    assert not set(labels[tr]) & set(labels[va])
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(labels)))
    tr2, va2 = split_classes(labels, val_fraction=0.3, seed=1)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    seeds = {tuple(np.unique(labels[split_classes(labels, 0.3, s)[1]])) for s in range(6)}
    assert len(seeds) > 1
    assert len(np.unique(labels[split_classes(labels, 0.01, 0)[1]])) == 1  # at least one val class
    with pytest.raises(ValueError, match="at least 2 classes"):
        split_classes([4, 4, 4])
    with pytest.raises(ValueError, match="val_fraction"):
        split_classes(labels, 0)


def test_carve_validation_on_dataset(folder):
    train = ImageFolderDML(folder, "all")
    sub_train, val = carve_validation(train, val_fraction=0.34, seed=0)
    assert isinstance(val, ClassSubset) and val.split == "val"
    assert len(sub_train) + len(val) == len(train)
    assert val.num_classes == 2 and sub_train.num_classes == 4
    assert sorted(set(val.labels.tolist())) == [0, 1]
    assert not set(val.class_names) & set(sub_train.class_names)
    for i in range(len(val)):
        _, y = val[i]
        assert y == val.labels[i]
        assert val.class_names[y] == train.class_names[train.labels[val.indices[i]]]
