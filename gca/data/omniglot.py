"""Omniglot (Lake, Salakhutdinov, Tenenbaum, 2015) as a zero-shot retrieval benchmark.

Two on-disk formats are read:

* the numpy conversion (as in ``shared/data``)::

      <root>/omniglot/images_background.npz   images (964, 20, 105, 105) bool, True = background
      <root>/omniglot/images_evaluation.npz   images (659, 20, 105, 105) bool; labels (classes, 20) int64

* the official release (``images_background.zip`` / ``images_evaluation.zip``
  from github.com/brendenlake/omniglot, extracted)::

      <root>/omniglot/images_background/<alphabet>/<character>/<file>.png
      <root>/omniglot/images_evaluation/<alphabet>/<character>/<file>.png

  (``<root>/omniglot-py/...``, where torchvision downloads to, and
  ``<root>/omniglot/omniglot-py/...`` are also searched).

Split: ``train`` = background set (964 characters of 30 alphabets), ``test`` =
evaluation set (659 characters of 20 other alphabets); 20 drawings per
character.  Each character is one class.

Items are 105x105 PIL images in mode ``"L"``: ink black (0) on white (255) by
default, white ink on black with ``invert=True``.
"""

from __future__ import annotations

import os
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps

from gca.data.base import DMLDataset, annotation_error, check_split, contiguous_labels, layout_line, load_image
from gca.data.folder import scan_image_folder
from gca.data.root import resolve_data_root

__all__ = ["Omniglot", "OMNIGLOT_LAYOUT", "clear_omniglot_cache"]

OMNIGLOT_LAYOUT = """\
either the numpy archives
  <root>/omniglot/images_background.npz   (train; arrays 'images' (C,20,105,105) bool True=background, 'labels' (C,20) int)
  <root>/omniglot/images_evaluation.npz   (test)
or the official release (extract images_background.zip / images_evaluation.zip)
  <root>/omniglot/images_background/<alphabet>/<character>/<drawing>.png   (train)
  <root>/omniglot/images_evaluation/<alphabet>/<character>/<drawing>.png   (test)
or pass download=True to fetch the official release with torchvision into <root>/omniglot/omniglot-py/."""  # noqa: E501

_SET_NAME = {"train": "images_background", "test": "images_evaluation"}
_SPLIT_ALIASES = {"background": "train", "evaluation": "test"}

# Module-level cache of decoded npz image arrays: {(realpath, mtime_ns, size): bool array}.
_CACHE: dict[tuple[str, int, int], np.ndarray] = {}
_CACHE_LOCK = threading.Lock()


