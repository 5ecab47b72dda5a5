"""Name -> dataset registry (:data:`DATASETS`).

``create_dataset(name, root=None, split="train", transform=None, **kw)`` builds
any dataset by name.  Names are case-insensitive and ``-``/``_``/spaces are ignored,
so ``"CUB-200"`` finds ``"cub200"``, and aliases such as ``"cub"``, ``"cars"``,
``"in-shop"`` work.  ``DATASETS`` is a :class:`gca.registry.Registry`;
``register_dataset``, ``list_datasets`` and ``canonical_name`` are its ``register``,
``list`` and ``canonical`` methods.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Optional, Union

from gca.data.caltech import Caltech101
from gca.data.cars import Cars196
from gca.data.cub import CUB200
from gca.data.folder import ImageFolderDML
from gca.data.inshop import InShop
from gca.data.omniglot import Omniglot
from gca.data.sop import StanfordOnlineProducts
from gca.registry import Registry, UnknownNameError

__all__ = ["DATASETS", "UnknownDatasetError", "create_dataset", "list_datasets", "register_dataset", "dataset_splits",
           "canonical_name"]


def _norm(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "").replace(" ", "")


#: Dataset name -> class (or factory with the same signature ``(root=, split=, transform=, **kw)``).
DATASETS = Registry("dataset", normalize=_norm)

#: Kept for older code: unknown dataset names raise the error every registry raises.
UnknownDatasetError = UnknownNameError

#: ``register_dataset("name", factory, overwrite=False, aliases=())``, or as a decorator on a class.
register_dataset = DATASETS.register

#: ``list_datasets(filter=None)``: canonical names of the registered datasets, sorted.
list_datasets = DATASETS.list

#: ``canonical_name(name)``: the registered name a name or alias finds; raises :class:`UnknownDatasetError`.
canonical_name = DATASETS.canonical

register_dataset("cub200", CUB200, aliases=("cub", "cub2002011"))
register_dataset("cars196", Cars196, aliases=("cars", "stanfordcars"))
register_dataset("sop", StanfordOnlineProducts, aliases=("stanfordonlineproducts", "products"))
register_dataset("inshop", InShop, aliases=("inshopclothes", "deepfashion"))
register_dataset("omniglot", Omniglot)
register_dataset("caltech101", Caltech101, aliases=("caltech",))
register_dataset("imagefolder", ImageFolderDML, aliases=("folder",))


def dataset_splits(name: str) -> tuple[str, ...]:
    """Split names accepted by a dataset (e.g. ``("train", "query", "gallery")``)."""
    return tuple(getattr(DATASETS.get(name), "splits", ("train", "test")))


def create_dataset(
    name: str,
    root: Optional[Union[str, os.PathLike]] = None,
    split: str = "train",
    transform: Optional[Callable] = None,
    **kwargs,
):
    """Build a dataset by name.

    Args:
        name: ``"cub200"``, ``"cars196"``, ``"sop"``, ``"inshop"``, ``"omniglot"``,
            ``"caltech101"`` or ``"imagefolder"`` (or an alias, any case; see :func:`list_datasets`).
        root: Data root (``None``: :func:`gca.data.resolve_data_root`).  For
            ``"imagefolder"`` it is the class-per-folder directory itself and is required.
        split: Split name; see :func:`dataset_splits`.
        transform: Callable applied to each image (see :mod:`gca.data.transforms`).
        **kwargs: Dataset-specific options (e.g. ``download=True`` for Omniglot,
            ``train_fraction``/``seed`` for ``imagefolder``).

    Raises:
        UnknownDatasetError: an unknown ``name`` (a ``KeyError`` and a ``ValueError``).
        ValueError: ``"imagefolder"`` without ``root``.
    """
    canon = canonical_name(name)
    if canon == "imagefolder" and root is None:
        raise ValueError("dataset 'imagefolder' needs root= pointing at a folder with one sub-folder per class")
    return DATASETS.create(canon, root=root, split=split, transform=transform, **kwargs)
