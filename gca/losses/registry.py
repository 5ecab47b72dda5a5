"""Metric losses by name (:data:`METRIC_LOSSES`), so that "Proxy-Anchor + GCA-HNG" is one line of configuration.

An entry is a builder ``fn(num_classes, embedding_dim, **kwargs) -> loss module``; the module is called as
``loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)``. ``METRIC_LOSSES`` is a
:class:`gca.registry.Registry`; ``register_metric_loss`` and ``list_metric_losses`` are its ``register`` and
``list`` methods.
"""
from __future__ import annotations

from torch import nn

from gca.losses.npair import NPairLoss
from gca.registry import Registry

__all__ = ["METRIC_LOSSES", "register_metric_loss", "list_metric_losses", "create_metric_loss"]

#: Metric loss name -> builder ``fn(num_classes, embedding_dim, **kwargs) -> nn.Module``.
METRIC_LOSSES = Registry("metric loss")

#: ``register_metric_loss("name", fn)`` or ``@register_metric_loss("name", overwrite=False)``.
register_metric_loss = METRIC_LOSSES.register

#: ``list_metric_losses(filter=None)``: registered metric losses, sorted.
list_metric_losses = METRIC_LOSSES.list


def create_metric_loss(name: str, num_classes: int, embedding_dim: int, **kwargs) -> nn.Module:
    """Build a metric loss callable as ``loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)``.

    Args:
        name: one of :func:`list_metric_losses`.
        num_classes: classes of the training set (proxy losses hold one proxy per class).
        embedding_dim: width of the embeddings.
        **kwargs: options of that loss (e.g. ``margin``).

    Raises:
        gca.registry.UnknownNameError: an unknown ``name`` (a ``ValueError``).
    """
    return METRIC_LOSSES.create(name, num_classes, embedding_dim, **kwargs)


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
