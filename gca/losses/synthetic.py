"""Metric losses on synthetic negatives: any pytorch-metric-learning loss, or the built-in N-pair."""
from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor

from gca.synthesis import Synthetics

SYNTHETIC_LOSS_MODES = ("auto", "pairs", "embeddings")


def synthetic_indices(labels: Tensor, synthetics: Synthetics) -> Tuple[Tensor, Tensor, Tensor]:
    """Triplets ``(anchor, positive, B + s)`` tying each synthetic row ``s`` to its own anchor.

    The references are ``cat([embeddings, synthetics.embeddings])``: positives are real samples of the
    anchor's class (self excluded), negatives are that anchor's synthetics only.
    """
    b = labels.shape[0]
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    same.fill_diagonal_(False)
    rows = torch.arange(len(synthetics), device=labels.device)
    # every (synthetic row, positive of its anchor) combination
    s_idx, pos = same[synthetics.anchor_index].nonzero(as_tuple=True)
    return synthetics.anchor_index[s_idx], pos, b + rows[s_idx]


def is_proxy_loss(loss_fn: Callable) -> bool:
    """pytorch-metric-learning's proxy and classification losses hold their class weights as parameters
    (``proxies`` or ``W``) and do not accept ``ref_emb``."""
    return hasattr(loss_fn, "proxies") or hasattr(loss_fn, "W")


def synthetic_metric_loss(loss_fn: Callable, embeddings: Tensor, labels: Tensor, synthetics: Synthetics,
                          mode: str = "auto") -> Tensor:
    """Apply a metric loss to the synthetic negatives of a batch.

    ``mode="pairs"`` calls ``loss_fn(embeddings, labels, indices_tuple=triplets, ref_emb=..., ref_labels=...)``
    with the triplets of :func:`synthetic_indices`, so each anchor meets its positives and its own
    synthetic negatives (N-pair, triplet, multi-similarity, contrastive...). ``mode="embeddings"`` treats
    the synthetics as extra samples labelled with their negative class,
    ``loss_fn(cat(embeddings, synthetics), cat(labels, synthetic labels))``, which is what proxy losses
    (Proxy-Anchor, Proxy-NCA, ...) support. ``"auto"`` picks ``"embeddings"`` for proxy losses.
    """
    if mode not in SYNTHETIC_LOSS_MODES:
        raise ValueError(f"synthetic loss mode must be one of {SYNTHETIC_LOSS_MODES}, got {mode!r}")
    if mode == "auto":
        mode = "embeddings" if is_proxy_loss(loss_fn) else "pairs"
    synth = synthetics.embeddings.to(embeddings.dtype)
    if len(synthetics) == 0:
        return 0.0 * embeddings.sum()
    if mode == "embeddings":
        return loss_fn(torch.cat([embeddings, synth]), torch.cat([labels, synthetics.labels]))
    triplets = synthetic_indices(labels, synthetics)
    return loss_fn(embeddings, labels, indices_tuple=triplets, ref_emb=torch.cat([embeddings, synth]),
                   ref_labels=torch.cat([labels, synthetics.labels]))
