"""Caltech-101 (Fei-Fei, Fergus, Perona, 2004) as a zero-shot retrieval benchmark.

Expected layout -- the one ``torchvision.datasets.Caltech101(root=<root>,
download=False)`` reads::

    <root>/caltech101/101_ObjectCategories/<class>/image_0001.jpg ...

``root`` may also be the ``caltech101`` folder or the ``101_ObjectCategories``
folder itself.

Split: the 101 object classes in sorted order (Python ``sorted``, as
torchvision does: ``Faces``, ``Faces_easy``, ``Leopards``, ``Motorbikes``,
``accordion``, ...), without the clutter class ``BACKGROUND_Google``; the first
50 classes are the training split, the remaining 51 the test split.  Images
are converted to RGB (some are grayscale).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Optional, Union

from gca.data.base import layout_line
from gca.data.folder import ImageFolderDML
from gca.data.root import resolve_data_root

__all__ = ["Caltech101", "CALTECH_LAYOUT"]

CALTECH_LAYOUT = """\
  <root>/caltech101/101_ObjectCategories/<class>/image_0001.jpg
(the layout of torchvision.datasets.Caltech101: extract 101_ObjectCategories.tar.gz into <root>/caltech101/)"""

BACKGROUND_CLASS = "BACKGROUND_Google"


def _find_categories_dir(root: Path) -> Optional[Path]:
    for cand in (root / "caltech101" / "101_ObjectCategories", root / "101_ObjectCategories", root):
        if cand.name == "101_ObjectCategories" and cand.is_dir():
            return cand
    return None


class Caltech101(ImageFolderDML):
    """Caltech-101, class-disjoint split: first 50 sorted classes train, other 51 test.

    Args:
        root: Data root (``<root>/caltech101/101_ObjectCategories``); ``None`` uses
            :func:`gca.data.resolve_data_root`.
        split: ``"train"``, ``"test"`` or ``"all"``.
        transform: Callable applied to the RGB PIL image.
        include_background: Keep ``BACKGROUND_Google`` as a class (default ``False``, as torchvision).
        **kwargs: Passed to :class:`ImageFolderDML` (e.g. ``train_fraction``, ``seed``) to use a different class
            split.
    """

    name = "caltech101"

    def __init__(
        self,
        root: Optional[Union[str, os.PathLike]] = None,
        split: str = "train",
        transform: Optional[Callable] = None,
        *,
        include_background: bool = False,
        **kwargs,
    ) -> None:
        data_root = resolve_data_root(root)
        cats = _find_categories_dir(data_root)
        if cats is None:
            raise FileNotFoundError(
                f"Caltech-101: folder {str(data_root / 'caltech101' / '101_ObjectCategories')!r} not found; "
                f"expected layout: {layout_line(CALTECH_LAYOUT)}"
            )
        exclude = tuple(kwargs.pop("exclude", ())) + (() if include_background else (BACKGROUND_CLASS,))
        super().__init__(cats, split, transform, exclude=exclude, **kwargs)
