"""Metric losses by name, so that "Proxy-Anchor + GCA-HNG" is one line of configuration."""
from __future__ import annotations

from typing import Callable, Dict, List

from torch import nn

from gca.losses.npair import NPairLoss

_METRIC_LOSSES: Dict[str, Callable[..., nn.Module]] = {}


def register_metric_loss(name: str):
    """Register ``fn(num_classes, embedding_dim, **kwargs) -> loss module`` under ``name``."""
    def _register(fn):
        _METRIC_LOSSES[name] = fn
        return fn
    return _register


def list_metric_losses() -> List[str]:
    return sorted(_METRIC_LOSSES)


def create_metric_loss(name: str, num_classes: int, embedding_dim: int, **kwargs) -> nn.Module:
    """Build a metric loss callable as ``loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)``."""
    if name not in _METRIC_LOSSES:
        raise ValueError(f"unknown metric loss {name!r}; available: {', '.join(list_metric_losses())}")
    return _METRIC_LOSSES[name](num_classes, embedding_dim, **kwargs)


@register_metric_loss("npair")
def _npair(num_classes, embedding_dim, l2_reg=3e-3):
    return NPairLoss(l2_reg=l2_reg)


@register_metric_loss("proxy_anchor")
def _proxy_anchor(num_classes, embedding_dim, margin=0.1, alpha=32):
    from pytorch_metric_learning.losses import ProxyAnchorLoss
    return ProxyAnchorLoss(num_classes, embedding_dim, margin=margin, alpha=alpha)


@register_metric_loss("multi_similarity")
def _multi_similarity(num_classes, embedding_dim, alpha=2.0, beta=50.0, base=0.5):
    from pytorch_metric_learning.losses import MultiSimilarityLoss
    return MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)


@register_metric_loss("triplet")
def _triplet(num_classes, embedding_dim, margin=0.1):
    from pytorch_metric_learning.losses import TripletMarginLoss
    return TripletMarginLoss(margin=margin)
