"""CUB-200-2011, Cars196, SOP and In-Shop loaders on tiny copies in the original formats."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from gca.data import (
    CUB200,
    AnnotationError,
    Cars196,
    CorruptImageError,
    InShop,
    StanfordOnlineProducts,
    build_transforms,
    create_dataset,
    load_image,
)


def _check_common(ds, n_items, n_classes):
    assert len(ds) == n_items
    assert ds.num_classes == n_classes == len(ds.class_names)
    assert isinstance(ds.labels, np.ndarray) and ds.labels.dtype == np.int64 and ds.labels.ndim == 1
    assert sorted(set(ds.labels.tolist())) == list(range(n_classes))
    img, label = ds[0]
    assert isinstance(label, int) and label == ds.labels[0]
    return img


# ------------------------------------------------------------------------ CUB


def test_cub_split_and_labels(cub_root, builders):
    train = CUB200(cub_root, "train")
    test = CUB200(cub_root, "test")
    counts = builders.CUB_COUNTS
    img = _check_common(train, counts[0] + counts[1], 2)
    _check_common(test, counts[2] + counts[3], 2)
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    assert train.class_ids == [1, 2] and test.class_ids == [3, 4]
    assert train.class_names == builders.CUB_CLASSES[:2]
    assert test.class_names == builders.CUB_CLASSES[2:]
    # label of each item follows the class folder of its path
    for path, lab in zip(test.paths, test.labels):
        assert builders.CUB_CLASSES[2 + lab] in path
    assert train.labels.tolist() == [0, 0, 0, 1, 1]
    everything = CUB200(cub_root, "all")
    assert len(everything) == sum(counts) and everything.num_classes == 4


def test_cub_root_may_be_dataset_folder_and_transform(cub_root):
    ds = CUB200(cub_root / "CUB_200_2011", "train", transform=build_transforms("imagenet", train=False, image_size=32))
    x, y = ds[1]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 32, 32) and y == 0


def test_cub_missing_annotation(cub_root):
    (cub_root / "CUB_200_2011" / "image_class_labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"image_class_labels\.txt' not found; expected layout: ") as e:
        CUB200(cub_root, "train")
    assert "CUB_200_2011/classes.txt" in str(e.value)


def test_cub_missing_everything(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="CUB_200_2011/images.txt"):
        CUB200(tmp_path / "empty")


def test_cub_malformed_line(cub_root):
    f = cub_root / "CUB_200_2011" / "image_class_labels.txt"
    lines = f.read_text().splitlines()
    lines[3] = "4 two"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"image_class_labels\.txt, line 4.*class id must be an integer") as e:
        CUB200(cub_root)
    assert isinstance(e.value, ValueError)


def test_cub_wrong_field_count(cub_root):
    f = cub_root / "CUB_200_2011" / "image_class_labels.txt"
    f.write_text(f.read_text() + "99 1 extra\n")
    with pytest.raises(ValueError, match=r"line 13: expected 2 whitespace-separated fields"):
        CUB200(cub_root)


def test_cub_unknown_class(cub_root):
    f = cub_root / "CUB_200_2011" / "image_class_labels.txt"
    f.write_text(f.read_text().replace("1 1\n", "1 7\n", 1))
    with pytest.raises(ValueError, match=r"line 1: class id 7 is not listed in classes.txt"):
        CUB200(cub_root)


def test_nonexistent_root(tmp_path):
    missing = tmp_path / "does" / "not" / "exist"
    with pytest.raises(FileNotFoundError, match="GCA_DATA_ROOT") as e:
        CUB200(missing)
    assert str(missing) in str(e.value)
    with pytest.raises(FileNotFoundError, match="exist"):
        create_dataset("sop", root=missing)


def test_bad_split(cub_root):
    with pytest.raises(ValueError, match="unknown split 'val'"):
        CUB200(cub_root, "val")


# -------------------------------------------------------------- corrupt images


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


# ---------------------------------------------------------------------- Cars196


def test_cars_split_and_labels(cars_root, builders):
    train = Cars196(cars_root, "train")
    test = Cars196(cars_root, "test")
    classes = np.array(builders.CARS_IMAGE_CLASSES)
    _check_common(train, int((classes <= 2).sum()), 2)
    _check_common(test, int((classes > 2).sum()), 2)
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


# -------------------------------------------------------------------------- SOP


def test_sop_split_and_labels(sop_root, builders):
    train = StanfordOnlineProducts(sop_root, "train")
    test = StanfordOnlineProducts(sop_root, "test")
    _check_common(train, 5, 3)
    _check_common(test, 3, 2)
    assert train.class_ids == [1, 2, 5] and test.class_ids == [7, 9]
    assert train.labels.tolist() == [0, 0, 1, 2, 2]
    assert test.labels.tolist() == [0, 1, 1]
    assert train.super_labels.tolist() == [0, 0, 0, 1, 1]
    assert train.super_class_names == ["bicycle_final", "chair_final"]
    assert not set(train.class_ids) & set(test.class_ids)


def test_sop_malformed_line(sop_root):
    f = sop_root / "Stanford_Online_Products" / "Ebay_test.txt"
    f.write_text(f.read_text() + "9 10 x chair_final/a.JPG\n")
    with pytest.raises(AnnotationError, match=r"Ebay_test\.txt, line 5: super_class_id must be an integer"):
        StanfordOnlineProducts(sop_root, "test")
    f.write_text("image_id class_id super_class_id path\n1 2 3\n")
    with pytest.raises(AnnotationError, match=r"line 2: expected 4 fields"):
        StanfordOnlineProducts(sop_root, "test")


def test_sop_missing_header_and_file(sop_root):
    f = sop_root / "Stanford_Online_Products" / "Ebay_train.txt"
    f.write_text("\n".join(f.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(AnnotationError, match=r"line 1: expected header"):
        StanfordOnlineProducts(sop_root, "train")
    f.unlink()
    with pytest.raises(FileNotFoundError, match=r"Ebay_train\.txt"):
        StanfordOnlineProducts(sop_root, "train")


# ---------------------------------------------------------------------- In-Shop


def test_inshop_splits_share_test_mapping(inshop_root):
    train = InShop(inshop_root, "train")
    query = InShop(inshop_root, "query")
    gallery = InShop(inshop_root, "gallery")
    _check_common(train, 3, 2)
    assert train.class_names == ["id_00000002", "id_00000080"]
    assert len(query) == 2 and len(gallery) == 4
    assert query.class_names == gallery.class_names == ["id_00000005", "id_00000010", "id_00000042"]
    assert query.num_classes == gallery.num_classes == 3
    # same item -> same label across query and gallery
    for q_path, q_lab in zip(query.paths, query.labels):
        item = q_path.split("/")[-2]
        g_labels = {int(lab) for p, lab in zip(gallery.paths, gallery.labels) if p.split("/")[-2] == item}
        assert g_labels == {int(q_lab)}
    assert gallery.labels.tolist() == [1, 1, 0, 2]
    img, lab = gallery[3]
    assert img.mode == "RGB" and lab == 2
    assert create_dataset("in-shop", root=inshop_root, split="gallery").labels.tolist() == [1, 1, 0, 2]


def test_inshop_errors(inshop_root, builders):
    f = inshop_root / "inshop" / "Eval" / "list_eval_partition.txt"
    builders.write_inshop_partition(f, builders.INSHOP_ROWS, count=99)
    with pytest.raises(AnnotationError, match=r"line 1: declares 99 images but lists 9"):
        InShop(inshop_root)
    rows = list(builders.INSHOP_ROWS)
    rows[4] = (rows[4][0], rows[4][1], "validation")
    builders.write_inshop_partition(f, rows)
    with pytest.raises(AnnotationError, match=r"list_eval_partition\.txt, line 7: evaluation_status must be one of"):
        InShop(inshop_root, "query")
    f.unlink()
    with pytest.raises(FileNotFoundError, match=r"Eval/list_eval_partition\.txt"):
        InShop(inshop_root)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        InShop(inshop_root, "test")
