"""Image loading shared by all datasets: corrupt, truncated and missing image files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import ImageFile

from gca.data import CUB200, CorruptImageError, load_image


def test_truncated_jpeg_raises_naming_file(cub_root, builders, monkeypatch):
    ds = CUB200(cub_root, "train")
    path = ds.paths[2]
    # a larger JPEG so that truncation cuts into the entropy-coded data
    builders.write_image(Path(path), seed=7, size=(64, 64), fmt="JPEG")
    ds[2]  # intact
    builders.truncate_file(Path(path), 0.5)
    with pytest.raises(CorruptImageError, match="truncated or corrupt") as e:
        ds[2]
    assert path in str(e.value) and isinstance(e.value, OSError)
    # still strict when another library enabled LOAD_TRUNCATED_IMAGES globally
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(CorruptImageError):
        ds[2]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_not_an_image_and_missing_image(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(CorruptImageError, match="x.jpg"):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image(tmp_path / "nope.jpg")


def test_missing_image_file_named_on_load(cub_root):
    ds = CUB200(cub_root, "test")
    os.remove(ds.paths[0])
    assert ds.missing_files() == [ds.paths[0]]
    with pytest.raises(FileNotFoundError, match="Image file not found"):
        ds[0]
