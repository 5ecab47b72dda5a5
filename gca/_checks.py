"""Input validation shared by the public entry points, so bad input fails where it enters."""
from __future__ import annotations

import torch
from torch import Tensor


def check_embeddings_and_labels(embeddings: Tensor, labels: Tensor, *, min_classes: int = 1) -> None:
    """Raise a clear ``TypeError``/``ValueError`` for anything a batch of embeddings cannot be."""
    if not isinstance(embeddings, Tensor):
        raise TypeError(f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must have shape [B, D], got {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise TypeError(f"embeddings must be floating point, got {embeddings.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"labels must have shape [B], got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"embeddings and labels differ in length: {embeddings.shape[0]} embeddings, {labels.shape[0]} labels")
    if embeddings.shape[0] < 2:
        raise ValueError(f"a batch needs at least 2 samples, got {embeddings.shape[0]}")
    if labels.device != embeddings.device:
        raise ValueError(f"embeddings are on {embeddings.device} but labels on {labels.device}")
    if not torch.isfinite(embeddings).all():
        bad = (~torch.isfinite(embeddings)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"embeddings contain NaN or infinite values (rows {bad[:10]}{'...' if len(bad) > 10 else ''})")
    if min_classes > 1:
        num_classes = int(labels.unique().numel())
        if num_classes < min_classes:
            raise ValueError(
                f"the batch holds {num_classes} class(es); hard negative generation needs at least "
                f"{min_classes} classes per batch")


def check_label_range(labels: Tensor, num_classes: int) -> None:
    """Labels index classifier rows, so they must lie in ``[0, num_classes)``."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for a classifier over {num_classes} training classes; "
            f"got min {int(labels.min())}, max {int(labels.max())}")
