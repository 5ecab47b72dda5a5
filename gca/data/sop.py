"""Stanford Online Products (Oh Song et al., 2016) in its original layout.

Expected layout (the extracted ``Stanford_Online_Products.zip``)::

    <root>/Stanford_Online_Products/
        Ebay_train.txt   header "image_id class_id super_class_id path", then
                         "<image_id> <class_id> <super_class_id> <path>"
        Ebay_test.txt    same format
        bicycle_final/111085122871_0.JPG ...

``root`` may also point directly at the ``Stanford_Online_Products`` folder.

Split: the official one -- ``Ebay_train.txt`` (11,318 products, 59,551 images)
for training, ``Ebay_test.txt`` (11,316 products, 60,502 images) for testing;
the two are class-disjoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Optional, Union

import numpy as np

from gca.data.base import (
    ImageListDataset,
    annotation_error,
    check_split,
    contiguous_labels,
    first_existing_dir,
    missing_annotation,
    parse_int,
    read_annotation_lines,
)
from gca.data.root import resolve_data_root

__all__ = ["StanfordOnlineProducts", "SOP_LAYOUT"]

# one entry per line (errors show them on one line, separated by ";")
SOP_LAYOUT = "\n".join([
    "  <root>/Stanford_Online_Products/Ebay_train.txt and Ebay_test.txt  (header 'image_id class_id "
    "super_class_id path', then '<image_id> <class_id> <super_class_id> <path>')",
    "  <root>/Stanford_Online_Products/<super_class>_final/<image>.JPG",
    "(the extracted Stanford_Online_Products.zip; prepare with "
    "`python -m gca.data.prepare sop Stanford_Online_Products.zip <root>`)",
])

_DIR_NAMES = ("Stanford_Online_Products", "sop", "SOP", "")
_HEADER = ["image_id", "class_id", "super_class_id", "path"]


class StanfordOnlineProducts(ImageListDataset):
    """Stanford Online Products with the official class-disjoint train/test split.

    Labels are contiguous within the split, ordered by original ``class_id``
    (``class_ids`` holds the original ids).  ``super_labels`` holds the
    contiguous super-class id (12 super classes) of each image and
    ``super_class_names`` their names (the image folder, e.g.
    ``"bicycle_final"``).

    Args:
        root: Data root holding ``Stanford_Online_Products/`` (or that folder itself); ``None`` uses
            :func:`gca.data.resolve_data_root`.
        split: ``"train"`` (``Ebay_train.txt``) or ``"test"`` (``Ebay_test.txt``).
        transform: Callable applied to the RGB PIL image.
    """

    name = "sop"
    splits = ("train", "test")

    def __init__(
        self,
        root: Optional[Union[str, os.PathLike]] = None,
        split: str = "train",
        transform: Optional[Callable] = None,
    ) -> None:
        split = check_split(split, self.splits, "Stanford Online Products")
        super().__init__(split, transform)
        data_root = resolve_data_root(root)
        fname = "Ebay_train.txt" if split == "train" else "Ebay_test.txt"
        base = first_existing_dir(data_root, _DIR_NAMES, fname)
        if base is None:
            raise missing_annotation(
                data_root / "Stanford_Online_Products" / fname, "Stanford Online Products", SOP_LAYOUT
            )
        self.root = base
        ann = base / fname
        rows = read_annotation_lines(ann, "Stanford Online Products", SOP_LAYOUT)
        if not rows:
            raise annotation_error(ann, None, "file is empty")
        first_lineno, first = rows[0]
        if [f.lower() for f in first] != _HEADER:
            raise annotation_error(ann, first_lineno, f"expected header line {' '.join(_HEADER)!r}", " ".join(first))
        class_raw, super_raw, paths, super_dir = [], [], [], {}
        for lineno, fields in rows[1:]:
            line = " ".join(fields)
            if len(fields) != 4:
                raise annotation_error(
                    ann, lineno, f"expected 4 fields (image_id class_id super_class_id path), got {len(fields)}", line
                )
            parse_int(fields[0], ann, lineno, "image_id", line)
            cid = parse_int(fields[1], ann, lineno, "class_id", line)
            sid = parse_int(fields[2], ann, lineno, "super_class_id", line)
            class_raw.append(cid)
            super_raw.append(sid)
            paths.append(str(base / fields[3]))
            super_dir.setdefault(sid, fields[3].replace("\\", "/").split("/")[0])
        labels, uniq = contiguous_labels(np.asarray(class_raw, dtype=np.int64))
        self.class_ids = [int(c) for c in uniq]
        self.class_names = [str(c) for c in self.class_ids]
        self.super_labels, super_uniq = contiguous_labels(np.asarray(super_raw, dtype=np.int64))
        self.super_class_names = [super_dir[int(s)] for s in super_uniq]
        self.paths = paths
        self.labels = labels
        self._finalise()
