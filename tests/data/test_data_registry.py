"""Dataset registry: names, aliases, splits and unknown names."""

from __future__ import annotations

import pytest

from gca.data import create_dataset, dataset_splits, list_datasets


def test_registry(cub_root, sop_root):
    assert list_datasets() == ["caltech101", "cars196", "cub200", "imagefolder", "inshop", "omniglot", "sop"]
    assert type(create_dataset("CUB-200", root=cub_root)).__name__ == "CUB200"
    assert len(create_dataset("cub", root=cub_root, split="test")) == 7
    assert create_dataset("Stanford_Online_Products", root=sop_root, split="test").num_classes == 2
    assert dataset_splits("inshop") == ("train", "query", "gallery")
    with pytest.raises(KeyError, match="unknown dataset 'mnist'.*cub200"):
        create_dataset("mnist")
