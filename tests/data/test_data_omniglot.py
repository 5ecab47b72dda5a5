"""Omniglot loader: npz and official folder layout, cache, download and errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gca.data import Omniglot, build_transforms, clear_omniglot_cache, create_dataset

# ------------------------------------------------------------------- real data


def test_omniglot_real_npz(real_data):
    if not (real_data / "omniglot" / "images_background.npz").is_file():
        pytest.skip("real Omniglot npz not present")
    train = create_dataset("omniglot", root=real_data, split="train")
    test = create_dataset("omniglot", root=real_data, split="test")
    assert train.format == "npz"
    assert (len(train), train.num_classes) == (19280, 964)
    assert (len(test), test.num_classes) == (13180, 659)
    assert np.array_equal(np.bincount(train.labels), np.full(964, 20))
    assert train.labels.dtype == np.int64 and train.labels[:21].tolist() == [0] * 20 + [1]
    img, label = train[25]
    assert isinstance(img, Image.Image) and img.mode == "L" and img.size == (105, 105)
    assert label == 1
    values = np.asarray(img)
    assert set(np.unique(values).tolist()) == {0, 255}
    assert (values == 255).mean() > 0.5  # mostly background, ink dark by default
    inv = Omniglot(real_data, "train", invert=True)[25][0]
    assert np.array_equal(np.asarray(inv), 255 - values)
    # raw array agrees with the file: True = background
    with np.load(real_data / "omniglot" / "images_background.npz") as z:
        raw = z["images"][1, 5]
    assert np.array_equal(values == 255, raw)
    x, y = Omniglot(real_data, "test", transform=build_transforms("omniglot", train=True))[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 0


# ---------------------------------------------------------- tiny npz / folders


def test_omniglot_tiny_npz_lazy_and_cached(tmp_path, builders):
    root = builders.build_omniglot_npz(tmp_path)
    clear_omniglot_cache()
    ds = Omniglot(root, "train")
    assert ds._images is None  # nothing decoded before first access
    assert (len(ds), ds.num_classes) == (12, 3)
    img, lab = ds[5]
    assert lab == 1 and img.size == (10, 10)
    assert set(np.unique(np.asarray(img)).tolist()) <= {0, 255}
    ds2 = Omniglot(root, "background")
    ds2[0]
    assert ds2.images is ds.images  # shared through the cache
    nocache = Omniglot(root, "train", cache=False)
    assert nocache.images is not ds.images and np.array_equal(nocache.images, ds.images)
    # pickling (DataLoader workers) drops the big array; it is reloaded lazily
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._images is None and np.array_equal(np.asarray(clone[5][0]), np.asarray(img))
    ev = Omniglot(root, "evaluation")
    assert ev.num_classes == 2 and ev.split == "test"
    clear_omniglot_cache()


def test_omniglot_folder_layout(omniglot_folder_root, builders):
    train = Omniglot(omniglot_folder_root, "train")
    test = create_dataset("omniglot", root=omniglot_folder_root, split="test")
    assert train.format == "folder"
    n_bg = sum(builders.OMNIGLOT_BG.values())
    assert (len(train), train.num_classes) == (n_bg * builders.OMNIGLOT_DRAWINGS, n_bg)
    assert train.class_names[:3] == [
        "Alphabet_of_the_Magi/character01", "Alphabet_of_the_Magi/character02", "Greek/character01"
    ]
    assert test.class_names == ["Atlantean/character01", "Atlantean/character02"]
    assert np.array_equal(np.bincount(train.labels), np.full(n_bg, builders.OMNIGLOT_DRAWINGS))
    img, lab = train[4]
    assert img.mode == "L" and img.size == (105, 105) and lab == 1
    with Image.open(train.paths[4]) as raw:
        expected = np.asarray(raw.convert("L"))
    assert np.array_equal(np.asarray(img), expected)
    assert np.array_equal(np.asarray(Omniglot(omniglot_folder_root, "train", invert=True)[4][0]), 255 - expected)


def test_omniglot_prefers_npz_and_source_option(tmp_path, builders):
    root = builders.build_omniglot_folders(builders.build_omniglot_npz(tmp_path))
    assert Omniglot(root, "train").format == "npz"
    assert Omniglot(root, "train", source="folder").format == "folder"


def test_omniglot_missing_gives_instructions(tmp_path):
    (tmp_path / "omniglot").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        Omniglot(tmp_path, "test")
    msg = str(e.value)
    assert "images_evaluation" in msg
    assert "omniglot/images_evaluation.npz" in msg and "<alphabet>/<character>" in msg and "download=True" in msg
    with pytest.raises(ValueError, match="unknown split"):
        Omniglot(tmp_path, "val")


def test_omniglot_download_uses_torchvision(tmp_path, monkeypatch, builders):
    """download=True delegates to torchvision.datasets.Omniglot (mocked: no network in tests)."""
    import torchvision.datasets

    calls = []

    class FakeTV:
        def __init__(self, root, background, download):
            calls.append((root, background, download))
            set_name = "images_background" if background else "images_evaluation"
            builders.write_omniglot_png(
                Path(root) / "omniglot-py" / set_name / "Alpha" / "character01" / "a.png", 1
            )

    monkeypatch.setattr(torchvision.datasets, "Omniglot", FakeTV)
    ds = Omniglot(tmp_path, "test", download=True)
    assert calls == [(str(tmp_path / "omniglot"), False, True)]
    assert ds.format == "folder" and ds.class_names == ["Alpha/character01"]
    # found again without downloading
    assert Omniglot(tmp_path, "test").format == "folder" and len(calls) == 1


def test_omniglot_bad_npz(tmp_path):
    (tmp_path / "omniglot").mkdir()
    np.savez(tmp_path / "omniglot" / "images_background.npz",
             images=np.zeros((2, 3, 4, 4), bool), labels=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"images_background\.npz.*shape"):
        Omniglot(tmp_path, "train")
    np.savez(tmp_path / "omniglot" / "images_background.npz", pictures=np.zeros((2, 3, 4, 4), bool))
    with pytest.raises(ValueError, match="array 'images' not found"):
        Omniglot(tmp_path, "train")


# ------------------------------------------------------------------ end to end


def test_omniglot_real_end_to_end_loader(real_data):
    if not (real_data / "omniglot" / "images_evaluation.npz").is_file():
        pytest.skip("real Omniglot npz not present")
    from torch.utils.data import DataLoader

    from gca.data import ClassBalancedBatchSampler

    ds = Omniglot(real_data, "test", transform=build_transforms("omniglot", train=True))
    sampler = ClassBalancedBatchSampler(ds.labels, classes_per_batch=8, samples_per_class=4, seed=0)
    assert len(sampler) == 659 * 5 // 8 + (659 * 5 % 8 > 0)  # 20 drawings = 5 chunks of 4 per class
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=1)
    x, y = next(iter(loader))
    assert x.shape == (32, 1, 28, 28) and y.shape == (32,)
    assert (y.view(8, 4) == y.view(8, 4)[:, :1]).all() and len(set(y.tolist())) == 8
