"""Cars196 / Stanford Cars (Krause et al., 2013) from the original release.

Expected layout::

    <root>/cars196/
        cars_annos.mat      MATLAB file with the struct array ``annotations``
                            (fields relative_im_path, bbox_x1, bbox_y1, bbox_x2,
                            bbox_y2, class, test) and the cell array ``class_names``
        car_ims/000001.jpg ... car_ims/016185.jpg

``root`` may also point directly at the folder holding ``cars_annos.mat``.
Image paths come from ``relative_im_path`` (``car_ims/000001.jpg``) relative to
that folder.

Zero-shot split used in deep metric learning: classes 1-98 (8,054 images) for
training, classes 99-196 (8,131 images) for testing; the ``test`` flag of the
annotations (the classification split) is ignored.  In general the first half
of the class ids (``n_classes // 2``) is the training split.

Reading ``.mat`` files needs :mod:`scipy` (``scipy.io.loadmat``).
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
    layout_line,
    missing_annotation,
)
from gca.data.root import resolve_data_root

__all__ = ["Cars196", "CARS_LAYOUT", "read_cars_annotations"]

# one entry per line (errors show them on one line, separated by ";")
CARS_LAYOUT = "\n".join([
    "  <root>/cars196/cars_annos.mat   (struct array 'annotations' with fields relative_im_path, bbox_x1, "
    "bbox_y1, bbox_x2, bbox_y2, class, test, and cell 'class_names')",
    "  <root>/cars196/car_ims/000001.jpg ...",
    "(cars_annos.mat and the extracted car_ims.tgz; prepare with "
    "`python -m gca.data.prepare cars196 car_ims.tgz cars_annos.mat <root>`)",
])

_DIR_NAMES = ("cars196", "Cars196", "CARS196", "cars", "stanford_cars", "")
_REQUIRED_FIELDS = ("relative_im_path", "class")


def _loadmat(path: Path) -> dict:
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Cars196: reading cars_annos.mat requires scipy (scipy.io.loadmat); install it with `pip install scipy`."
        ) from exc
    try:
        return loadmat(str(path), squeeze_me=True, struct_as_record=True)
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError on corrupt files
        raise annotation_error(path, None, f"cannot read MATLAB file ({type(exc).__name__}: {exc})") from exc


def _as_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"expected a string, got an array of shape {value.shape}")
        return _as_str(value.reshape(-1)[0])
    return str(value)


def read_cars_annotations(path: Union[str, os.PathLike]) -> tuple[list[str], np.ndarray, list[str]]:
    """Read ``cars_annos.mat``.

    Returns:
        (relative_paths, class_ids, class_names): ``relative_paths[i]`` is e.g. ``"car_ims/000001.jpg"``,
            ``class_ids`` the 1-based ``class`` field (``int64``), ``class_names`` the entries of the
            ``class_names`` cell (empty list when the variable is absent).

    Raises:
        FileNotFoundError: If the file is missing.
        AnnotationError: If the file cannot be parsed, lacks a required field, or an entry is malformed (the message
            names the file and the 1-based annotation index).
    """
    path = Path(path)
    if not path.is_file():
        raise missing_annotation(path, "Cars196", CARS_LAYOUT)
    mat = _loadmat(path)
    if "annotations" not in mat:
        raise annotation_error(path, None, "variable 'annotations' not found")
    ann = np.atleast_1d(mat["annotations"])
    names = ann.dtype.names or ()
    missing = [f for f in _REQUIRED_FIELDS if f not in names]
    if missing:
        raise annotation_error(
            path, None, f"'annotations' lacks field(s) {missing}; found fields {list(names)}"
        )
    rel_paths: list[str] = []
    class_ids = np.empty(len(ann), dtype=np.int64)
    for i, entry in enumerate(ann):
        try:
            rel = _as_str(entry["relative_im_path"]).strip()
            if not rel:
                raise ValueError("empty relative_im_path")
            cls = np.asarray(entry["class"])
            if cls.size != 1:
                raise ValueError(f"'class' has {cls.size} values")
            cls_val = cls.reshape(-1)[0]
            if float(cls_val) != int(cls_val):
                raise ValueError(f"'class' is not an integer: {cls_val!r}")
            cid = int(cls_val)
            if cid < 1:
                raise ValueError(f"'class' must be >= 1, got {cid}")
        except (ValueError, TypeError) as exc:
            raise annotation_error(path, None, f"annotation #{i + 1}: {exc}") from None
        rel_paths.append(rel)
        class_ids[i] = cid
    class_names: list[str] = []
    if "class_names" in mat:
        class_names = [_as_str(n) for n in np.atleast_1d(mat["class_names"]).reshape(-1)]
    return rel_paths, class_ids, class_names


class Cars196(ImageListDataset):
    """Cars196, class-disjoint split (train: classes 1-98, test: classes 99-196).

    The number of classes is ``len(class_names)`` from the file (or the largest
    class id when absent); the first ``n // 2`` class ids form the training
    split.  ``class_ids`` holds the original 1-based id of each class.

    Args:
        root: Data root holding ``cars196/`` (or that folder itself); ``None`` uses
            :func:`gca.data.resolve_data_root`.
        split: ``"train"``, ``"test"`` or ``"all"``.
        transform: Callable applied to the RGB PIL image.
    """

    name = "cars196"
    splits = ("train", "test", "all")

    def __init__(
        self,
        root: Optional[Union[str, os.PathLike]] = None,
        split: str = "train",
        transform: Optional[Callable] = None,
    ) -> None:
        split = check_split(split, self.splits, "Cars196")
        super().__init__(split, transform)
        data_root = resolve_data_root(root)
        base = first_existing_dir(data_root, _DIR_NAMES, "cars_annos.mat")
        if base is None:
            raise missing_annotation(data_root / "cars196" / "cars_annos.mat", "Cars196", CARS_LAYOUT)
        self.root = base
        ann_file = base / "cars_annos.mat"
        rel_paths, class_ids, names = read_cars_annotations(ann_file)
        n_classes = len(names) if names else int(class_ids.max(initial=0))
        if class_ids.size and class_ids.max() > n_classes:
            bad = int(np.argmax(class_ids > n_classes))
            raise annotation_error(
                ann_file, None,
                f"annotation #{bad + 1}: class {int(class_ids[bad])} exceeds the {n_classes} class names",
            )
        if not names:
            names = [f"class_{c:03d}" for c in range(1, n_classes + 1)]
        n_train = n_classes // 2
        all_ids = list(range(1, n_classes + 1))
        keep = all_ids[:n_train] if split == "train" else all_ids[n_train:] if split == "test" else all_ids
        index_of = {cid: i for i, cid in enumerate(keep)}
        self.class_ids = keep
        self.class_names = [names[c - 1] for c in keep]
        paths, labels = [], []
        for rel, cid in zip(rel_paths, class_ids.tolist()):
            if cid in index_of:
                paths.append(str(base / rel))
                labels.append(index_of[cid])
        if paths and not (base / Path(rel_paths[0]).parent).is_dir():
            raise FileNotFoundError(
                f"Cars196: image folder {str(base / Path(rel_paths[0]).parent)!r} not found; "
                f"expected layout: {layout_line(CARS_LAYOUT)}"
            )
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self._finalise()
