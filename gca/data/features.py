"""Cache of frozen-backbone features.

With a frozen backbone the embedding of every image is fixed, so it is
computed once and stored; training of the heads (and GCA-HNG) then runs on
the cached vectors.

``cached_features(backbone, dataset, cache_path, ...)`` returns a
:class:`FeatureDataset`.  The cache file is a ``torch.save`` dict::

    {"features": float32 (N, D), "labels": int64 (N,), "key": {...}, "hash": "<sha256>",
     "class_names": [...]}

It is keyed by a hash of the dataset name, split, backbone name, number of
items, a digest of the labels, a fingerprint of the backbone weights and any
``extra_key``; a file whose hash differs is recomputed.  Files are written
atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gca.io import atomic_save

__all__ = ["FeatureDataset", "cached_features", "compute_features", "feature_cache_key", "load_features",
           "module_fingerprint"]

log = logging.getLogger(__name__)


class FeatureDataset(Dataset):
    """``TensorDataset``-style dataset over precomputed features.

    Items are ``(features[i], int(labels[i]))``.  ``labels`` is a 1-D ``int64``
    numpy array (as for the image datasets), ``tensors`` is
    ``(features, labels_tensor)`` like :class:`torch.utils.data.TensorDataset`.
    """

    def __init__(
        self,
        features: torch.Tensor,
        labels: Union[torch.Tensor, np.ndarray],
        class_names: Optional[list[str]] = None,
        key: Optional[Mapping[str, Any]] = None,
        path: Optional[Union[str, os.PathLike]] = None,
    ) -> None:
        features = torch.as_tensor(features)
        labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
        if features.ndim != 2 or features.shape[0] != labels_t.shape[0]:
            raise ValueError(
                f"features must be (N, D) with N = len(labels); got {tuple(features.shape)} and "
                f"{labels_t.shape[0]} labels"
            )
        self.features = features
        self.labels_tensor = labels_t
        self.labels = labels_t.numpy()
        n_cls = int(self.labels.max()) + 1 if self.labels.size else 0
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(n_cls)]
        self.key = dict(key) if key is not None else {}
        self.path = Path(path) if path is not None else None
        self.split = self.key.get("split")
        self.name = self.key.get("dataset", "features")

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features, self.labels_tensor

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def dim(self) -> int:
        """Feature dimension ``D``."""
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __getitem__(self, i: int):
        return self.features[i], int(self.labels[i])

    def __repr__(self) -> str:
        return f"FeatureDataset(items={len(self)}, dim={self.dim}, classes={self.num_classes})"


def module_fingerprint(module: nn.Module) -> str:
    """Cheap fingerprint of a module's parameters and buffers (names, shapes, sums).

    Changes when the weights change; identical weights give identical
    fingerprints on the same software stack.
    """
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(str(t.dtype).encode())
            if t.numel() and (t.is_floating_point() or t.is_complex() or t.dtype in (torch.int64, torch.int32)):
                v = t.detach().to("cpu", torch.float64)
                h.update(np.float64(v.sum().item()).tobytes())
                h.update(np.float64(v.abs().sum().item()).tobytes())
                h.update(np.float64(v.reshape(-1)[:: max(1, v.numel() // 64)].sum().item()).tobytes())
    return h.hexdigest()[:16]


def feature_cache_key(
    dataset_name: str,
    split: Optional[str],
    backbone_name: str,
    num_items: int,
    labels: Optional[np.ndarray] = None,
    weights: Optional[str] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> tuple[dict[str, Any], str]:
    """Return ``(key_dict, sha256_hex)`` identifying a feature cache."""
    key = {
        "dataset": str(dataset_name),
        "split": None if split is None else str(split),
        "backbone": str(backbone_name),
        "num_items": int(num_items),
        "labels_sha256": None if labels is None
        else hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest(),
        "weights": weights,
        "extra": {str(k): extra[k] for k in sorted(extra)} if extra else None,
    }
    text = json.dumps(key, sort_keys=True, default=str)
    return json.loads(text), hashlib.sha256(text.encode()).hexdigest()


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, Mapping):
        for name in ("embeddings", "features", "pooler_output", "last_hidden_state"):
            if isinstance(out.get(name), torch.Tensor):
                return out[name]
    raise TypeError(f"backbone output of type {type(out).__name__} is not a tensor (or tuple/dict of tensors)")


@torch.no_grad()
def compute_features(
    backbone: nn.Module,
    dataset: Dataset,
    batch_size: int = 128,
    device: Union[str, torch.device] = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed every item of ``dataset`` (in order) with ``backbone``.

    The backbone runs in eval mode without gradients (its previous mode is
    restored).  Outputs are flattened to ``(N, D)`` float32 on the CPU.
    Returns ``(features, labels)``.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    feats, labels = [], []
    try:
        for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
            out = _first_tensor(backbone(x.to(device, non_blocking=True)))
            feats.append(out.reshape(out.shape[0], -1).float().cpu())
            labels.append(torch.as_tensor(y, dtype=torch.int64).reshape(-1))
    finally:
        backbone.train(was_training)
    if not feats:
        raise ValueError("dataset is empty; nothing to embed")
    return torch.cat(feats), torch.cat(labels)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def load_features(path: Union[str, os.PathLike]) -> FeatureDataset:
    """Load a feature cache file written by :func:`cached_features`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature cache {str(path)!r} not found")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "features" not in blob or "labels" not in blob:
        raise ValueError(f"{str(path)!r} is not a feature cache (expected a dict with 'features' and 'labels')")
    return FeatureDataset(blob["features"], blob["labels"], blob.get("class_names"), blob.get("key"), path)


