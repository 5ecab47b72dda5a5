"""Caltech-101 loader: real split and tiny layouts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gca.data import Caltech101, build_transforms, create_dataset


def test_caltech_real_split(real_data):
    if not (real_data / "caltech101" / "101_ObjectCategories").is_dir():
        pytest.skip("real Caltech-101 not present")
    train = Caltech101(real_data, "train")
    test = create_dataset("caltech101", root=real_data, split="test")
    assert train.num_classes == 50 and test.num_classes == 51
    assert "BACKGROUND_Google" not in train.class_names + test.class_names
    names = sorted(p.name for p in (real_data / "caltech101" / "101_ObjectCategories").iterdir() if p.is_dir())
    names.remove("BACKGROUND_Google")
    assert train.class_names == names[:50] and test.class_names == names[50:]
    assert train.class_names[:4] == ["Faces", "Faces_easy", "Leopards", "Motorbikes"]
    assert len(train) + len(test) == 8677
    categories = real_data / "caltech101" / "101_ObjectCategories"
    assert np.array_equal(np.bincount(train.labels), [len(list((categories / n).glob("*.jpg"))) for n in names[:50]])
    img, label = train[0]
    assert img.mode == "RGB" and label == 0
    # car_side holds grayscale JPEGs: they come back as RGB
    if "car_side" in train.class_names:
        c = train.class_names.index("car_side")
        i = int(np.flatnonzero(train.labels == c)[0])
        with Image.open(train.paths[i]) as raw:
            raw_mode = raw.mode
        img, lab = train[i]
        assert img.mode == "RGB" and lab == c
        assert raw_mode == "L"
    tf = build_transforms("imagenet", train=True, image_size=64)
    x, _ = Caltech101(real_data, "test", transform=tf)[3]
    assert x.shape == (3, 64, 64)


def test_caltech_tiny_layouts(tmp_path, builders):
    cats = tmp_path / "caltech101" / "101_ObjectCategories"
    names = ["BACKGROUND_Google", "Faces", "ant", "beaver", "yin_yang"]
    for i, n in enumerate(names):
        for j in range(2 + i):
            builders.write_image(cats / n / f"image_{j + 1:04d}.jpg", seed=i * 10 + j,
                                 mode="L" if n == "ant" else "RGB")
    train, test = Caltech101(tmp_path, "train"), Caltech101(tmp_path, "test")
    assert train.class_names == ["Faces", "ant"] and test.class_names == ["beaver", "yin_yang"]
    assert len(train) == 3 + 4 and len(test) == 5 + 6
    assert train[5][0].mode == "RGB" and train[5][1] == 1
    # root may also be the caltech101 folder or the categories folder itself
    assert Caltech101(tmp_path / "caltech101", "test").class_names == test.class_names
    assert Caltech101(cats, "all").num_classes == 4
    assert Caltech101(tmp_path, "all", include_background=True).num_classes == 5
    with pytest.raises(FileNotFoundError, match="101_ObjectCategories"):
        Caltech101(tmp_path / "caltech101" / "101_ObjectCategories" / "ant")
