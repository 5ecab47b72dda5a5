"""ImageFolderDML: class-folder scanning, class splits and errors."""

from __future__ import annotations

import numpy as np
import pytest

from gca.data import ImageFolderDML, create_dataset


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
