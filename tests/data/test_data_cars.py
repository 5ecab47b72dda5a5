"""Cars196 loader on a tiny copy in the original format."""

from __future__ import annotations

import numpy as np
import pytest

from gca.data import AnnotationError, Cars196


def test_cars_split_and_labels(cars_root, builders, check_common):
    train = Cars196(cars_root, "train")
    test = Cars196(cars_root, "test")
    classes = np.array(builders.CARS_IMAGE_CLASSES)
    check_common(train, int((classes <= 2).sum()), 2)
    check_common(test, int((classes > 2).sum()), 2)
    assert train.class_names == builders.CARS_CLASS_NAMES[:2]
    assert test.class_names == builders.CARS_CLASS_NAMES[2:]
    assert test.class_ids == [3, 4]
    # file i+1 has class CARS_IMAGE_CLASSES[i]; labels follow the 'class' field, not the 'test' flag
    for path, lab in zip(test.paths, test.labels):
        i = int(path[-10:-4]) - 1
        assert classes[i] == test.class_ids[lab]
    assert train.paths[0].endswith("car_ims/000001.jpg")
    img, _ = test[0]
    assert img.mode == "RGB"


def test_cars_missing_annotation(cars_root):
    (cars_root / "cars196" / "cars_annos.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"cars_annos\.mat' not found; expected layout: "):
        Cars196(cars_root)


def test_cars_missing_field(cars_root, builders):
    path = cars_root / "cars196" / "cars_annos.mat"
    builders.write_cars_annos(path, builders.CARS_IMAGE_CLASSES, builders.CARS_CLASS_NAMES, drop_field="class")
    with pytest.raises(AnnotationError, match=r"cars_annos\.mat.*lacks field\(s\) \['class'\]"):
        Cars196(cars_root)


def test_cars_class_out_of_range(cars_root, builders):
    path = cars_root / "cars196" / "cars_annos.mat"
    builders.write_cars_annos(path, [1, 2, 9], builders.CARS_CLASS_NAMES)
    with pytest.raises(AnnotationError, match=r"annotation #3: class 9 exceeds"):
        Cars196(cars_root)


def test_cars_corrupt_mat(cars_root):
    (cars_root / "cars196" / "cars_annos.mat").write_bytes(b"MATLAB 5.0 MAT-file garbage")
    with pytest.raises(AnnotationError, match="cannot read MATLAB file"):
        Cars196(cars_root)