def clear_omniglot_cache() -> None:
    """Drop the image arrays cached by :class:`Omniglot` (``cache=True``)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _npz_member_header(path: Path, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """Read shape and dtype of an array in an ``.npz`` without loading it."""
    with zipfile.ZipFile(path) as zf:
        name = member + ".npy"
        if name not in zf.namelist():
            raise annotation_error(
                path, None, f"array {member!r} not found (arrays: {[n[:-4] for n in zf.namelist()]})"
            )
        with zf.open(name) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(shape), np.dtype(dtype)


def _load_npz_images(path: Path, use_cache: bool) -> np.ndarray:
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if use_cache:
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
        if hit is not None:
            return hit
    with np.load(path) as z:
        images = np.asarray(z["images"])
    if images.dtype != np.bool_:
        # Accept uint8 0/255 or 0/1 arrays too: non-zero = background.
        images = images != 0
    elif images.size and images.view(np.uint8).max() > 1:
        # Some writers store True as byte 0xFF; make the booleans canonical (0/1 bytes).
        images = images.view(np.uint8) != 0
    images = images.reshape(-1, *images.shape[-2:])
    images.setflags(write=False)
    if use_cache:
        with _CACHE_LOCK:
            _CACHE[key] = images
    return images


class Omniglot(DMLDataset):
    """Omniglot characters; ``train`` = background set, ``test`` = evaluation set.

    The npz image array is loaded lazily, on the first item access; labels are
    read at construction.  ``class_names`` are ``"<alphabet>/<character>"`` for
    the folder layout and ``"<set>/<label>"`` for the npz format.

    Args:
        root: Data root holding ``omniglot/`` (see the module docstring); ``None`` uses
            :func:`gca.data.resolve_data_root`.
        split: ``"train"`` (alias ``"background"``) or ``"test"`` (alias ``"evaluation"``).
        transform: Callable applied to the 105x105 ``"L"`` PIL image.
        source: ``"auto"`` (npz if present, else the folder layout), ``"npz"`` or ``"folder"``.
        download: When no data is found, download the official release with ``torchvision.datasets.Omniglot`` into
            ``<root>/omniglot/omniglot-py``.
        invert: ``False`` (default): black ink on white; ``True``: white ink on black.
        cache: Keep the decoded npz array in a process-wide cache so that several dataset objects over the same file
            share one copy (about 212 MB for the background set).  ``clear_omniglot_cache()`` releases it.
    """

    name = "omniglot"
    splits = ("train", "test")

    def __init__(
        self,
        root: Optional[Union[str, os.PathLike]] = None,
        split: str = "train",
        transform: Optional[Callable] = None,
        *,
        source: str = "auto",
        download: bool = False,
        invert: bool = False,
        cache: bool = True,
    ) -> None:
        split = _SPLIT_ALIASES.get(str(split).lower(), split)
        split = check_split(split, self.splits, "Omniglot")
        super().__init__(split, transform)
        if source not in ("auto", "npz", "folder"):
            raise ValueError(f"Omniglot: source must be 'auto', 'npz' or 'folder', got {source!r}")
        self.invert = bool(invert)
        self.cache = bool(cache)
        data_root = resolve_data_root(root)
        set_name = _SET_NAME[split]
        self.set_name = set_name

        npz = self._find_npz(data_root, set_name) if source in ("auto", "npz") else None
        folder = self._find_folder(data_root, set_name) if npz is None and source in ("auto", "folder") else None
        if npz is None and folder is None and download:
            folder = self._download(data_root, split)
        if npz is None and folder is None:
            wanted = {"auto": "", "npz": " (source='npz')", "folder": " (source='folder')"}[source]
            raise FileNotFoundError(
                f"Omniglot {split} split ({set_name}) not found under {str(data_root)!r}{wanted}. "
                f"Expected {layout_line(OMNIGLOT_LAYOUT)}"
            )

        self._images: Optional[np.ndarray] = None
        self.paths: Optional[list[str]] = None
        if npz is not None:
            self.format = "npz"
            self.root = npz
            self._init_npz(npz)
        else:
            self.format = "folder"
            self.root = folder
            self._init_folder(folder)
        self._finalise()

    # ----------------------------------------------------------------- discovery
    @staticmethod
    def _find_npz(root: Path, set_name: str) -> Optional[Path]:
        for cand in (root / "omniglot" / f"{set_name}.npz", root / f"{set_name}.npz"):
            if cand.is_file():
                return cand
        return None

    @staticmethod
    def _find_folder(root: Path, set_name: str) -> Optional[Path]:
        for cand in (
            root / "omniglot" / set_name,
            root / "omniglot" / "omniglot-py" / set_name,
            root / "omniglot-py" / set_name,
            root / set_name,
        ):
            if cand.is_dir():
                return cand
        return None

    @staticmethod
    def _download(root: Path, split: str) -> Path:
        from torchvision.datasets import Omniglot as TVOmniglot

        target = root / "omniglot"
        target.mkdir(parents=True, exist_ok=True)
        TVOmniglot(root=str(target), background=(split == "train"), download=True)
        folder = target / "omniglot-py" / _SET_NAME[split]
        if not folder.is_dir():
            raise FileNotFoundError(f"Omniglot download finished but {str(folder)!r} does not exist")
        return folder

    # ------------------------------------------------------------------- formats
    def _init_npz(self, path: Path) -> None:
        img_shape, _ = _npz_member_header(path, "images")
        lab_shape, _ = _npz_member_header(path, "labels")
        if len(img_shape) != 4 or tuple(lab_shape) != tuple(img_shape[:2]):
            raise annotation_error(
                path, None,
                f"expected 'images' of shape (classes, drawings, H, W) and 'labels' of shape (classes, drawings); "
                f"got {img_shape} and {lab_shape}",
            )
        with np.load(path) as z:
            raw = np.asarray(z["labels"]).reshape(-1)
        self.labels, uniq = contiguous_labels(raw)
        prefix = self.set_name.replace("images_", "")
        self.class_names = [f"{prefix}/{int(u):04d}" for u in uniq]
        self.image_shape = tuple(int(s) for s in img_shape[2:])

    def _init_folder(self, folder: Path) -> None:
        paths, labels, names = [], [], []
        alphabets = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        for alphabet in alphabets:
            chars, files = scan_image_folder(folder / alphabet, extensions=(".png",), allow_empty=True)
            for char, char_files in zip(chars, files):
                labels.extend([len(names)] * len(char_files))
                names.append(f"{alphabet}/{char}")
                paths.extend(char_files)
        if not paths:
            raise FileNotFoundError(
                f"Omniglot: no PNG drawings found under {str(folder)!r}; expected "
                f"{folder}/<alphabet>/<character>/<drawing>.png"
            )
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = names
        self.image_shape = None

    # ------------------------------------------------------------------- access
    @property
    def images(self) -> np.ndarray:
        """All drawings as a read-only ``(N, H, W)`` bool array, True = background (npz format only)."""
        if self.format != "npz":
            raise AttributeError("Omniglot.images is only available for the npz format")
        if self._images is None:
            images = _load_npz_images(self.root, self.cache)
            if images.shape[0] != len(self.labels):
                raise annotation_error(self.root, None, f"{images.shape[0]} images but {len(self.labels)} labels")
            self._images = images
        return self._images

    def load(self, index: int) -> Image.Image:
        if self.format == "npz":
            background = self.images[index]  # True = background / paper
            if self.invert:
                background = ~background
            return Image.fromarray(np.where(background, np.uint8(255), np.uint8(0)))
        img = load_image(self.paths[index], "L")
        return ImageOps.invert(img) if self.invert else img

    def __getstate__(self):
        # Do not pickle the (large) image array into DataLoader workers; they reload it lazily.
        state = self.__dict__.copy()
        state["_images"] = None
        return state
