"""Generic class-per-folder datasets with a class-disjoint split.

Layout::

    <folder>/<class_a>/xxx.jpg
    <folder>/<class_a>/yyy.png
    <folder>/<class_b>/...

Every sub-folder is one class (hidden folders, starting with ``.``, are
ignored).  Classes are ordered by name (Python's ``sorted``, case-sensitive,
like ``torchvision.datasets.ImageFolder``) and images within a class by file
name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np

from gca.data.base import IMAGE_EXTENSIONS, ImageListDataset, check_split

__all__ = ["ImageFolderDML", "split_class_list", "scan_image_folder"]


def scan_image_folder(
    folder: Union[str, os.PathLike],
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    exclude: Sequence[str] = (),
    allow_empty: bool = False,
) -> tuple[list[str], list[list[str]]]:
    """List class folders and their image files.

    Returns ``(class_names, files_per_class)``, both sorted by name.

    Raises:
        FileNotFoundError: If ``folder`` does not exist, holds no class sub-folders, or (unless ``allow_empty``) a
            class folder holds no image file.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(
            f"Image folder {str(folder)!r} is a file, not a folder. Expected one sub-folder per class: "
            f"{folder}/<class>/<image>.jpg"
        )
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Image folder {str(folder)!r} not found. Expected one sub-folder per class: {folder}/<class>/<image>.jpg"
        )
    exts = tuple(e.lower() for e in extensions)
    names, files = [], []
    with os.scandir(folder) as it:
        class_dirs = sorted(e.name for e in it if e.is_dir() and not e.name.startswith(".") and e.name not in exclude)
    for name in class_dirs:
        with os.scandir(folder / name) as it:
            imgs = sorted(
                e.name for e in it if e.is_file() and e.name.lower().endswith(exts) and not e.name.startswith(".")
            )
        if not imgs:
            if allow_empty:
                continue
            raise FileNotFoundError(
                f"Class folder {str(folder / name)!r} holds no image file (extensions {', '.join(exts)}); "
                "remove it or pass allow_empty=True to skip empty classes."
            )
        names.append(name)
        files.append([str(folder / name / f) for f in imgs])
    if not names:
        with os.scandir(folder) as it:
            loose = sum(1 for e in it if e.is_file() and e.name.lower().endswith(exts))
        found = f"found {loose} image file(s) directly in it, " if loose else ""
        raise FileNotFoundError(
            f"Image folder {str(folder)!r} holds no class sub-folders with images ({found}"
            f"{len(class_dirs)} sub-folder(s)). Expected one sub-folder per class: {folder}/<class>/<image>.jpg"
        )
    return names, files


def split_class_list(
    class_names: Sequence[str],
    split: str,
    train_classes: Optional[Sequence[Union[str, int]]] = None,
    train_fraction: float = 0.5,
    seed: Optional[int] = None,
) -> list[int]:
    """Choose the class indices (into ``class_names``) of a class-disjoint split.

    Args:
        class_names: All classes, in their canonical (sorted) order.
        split: ``"train"``, ``"test"`` (the complement of train) or ``"all"``.
        train_classes: Explicit training classes, as names or indices into ``class_names``. Overrides
            ``train_fraction`` and ``seed``.
        train_fraction: Fraction of the classes used for training: ``floor(fraction * C)`` classes, clamped to
            ``1..C-1`` when ``C >= 2``.
        seed: ``None``: the first classes in sorted order are the training classes. An integer: the training classes
            are drawn at random with this seed.

    Returns:
        list[int]: Sorted class indices of the split.
    """
    n = len(class_names)
    if split == "all":
        return list(range(n))
    if train_classes is not None:
        pos = {name: i for i, name in enumerate(class_names)}
        chosen = set()
        for c in train_classes:
            if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
                if not 0 <= int(c) < n:
                    raise ValueError(f"train class index {c} out of range 0..{n - 1}")
                chosen.add(int(c))
            elif c in pos:
                chosen.add(pos[c])
            else:
                raise ValueError(f"train class {c!r} is not one of the {n} class folders")
        train = sorted(chosen)
    else:
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        n_train = int(math.floor(train_fraction * n + 1e-9))
        if n >= 2:
            n_train = min(max(n_train, 1), n - 1)
        if seed is None:
            train = list(range(n_train))
        else:
            train = sorted(np.random.default_rng(seed).permutation(n)[:n_train].tolist())
    if split == "train":
        return train
    train_set = set(train)
    return [i for i in range(n) if i not in train_set]


class ImageFolderDML(ImageListDataset):
    """Any class-per-folder image collection, split into disjoint class sets.

    Labels are contiguous within the split and follow the sorted class order;
    ``class_names`` are the folder names.

    Args:
        root: The folder holding one sub-folder per class (required).
        split: ``"train"``, ``"test"`` (classes not in train) or ``"all"``.
        transform: Callable applied to the PIL image.
        train_classes: Explicit training classes (folder names or indices into the sorted class list); overrides
            ``train_fraction``/``seed``.
        train_fraction: Fraction of the classes for training (default 0.5 = first half).
        seed: ``None`` (default): the training classes are the first ones in sorted order.  An integer: they are
            drawn at random with this seed.
        image_mode: PIL mode the images are converted to (default ``"RGB"``).
        extensions: Accepted image file extensions.
        exclude: Class folder names to ignore.
        allow_empty: Skip class folders without images instead of raising.
    """

    name = "imagefolder"
    splits = ("train", "test", "all")

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: str = "train",
        transform: Optional[Callable] = None,
        *,
        train_classes: Optional[Sequence[Union[str, int]]] = None,
        train_fraction: float = 0.5,
        seed: Optional[int] = None,
        image_mode: str = "RGB",
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        exclude: Sequence[str] = (),
        allow_empty: bool = False,
    ) -> None:
        split = check_split(split, self.splits, type(self).__name__)
        super().__init__(split, transform, image_mode=image_mode)
        if root is None:
            raise ValueError(f"{type(self).__name__} needs root= pointing at a folder with one sub-folder per class")
        self.root = Path(root).expanduser()
        all_names, all_files = scan_image_folder(self.root, extensions, exclude, allow_empty)
        self.all_class_names = all_names
        if split != "all" and len(all_names) < 2:
            raise ValueError(
                f"Image folder {str(self.root)!r} holds {len(all_names)} class folder ({all_names[0]!r}); a "
                f"class-disjoint {split} split needs at least 2 (one sub-folder per class: {self.root}/<class>/<image>)"
            )
        keep = split_class_list(all_names, split, train_classes, train_fraction, seed)
        self.class_names = [all_names[i] for i in keep]
        paths, labels = [], []
        for new, old in enumerate(keep):
            paths.extend(all_files[old])
            labels.extend([new] * len(all_files[old]))
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self._finalise()
