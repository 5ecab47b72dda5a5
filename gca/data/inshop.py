"""In-Shop Clothes Retrieval (DeepFashion, Liu et al., 2016) in its original layout.

Expected layout::

    <root>/inshop/
        Eval/list_eval_partition.txt   line 1: number of images
                                       line 2: header "image_name item_id evaluation_status"
                                       then "<image_name> <item_id> <train|query|gallery>"
        img/WOMEN/Dresses/id_00000002/02_1_front.jpg ...

``image_name`` is relative to the ``inshop`` folder (it starts with ``img/``).
``root`` may also point directly at the folder that holds ``Eval/`` and ``img/``.

Split: the official one -- ``train`` (3,997 items, 25,882 images), and for
testing ``query`` (14,218 images) and ``gallery`` (12,612 images) over the
same 3,985 items.  Query and gallery share one label mapping: item ids of the
union of both splits, sorted, numbered ``0..C-1``, so ``query.labels[i] ==
gallery.labels[j]`` exactly when the two images show the same item.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Optional, Union

import numpy as np

from gca.data.base import (
    ImageListDataset,
    annotation_error,
    check_split,
    first_existing_dir,
    missing_annotation,
    parse_int,
    read_annotation_lines,
)
from gca.data.root import resolve_data_root

__all__ = ["InShop", "INSHOP_LAYOUT", "read_inshop_partition"]

# one entry per line (errors show them on one line, separated by ";")
INSHOP_LAYOUT = "\n".join([
    "  <root>/inshop/Eval/list_eval_partition.txt  (line 1: image count, line 2: header "
    "'image_name item_id evaluation_status', then '<img/...jpg> <item_id> <train|query|gallery>')",
    "  <root>/inshop/img/<MEN|WOMEN>/<category>/<item_id>/<image>.jpg",
    "(img.zip extracted next to Eval/; prepare with "
    "`python -m gca.data.prepare inshop img.zip list_eval_partition.txt <root>`)",
])

_DIR_NAMES = ("inshop", "InShop", "In-Shop", "in-shop", "in_shop", "DeepFashion_InShop", "")
_PARTITION = Path("Eval") / "list_eval_partition.txt"
_STATUSES = ("train", "query", "gallery")
_HEADER = ["image_name", "item_id", "evaluation_status"]


def read_inshop_partition(path: Union[str, os.PathLike]) -> list[tuple[str, str, str]]:
    """Parse ``list_eval_partition.txt`` into ``(image_name, item_id, status)`` rows.

    Raises:
        FileNotFoundError: If the file is missing.
        AnnotationError: If the count line, the header or a row is malformed, an evaluation status is unknown, or
            the count does not match the number of rows (the message names the file and line).
    """
    path = Path(path)
    rows = read_annotation_lines(path, "In-Shop", INSHOP_LAYOUT)
    if len(rows) < 2:
        raise annotation_error(path, None, "expected a count line and a header line")
    (count_line, count_fields), (header_line, header) = rows[0], rows[1]
    if len(count_fields) != 1:
        raise annotation_error(path, count_line, "first line must hold the number of images", " ".join(count_fields))
    count = parse_int(count_fields[0], path, count_line, "image count", " ".join(count_fields))
    if [h.lower() for h in header] != _HEADER:
        raise annotation_error(path, header_line, f"expected header {' '.join(_HEADER)!r}", " ".join(header))
    out = []
    for lineno, fields in rows[2:]:
        line = " ".join(fields)
        if len(fields) != 3:
            raise annotation_error(
                path, lineno, f"expected 3 fields (image_name item_id evaluation_status), got {len(fields)}", line
            )
        status = fields[2].lower()
        if status not in _STATUSES:
            raise annotation_error(
                path, lineno, f"evaluation_status must be one of {_STATUSES}, got {fields[2]!r}", line
            )
        out.append((fields[0], fields[1], status))
    if count != len(out):
        raise annotation_error(path, count_line, f"declares {count} images but lists {len(out)} (truncated file?)")
    return out


class InShop(ImageListDataset):
    """In-Shop Clothes Retrieval with its official train / query / gallery split.

    ``class_names`` are item ids (``"id_00000002"``).  For ``query`` and
    ``gallery`` the labels index the shared, sorted set of test items, so
    ``num_classes`` is the number of test items in query and gallery together.

    Args:
        root: Data root holding ``inshop/`` (or that folder itself); ``None`` uses
            :func:`gca.data.resolve_data_root`.
        split: ``"train"``, ``"query"`` or ``"gallery"``.
        transform: Callable applied to the RGB PIL image.
    """

    name = "inshop"
    splits = ("train", "query", "gallery")

    def __init__(
        self,
        root: Optional[Union[str, os.PathLike]] = None,
        split: str = "train",
        transform: Optional[Callable] = None,
    ) -> None:
        split = check_split(split, self.splits, "In-Shop")
        super().__init__(split, transform)
        data_root = resolve_data_root(root)
        base = first_existing_dir(data_root, _DIR_NAMES, str(_PARTITION))
        if base is None:
            raise missing_annotation(data_root / "inshop" / _PARTITION, "In-Shop", INSHOP_LAYOUT)
        self.root = base
        rows = read_inshop_partition(base / _PARTITION)
        group = ("train",) if split == "train" else ("query", "gallery")
        items = sorted({item for _, item, status in rows if status in group})
        index_of = {item: i for i, item in enumerate(items)}
        self.class_names = items
        paths, labels = [], []
        for name, item, status in rows:
            if status == split:
                paths.append(str(base / name))
                labels.append(index_of[item])
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self._finalise()
