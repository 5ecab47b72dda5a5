"""Datasets, splits, samplers, transforms and feature caches for deep metric learning.

Quick start::

    from gca.data import create_dataset, build_transforms, ClassBalancedBatchSampler

    train = create_dataset("cub200", split="train", transform=build_transforms("imagenet", train=True))
    sampler = ClassBalancedBatchSampler(train.labels, classes_per_batch=8, samples_per_class=4, seed=0)
    loader = torch.utils.data.DataLoader(train, batch_sampler=sampler, num_workers=4)

Every dataset returns ``(image, int label)`` and exposes ``labels`` (1-D
``int64`` numpy array of contiguous ids ``0..C-1``), ``num_classes`` and
``class_names``.  The data root defaults to ``$GCA_DATA_ROOT`` or
``../shared/data`` (see :func:`resolve_data_root`).  Layouts, splits and
preparation are described in ``datasets/README.md``.
"""

from gca.data.base import (
    AnnotationError,
    CorruptImageError,
    DMLDataset,
    ImageListDataset,
    load_image,
)
from gca.data.caltech import Caltech101
from gca.data.cars import Cars196
from gca.data.cub import CUB200
from gca.data.features import FeatureDataset, cached_features, compute_features, load_features
from gca.data.folder import ImageFolderDML
from gca.data.inshop import InShop
from gca.data.omniglot import Omniglot, clear_omniglot_cache
from gca.data.registry import (
    DATASETS,
    UnknownDatasetError,
    canonical_name,
    create_dataset,
    dataset_splits,
    list_datasets,
    register_dataset,
)
from gca.data.root import DATA_ROOT_ENV, resolve_data_root
from gca.data.sampler import ClassBalancedBatchSampler
from gca.data.sop import StanfordOnlineProducts
from gca.data.splits import ClassSubset, carve_validation, split_classes
from gca.data.transforms import build_transforms

__all__ = [
    "AnnotationError",
    "CorruptImageError",
    "DMLDataset",
    "ImageListDataset",
    "load_image",
    "CUB200",
    "Cars196",
    "StanfordOnlineProducts",
    "InShop",
    "Omniglot",
    "clear_omniglot_cache",
    "Caltech101",
    "ImageFolderDML",
    "ClassSubset",
    "carve_validation",
    "split_classes",
    "ClassBalancedBatchSampler",
    "build_transforms",
    "FeatureDataset",
    "cached_features",
    "compute_features",
    "load_features",
    "DATASETS",
    "create_dataset",
    "list_datasets",
    "dataset_splits",
    "canonical_name",
    "register_dataset",
    "UnknownDatasetError",
    "resolve_data_root",
    "DATA_ROOT_ENV",
]
