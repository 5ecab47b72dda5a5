"""CUB-200-2011 loader on a tiny copy in the original format."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gca.data import CUB200, AnnotationError, build_transforms, create_dataset


def test_cub_split_and_labels(cub_root, builders, check_common):
    train = CUB200(cub_root, "train")
    test = CUB200(cub_root, "test")
    counts = builders.CUB_COUNTS
    img = check_common(train, counts[0] + counts[1], 2)
    check_common(test, counts[2] + counts[3], 2)
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
