"""Stanford Online Products loader on a tiny copy in the original format."""

from __future__ import annotations

import pytest

from gca.data import AnnotationError, StanfordOnlineProducts


def test_sop_split_and_labels(sop_root, builders, check_common):
    train = StanfordOnlineProducts(sop_root, "train")
    test = StanfordOnlineProducts(sop_root, "test")
    check_common(train, 5, 3)
    check_common(test, 3, 2)
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
