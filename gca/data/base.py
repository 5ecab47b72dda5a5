"""Shared building blocks of the dataset loaders.

* :class:`DMLDataset` -- the common interface: ``(image, int label)`` items,
  ``.labels`` (1-D ``int64`` numpy array of contiguous ids ``0..C-1``),
  ``.num_classes`` and ``.class_names``.
* :class:`ImageListDataset` -- a :class:`DMLDataset` over a list of image files.
* :func:`load_image` -- strict image decoding (truncated or corrupt files raise
  :class:`CorruptImageError` naming the file).
* :func:`read_annotation_lines` / :func:`annotation_error` -- reading text
  annotation files with errors that name the file and the line number.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from PIL import Image, ImageFile
from torch.utils.data import Dataset

__all__ = [
    "AnnotationError",
    "CorruptImageError",
    "DMLDataset",
    "ImageListDataset",
    "IMAGE_EXTENSIONS",
    "annotation_error",
    "contiguous_labels",
    "load_image",
    "missing_annotation",
    "read_annotation_lines",
    "check_split",
    "layout_line",
]

#: File extensions recognised as images when scanning folders (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class AnnotationError(ValueError):
    """An annotation file is malformed; the message names the file and line."""


class CorruptImageError(OSError):
    """An image file exists but cannot be decoded (truncated, corrupt, not an image)."""


# --------------------------------------------------------------------------- images


@contextlib.contextmanager
def _strict_truncation():
    """Temporarily make PIL raise on truncated images.

    Some libraries set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` globally,
    which makes PIL silently pad truncated files with grey.  The loaders here
    never set it and switch it off while decoding, so a damaged file is always
    reported.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def load_image(path: Union[str, os.PathLike], mode: Optional[str] = "RGB") -> Image.Image:
    """Open and fully decode an image file.

    Args:
        path: Image file.
        mode: PIL mode to convert to (``"RGB"``, ``"L"``, ...); ``None`` keeps the file's mode (the pixels are still
            decoded).

    Raises:
        FileNotFoundError: If the file does not exist.
        CorruptImageError: If the file is truncated, corrupt or not an image (an ``OSError`` subclass whose message
            names the file).
    """
    path = os.fspath(path)
    try:
        with _strict_truncation(), Image.open(path) as img:
            img.load()
            return img.convert(mode) if mode is not None else img.copy()
    except FileNotFoundError:
        raise FileNotFoundError(f"Image file not found: {path!r}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(
            f"Cannot decode image file {path!r} (truncated or corrupt?): {exc}"
        ) from exc


# ---------------------------------------------------------------------- annotations


def layout_line(layout: str) -> str:
    """A multi-line layout description (one entry per line) as one line, entries separated by ``;``.

    Errors stay on one line so that the command line can print them as ``gca train: error: ...``.
    """
    return "; ".join(" ".join(line.split()) for line in layout.splitlines() if line.strip())


def missing_annotation(path: Union[str, os.PathLike], dataset: str, layout: str) -> FileNotFoundError:
    """Build the error raised when an annotation file is missing."""
    return FileNotFoundError(
        f"{dataset}: annotation file {os.fspath(path)!r} not found; expected layout: {layout_line(layout)}"
    )


def annotation_error(
    path: Union[str, os.PathLike], lineno: Optional[int], message: str, line: Optional[str] = None
) -> AnnotationError:
    """Build an :class:`AnnotationError` naming the file (and line, if known)."""
    where = f"{os.fspath(path)}" + (f", line {lineno}" if lineno is not None else "")
    text = f"Malformed annotation in {where}: {message}"
    if line is not None:
        text += f" (line content: {line.rstrip()!r})"
    return AnnotationError(text)


def read_annotation_lines(
    path: Union[str, os.PathLike],
    dataset: str,
    layout: str,
    num_fields: Optional[int] = None,
    skip: int = 0,
) -> list[tuple[int, list[str]]]:
    """Read a whitespace-separated annotation file.

    Blank lines are ignored.  Returns ``(line_number, fields)`` pairs (line
    numbers are 1-based, as shown by editors).

    Args:
        path, dataset, layout: File to read; dataset name and expected layout used in error messages.
        num_fields: When given, every line must have exactly this many fields.
        skip: Number of leading lines (header) not returned.

    Raises:
        FileNotFoundError: If the file is missing (message names the file and the layout).
        AnnotationError: If a line has the wrong number of fields.
    """
    path = Path(path)
    if not path.is_file():
        raise missing_annotation(path, dataset, layout)
    rows: list[tuple[int, list[str]]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if lineno <= skip:
                continue
            fields = line.split()
            if not fields:
                continue
            if num_fields is not None and len(fields) != num_fields:
                raise annotation_error(
                    path, lineno, f"expected {num_fields} whitespace-separated fields, got {len(fields)}", line
                )
            rows.append((lineno, fields))
    return rows


def parse_int(
    value: str, path: Union[str, os.PathLike], lineno: Optional[int], what: str, line: Optional[str] = None
) -> int:
    """Parse an integer field, raising :class:`AnnotationError` on failure."""
    try:
        return int(value)
    except ValueError:
        raise annotation_error(path, lineno, f"{what} must be an integer, got {value!r}", line) from None


# ---------------------------------------------------------------------------- labels


def contiguous_labels(raw: Union[Sequence[Any], np.ndarray]) -> tuple[np.ndarray, list[Any]]:
    """Map arbitrary class identifiers to contiguous ids ``0..C-1``.

    Identifiers are ordered by sorting (numeric ids numerically, strings
    lexicographically).  Returns ``(labels, sorted_unique_ids)``.
    """
    arr = np.asarray(raw)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64), []
    uniq, inverse = np.unique(arr, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), uniq.tolist()


def check_split(split: str, allowed: Iterable[str], dataset: str) -> str:
    """Validate a split name (case-insensitive) and return it lower-cased."""
    allowed = tuple(allowed)
    s = str(split).lower()
    if s not in allowed:
        raise ValueError(f"{dataset}: unknown split {split!r}; expected one of {', '.join(map(repr, allowed))}")
    return s


# ------------------------------------------------------------------------- datasets


class DMLDataset(Dataset):
    """Base class of all metric-learning datasets in :mod:`gca.data`.

    Items are ``(transform(image), label)`` with ``label`` a Python ``int``.

    Attributes:
        labels (numpy.ndarray): 1-D ``int64`` array, the label of every item, contiguous ids ``0..C-1``.
        class_names (list[str]): ``class_names[c]`` is the name of class ``c``.
        split (str): Split name.
        name (str): Registry name of the dataset.
    """

    name: str = "dataset"

    def __init__(self, split: str, transform: Optional[Callable] = None) -> None:
        self.split = split
        self.transform = transform
        self.labels: np.ndarray = np.zeros(0, dtype=np.int64)
        self.class_names: list[str] = []

    @property
    def num_classes(self) -> int:
        """Number of classes of this split (``len(class_names)``)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def load(self, index: int):  # pragma: no cover - abstract
        """Return the untransformed image of item ``index``."""
        raise NotImplementedError

    def __getitem__(self, index: int):
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {n}")
        img = self.load(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[index])

    def _finalise(self) -> None:
        """Sanity-check labels after a subclass populated them."""
        self.labels = np.ascontiguousarray(self.labels, dtype=np.int64).reshape(-1)
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise RuntimeError(f"{type(self).__name__}: labels outside 0..{len(self.class_names) - 1}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, items={len(self)}, classes={self.num_classes}"
            + (f", root={str(getattr(self, 'root', ''))!r}" if getattr(self, "root", None) else "")
            + ")"
        )


class ImageListDataset(DMLDataset):
    """A :class:`DMLDataset` over a list of image files.

    Subclasses fill ``self.paths`` (list of absolute paths as strings),
    ``self.labels`` and ``self.class_names`` and then call ``_finalise()``.
    """

    image_mode: str = "RGB"

    def __init__(self, split: str, transform: Optional[Callable] = None, image_mode: Optional[str] = None) -> None:
        super().__init__(split, transform)
        if image_mode is not None:
            self.image_mode = image_mode
        self.paths: list[str] = []

    def load(self, index: int) -> Image.Image:
        return load_image(self.paths[index], self.image_mode)

    def _finalise(self) -> None:
        super()._finalise()
        if len(self.paths) != self.labels.shape[0]:
            raise RuntimeError(f"{type(self).__name__}: {len(self.paths)} paths but {self.labels.shape[0]} labels")

    def missing_files(self, limit: Optional[int] = None) -> list[str]:
        """Return image paths that do not exist on disk (at most ``limit``)."""
        missing = []
        for p in self.paths:
            if not os.path.isfile(p):
                missing.append(p)
                if limit is not None and len(missing) >= limit:
                    break
        return missing


def first_existing_dir(root: Path, names: Iterable[str], marker: str) -> Optional[Path]:
    """Return ``root/name`` for the first ``name`` whose folder contains ``marker``.

    ``""`` in ``names`` means ``root`` itself.
    """
    for name in names:
        cand = root / name if name else root
        if (cand / marker).exists():
            return cand
    return None
