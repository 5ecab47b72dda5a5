"""CUB-200-2011 (Wah et al., 2011) in its original archive layout.

Expected layout (the extracted ``CUB_200_2011.tgz``)::

    <root>/CUB_200_2011/
        images.txt               "<image_id> <class_folder>/<file>.jpg"
        image_class_labels.txt   "<image_id> <class_id>"        (class ids 1..200)
        classes.txt              "<class_id> <class_folder>"
        images/<class_folder>/<file>.jpg

``root`` may also point directly at the ``CUB_200_2011`` folder.

Zero-shot split used in deep metric learning: the first half of the classes by
class id is used for training (classes 1-100, 5,864 images), the second half
for testing (classes 101-200, 5,924 images).  The official train/test image
split (``train_test_split.txt``) is *not* used.
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
    first_existing_dir,
    layout_line,
    missing_annotation,
    parse_int,
    read_annotation_lines,
)
from gca.data.root import resolve_data_root

__all__ = ["CUB200", "CUB_LAYOUT"]

CUB_LAYOUT = """\
  <root>/CUB_200_2011/images.txt              (<image_id> <class_folder>/<file>.jpg)
  <root>/CUB_200_2011/image_class_labels.txt  (<image_id> <class_id>)
  <root>/CUB_200_2011/classes.txt             (<class_id> <class_folder>)
  <root>/CUB_200_2011/images/<class_folder>/<file>.jpg
(the extracted CUB_200_2011.tgz; prepare with `python -m gca.data.prepare cub200 CUB_200_2011.tgz <root>`)"""

_DIR_NAMES = ("CUB_200_2011", "cub200", "CUB200", "")


class CUB200(ImageListDataset):
    """CUB-200-2011 birds, class-disjoint split (train: classes 1-100, test: 101-200).

    Labels are contiguous within the split, ordered by the original class id.
    ``class_ids`` holds the original 1-based id of each class.

    Args:
        root: Data root holding ``CUB_200_2011/`` (or that folder itself); ``None`` uses
            :func:`gca.data.resolve_data_root`.
        split: ``"train"`` (first half of the classes by id), ``"test"`` (second half) or ``"all"``.
        transform: Callable applied to the RGB PIL image.
    """

    name = "cub200"
    splits = ("train", "test", "all")

    def __init__(
        self,
        root: Optional[Union[str, os.PathLike]] = None,
        split: str = "train",
        transform: Optional[Callable] = None,
    ) -> None:
        split = check_split(split, self.splits, "CUB-200-2011")
        super().__init__(split, transform)
        data_root = resolve_data_root(root)
        base = first_existing_dir(data_root, _DIR_NAMES, "images.txt")
        if base is None:
            raise missing_annotation(data_root / "CUB_200_2011" / "images.txt", "CUB-200-2011", CUB_LAYOUT)
        self.root = base

        classes_file = base / "classes.txt"
        class_rows = read_annotation_lines(classes_file, "CUB-200-2011", CUB_LAYOUT)
        class_name_by_id: dict[int, str] = {}
        for lineno, fields in class_rows:
            if len(fields) < 2:
                raise annotation_error(classes_file, lineno, "expected '<class_id> <class_name>'", " ".join(fields))
            cid = parse_int(fields[0], classes_file, lineno, "class id", " ".join(fields))
            if cid in class_name_by_id:
                raise annotation_error(classes_file, lineno, f"duplicate class id {cid}")
            class_name_by_id[cid] = " ".join(fields[1:])
        if not class_name_by_id:
            raise annotation_error(classes_file, None, "file lists no classes")

        images_file = base / "images.txt"
        image_path_by_id: dict[int, str] = {}
        for lineno, fields in read_annotation_lines(images_file, "CUB-200-2011", CUB_LAYOUT):
            if len(fields) != 2:
                raise annotation_error(images_file, lineno, "expected '<image_id> <relative_path>'", " ".join(fields))
            iid = parse_int(fields[0], images_file, lineno, "image id", " ".join(fields))
            if iid in image_path_by_id:
                raise annotation_error(images_file, lineno, f"duplicate image id {iid}")
            image_path_by_id[iid] = fields[1]

        labels_file = base / "image_class_labels.txt"
        class_by_image: dict[int, int] = {}
        for lineno, fields in read_annotation_lines(labels_file, "CUB-200-2011", CUB_LAYOUT, num_fields=2):
            line = " ".join(fields)
            iid = parse_int(fields[0], labels_file, lineno, "image id", line)
            cid = parse_int(fields[1], labels_file, lineno, "class id", line)
            if iid not in image_path_by_id:
                raise annotation_error(labels_file, lineno, f"image id {iid} is not listed in images.txt", line)
            if cid not in class_name_by_id:
                raise annotation_error(labels_file, lineno, f"class id {cid} is not listed in classes.txt", line)
            class_by_image[iid] = cid
        unlabelled = sorted(set(image_path_by_id) - set(class_by_image))
        if unlabelled:
            raise annotation_error(
                labels_file, None, f"{len(unlabelled)} image id(s) from images.txt have no class, e.g. {unlabelled[:5]}"
            )

        all_ids = sorted(class_name_by_id)
        n_train = len(all_ids) // 2
        if split == "train":
            keep = all_ids[:n_train]
        elif split == "test":
            keep = all_ids[n_train:]
        else:
            keep = all_ids
        index_of = {cid: i for i, cid in enumerate(keep)}
        self.class_ids = list(keep)
        self.class_names = [class_name_by_id[c] for c in keep]

        images_dir = base / "images"
        if not images_dir.is_dir():
            raise FileNotFoundError(
                f"CUB-200-2011: image folder {str(images_dir)!r} not found; expected layout: {layout_line(CUB_LAYOUT)}"
            )
        paths, labels = [], []
        for iid in sorted(image_path_by_id):
            cid = class_by_image[iid]
            if cid in index_of:
                paths.append(str(images_dir / image_path_by_id[iid]))
                labels.append(index_of[cid])
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self._finalise()

