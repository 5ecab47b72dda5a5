"""Name -> dataset registry.

``create_dataset(name, root=None, split="train", transform=None, **kw)`` builds
any dataset by name.  Names are case-insensitive and ``-``/``_`` are ignored,
so ``"CUB-200"`` finds ``"cub200"``, and aliases such as ``"cub"``, ``"cars"``,
``"in-shop"`` work.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .caltech import Caltech101
from .cars import Cars196
from .cub import CUB200
from .folder import ImageFolderDML
from .inshop import InShop
from .omniglot import Omniglot
from .sop import StanfordOnlineProducts

__all__ = ["DATASETS", "UnknownDatasetError", "create_dataset", "list_datasets", "register_dataset", "dataset_splits",
           "canonical_name"]

#: Canonical name -> dataset class (or factory with the same signature).
DATASETS: dict[str, Callable] = {
    "cub200": CUB200,
    "cars196": Cars196,
    "sop": StanfordOnlineProducts,
    "inshop": InShop,
    "omniglot": Omniglot,
    "caltech101": Caltech101,
    "imagefolder": ImageFolderDML,
}

_ALIASES = {
    "cub": "cub200",
    "cub2002011": "cub200",
    "cub200_2011": "cub200",
    "cars": "cars196",
    "stanfordcars": "cars196",
    "stanfordonlineproducts": "sop",
    "products": "sop",
    "inshopclothes": "inshop",
    "deepfashion": "inshop",
    "caltech": "caltech101",
    "folder": "imagefolder",
}


class UnknownDatasetError(KeyError, ValueError):
    """A dataset name that is not registered: a ``KeyError`` (a failed lookup) and a ``ValueError`` (bad input)."""

    def __str__(self) -> str:
        # KeyError's own str() would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


def _norm(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "").replace(" ", "")


def canonical_name(name: str) -> str:
    """Map a dataset name or alias to its canonical registry name.

    Raises :class:`UnknownDatasetError` (a ``KeyError`` and a ``ValueError``) listing the known names when it
    is unknown.
    """
    n = _norm(name)
    for canon in DATASETS:
        if _norm(canon) == n:
            return canon
    for alias, canon in _ALIASES.items():
        if _norm(alias) == n:
            return canon
    raise UnknownDatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")


def list_datasets() -> list[str]:
    """Canonical names of the registered datasets, sorted."""
    return sorted(DATASETS)


def dataset_splits(name: str) -> tuple[str, ...]:
    """Split names accepted by a dataset (e.g. ``("train", "query", "gallery")``)."""
    return tuple(getattr(DATASETS[canonical_name(name)], "splits", ("train", "test")))


def register_dataset(name: str, factory: Callable, overwrite: bool = False) -> None:
    """Register a dataset class/factory ``factory(root=..., split=..., transform=..., **kw)``."""
    key = str(name).lower()
    if key in DATASETS and not overwrite:
        raise ValueError(f"dataset {name!r} is already registered (pass overwrite=True to replace it)")
    DATASETS[key] = factory


def create_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "train",
    transform: Callable | None = None,
    **kwargs,
):
    """Build a dataset by name.

    Parameters
    ----------
    name:
        ``"cub200"``, ``"cars196"``, ``"sop"``, ``"inshop"``, ``"omniglot"``,
        ``"caltech101"`` or ``"imagefolder"`` (or an alias).
    root:
        Data root (``None``: :func:`gca.data.resolve_data_root`).  For
        ``"imagefolder"`` it is the class-per-folder directory itself and is
        required.
    split:
        Split name; see :func:`dataset_splits`.
    transform:
        Callable applied to each image (see :mod:`gca.data.transforms`).
    **kwargs:
        Dataset-specific options (e.g. ``download=True`` for Omniglot,
        ``train_fraction``/``seed`` for ``imagefolder``).
    """
    canon = canonical_name(name)
    if canon == "imagefolder" and root is None:
        raise ValueError("dataset 'imagefolder' needs root= pointing at a folder with one sub-folder per class")
    return DATASETS[canon](root=root, split=split, transform=transform, **kwargs)