def cached_features(
    backbone: nn.Module,
    dataset: Dataset,
    cache_path: Union[str, os.PathLike],
    batch_size: int = 128,
    device: Union[str, torch.device] = "cpu",
    *,
    backbone_name: Optional[str] = None,
    dataset_name: Optional[str] = None,
    split: Optional[str] = None,
    extra_key: Optional[Mapping[str, Any]] = None,
    fingerprint_weights: bool = True,
    num_workers: int = 0,
    progress: bool = True,
    recompute: bool = False,
) -> FeatureDataset:
    """Compute the backbone features of a dataset once and reuse them.

    Args:
        backbone: Frozen feature extractor; called as ``backbone(images)``.
        dataset: Dataset of ``(image_tensor, label)`` (with the evaluation transform).
        cache_path: A directory (the file name is derived from the key:
            ``<dataset>_<split>_<backbone>_<hash16>.pt``) or a file path ending in ``.pt``.
        batch_size, device, num_workers: Used for the forward passes.
        backbone_name: Name identifying the backbone (e.g. ``"resnet50.a1_in1k"``); defaults to the class name. Part
            of the cache key.
        dataset_name, split: Default to ``dataset.name`` / ``dataset.split`` (or the class name).
        extra_key: Anything else the features depend on (image size, transform, ...).
        fingerprint_weights: Include a fingerprint of the backbone weights in the key (default), so that a retrained
            backbone never reuses stale features.
        progress: Show a tqdm progress bar.
        recompute: Ignore an existing cache file.

    Returns:
        FeatureDataset: With ``path`` set to the cache file and ``key`` to the key dict.
    """
    backbone_name = backbone_name or type(backbone).__name__
    dataset_name = dataset_name or getattr(dataset, "name", None) or type(dataset).__name__
    split = split if split is not None else getattr(dataset, "split", None)
    labels = getattr(dataset, "labels", None)
    labels = None if labels is None else np.asarray(labels)
    weights = module_fingerprint(backbone) if fingerprint_weights else None
    key, digest = feature_cache_key(dataset_name, split, backbone_name, len(dataset), labels, weights, extra_key)

    cache_path = Path(cache_path)
    if cache_path.suffix == ".pt":
        path = cache_path
    else:
        path = cache_path / f"{_slug(dataset_name)}_{_slug(str(split))}_{_slug(backbone_name)}_{digest[:16]}.pt"

    if path.is_file() and not recompute:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt / foreign file: recompute
            log.warning("feature cache %s unreadable (%s); recomputing", path, exc)
        else:
            if isinstance(blob, dict) and blob.get("hash") == digest:
                log.info("loaded cached features from %s", path)
                return FeatureDataset(blob["features"], blob["labels"], blob.get("class_names"), blob.get("key"), path)
            log.warning("feature cache %s was computed for a different key; recomputing", path)

    feats, labs = compute_features(backbone, dataset, batch_size, device, num_workers, progress,
                                   desc=f"{dataset_name}/{split} features")
    if labels is not None and not np.array_equal(labs.numpy(), labels):
        raise RuntimeError("labels returned by the dataset items differ from dataset.labels")
    class_names = getattr(dataset, "class_names", None)
    blob = {
        "features": feats,
        "labels": labs,
        "key": key,
        "hash": digest,
        "class_names": list(class_names) if class_names is not None else None,
    }
    atomic_save(blob, path)
    return FeatureDataset(feats, labs, blob["class_names"], key, path)
