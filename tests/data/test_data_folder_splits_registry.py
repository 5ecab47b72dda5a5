"""ImageFolderDML, validation carve-out, registry and data-root resolution."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gca.data import (
    ClassSubset,
    ImageFolderDML,
    carve_validation,
    create_dataset,
    dataset_splits,
    list_datasets,
    resolve_data_root,
    split_classes,
)
from gca.data.root import repo_root


@pytest.fixture
def folder(tmp_path, builders):
    root = tmp_path / "flowers"
    for i, name in enumerate(["tulip", "Rose", "daisy", "iris", "lily", "aster"]):
        for j in range(i + 1):
            builders.write_image(root / name / f"{j}.png" if j % 2 else root / name / f"{j}.jpg", seed=i * 7 + j)
    (root / "notes.txt").write_text("not a class")
    (root / ".hidden").mkdir()
    return root


# -------------------------------------------------------------- ImageFolderDML


def test_imagefolder_default_split(folder):
    train = ImageFolderDML(folder, "train")
    test = ImageFolderDML(folder, "test")
    assert train.all_class_names == ["Rose", "aster", "daisy", "iris", "lily", "tulip"]
    assert train.class_names == ["Rose", "aster", "daisy"]
    assert test.class_names == ["iris", "lily", "tulip"]
    assert np.bincount(train.labels).tolist() == [2, 6, 3]
    assert np.bincount(test.labels).tolist() == [4, 5, 1]
    img, lab = test[len(test) - 1]
    assert img.mode == "RGB" and lab == 2
    assert len(ImageFolderDML(folder, "all")) == 21


def test_imagefolder_explicit_and_random_split(folder):
    tr = ImageFolderDML(folder, "train", train_classes=["tulip", 0])
    te = ImageFolderDML(folder, "test", train_classes=["tulip", 0])
    assert tr.class_names == ["Rose", "tulip"]
    assert set(te.class_names) == {"aster", "daisy", "iris", "lily"}
    a = ImageFolderDML(folder, "train", train_fraction=0.34, seed=3)
    b = ImageFolderDML(folder, "train", train_fraction=0.34, seed=3)
    c = ImageFolderDML(folder, "test", train_fraction=0.34, seed=3)
    assert a.class_names == b.class_names and len(a.class_names) == 2
    assert not set(a.class_names) & set(c.class_names) and len(c.class_names) == 4
    assert ImageFolderDML(folder, "train", image_mode="L")[0][0].mode == "L"
    with pytest.raises(ValueError, match="not one of the 6 class folders"):
        ImageFolderDML(folder, train_classes=["cactus"])
    with pytest.raises(ValueError, match="train_fraction"):
        ImageFolderDML(folder, train_fraction=1.0)


def test_imagefolder_errors(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="not found"):
        ImageFolderDML(tmp_path / "nothing")
    (folder / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_class.*holds no image"):
        ImageFolderDML(folder)
    assert "empty_class" not in ImageFolderDML(folder, "all", allow_empty=True).class_names
    with pytest.raises(ValueError, match="needs root"):
        create_dataset("imagefolder")


# ---------------------------------------------------------- validation carve-out


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


# ---------------------------------------------------------------------- registry


def test_registry(cub_root, sop_root):
    assert list_datasets() == ["caltech101", "cars196", "cub200", "imagefolder", "inshop", "omniglot", "sop"]
    assert type(create_dataset("CUB-200", root=cub_root)).__name__ == "CUB200"
    assert len(create_dataset("cub", root=cub_root, split="test")) == 7
    assert create_dataset("Stanford_Online_Products", root=sop_root, split="test").num_classes == 2
    assert dataset_splits("inshop") == ("train", "query", "gallery")
    with pytest.raises(KeyError, match="unknown dataset 'mnist'.*cub200"):
        create_dataset("mnist")


# -------------------------------------------------------------------- data root


def test_resolve_data_root_explicit_and_env(tmp_path, monkeypatch):
    assert resolve_data_root(tmp_path) == tmp_path.resolve()
    monkeypatch.setenv("GCA_DATA_ROOT", str(tmp_path))
    assert resolve_data_root() == tmp_path.resolve()
    assert resolve_data_root(tmp_path / ".") == tmp_path.resolve()  # argument wins
    monkeypatch.setenv("GCA_DATA_ROOT", str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match=r"from environment variable GCA_DATA_ROOT") as e:
        resolve_data_root()
    assert str(tmp_path / "gone") in str(e.value)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError):
        resolve_data_root(f)
    with pytest.raises(FileNotFoundError, match="given as argument"):
        resolve_data_root(tmp_path / "missing")


def test_resolve_data_root_relative_to_cwd(tmp_path, monkeypatch):
    work = tmp_path / "proj"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    work.mkdir()
    monkeypatch.chdir(work)
    assert resolve_data_root() == (tmp_path / "shared" / "data").resolve()


def test_resolve_data_root_default_and_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = repo_root() / ".." / "shared" / "data"
    assert repo_root() == Path(__file__).resolve().parents[2]
    if expected.is_dir():
        assert resolve_data_root() == expected.resolve()
    monkeypatch.setattr("gca.data.root.repo_root", lambda: tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="No data root found.*GCA_DATA_ROOT"):
        resolve_data_root()
    assert os.getcwd() == str(tmp_path)
