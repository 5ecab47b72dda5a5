"""In-Shop loader on a tiny copy in the original format."""

from __future__ import annotations

import pytest

from gca.data import AnnotationError, InShop, create_dataset


def test_inshop_splits_share_test_mapping(inshop_root, check_common):
    train = InShop(inshop_root, "train")
    query = InShop(inshop_root, "query")
    gallery = InShop(inshop_root, "gallery")
    check_common(train, 3, 2)
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
