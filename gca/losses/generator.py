"""Generator-side losses of GCA-HNG (METHOD 2.5): label preservation, hardness, diversity."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from gca.synthesis import Synthetics


def label_preservation_loss(classifier: nn.Linear, synthetics: Synthetics) -> Tensor:
    """Cross-entropy of the synthetics through the (frozen) classifier against their negative class.

    The classifier's weights are used detached: this loss trains the generator only, so it leaves no
    stray gradient on the classifier (the authors' code accumulated one and discarded it).
    """
    if len(synthetics) == 0:
        return synthetics.embeddings.sum() * 0.0
    logits = F.linear(synthetics.embeddings, classifier.weight.detach(),
                      None if classifier.bias is None else classifier.bias.detach())
    return F.cross_entropy(logits, synthetics.labels)


def hardness_loss(embeddings: Tensor, synthetics: Synthetics) -> Tensor:
    """Mean of ``1 - cos(anchor, synthetic)`` over the synthetic rows.

    Every row is a genuine (anchor, negative class) pair, so no mask is needed: this is the intended
    loss that the authors' mis-indexed mask (METHOD D1) computed wrongly.
    """
    if len(synthetics) == 0:
        return synthetics.embeddings.sum() * 0.0
    anchors = embeddings[synthetics.anchor_index]
    return (1 - F.cosine_similarity(anchors, synthetics.embeddings.to(anchors.dtype), dim=1, eps=1e-8)).mean()


def diversity_loss(lam: Tensor, anchor_of_edge: Tensor, num_nodes: int, scale: float = 0.01,
                   reduce: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    r"""Reward the spread of the interpolation vectors of each anchor's edges.

    .. math::
        J_{div} = s\Big(1 - \sqrt{\tfrac1{|E|}\textstyle\sum_{e} \lVert\lambda_e - \bar\lambda_{a(e)}\rVert^2}\Big)

    with :math:`\bar\lambda_a` the mean over the edges of anchor :math:`a` and :math:`s = 0.01`. The
    caller passes the edges whose :math:`\lambda` feeds synthesis (the authors used every edge,
    including same-class ones whose :math:`\lambda` is never used).

    ``reduce`` (a differentiable sum over processes) takes the mean over every process's edges, for a graph
    sharded by edges (each anchor's edges on one process); every process must call it.
    """
    if reduce is None and lam.shape[0] == 0:
        return lam.sum() * 0.0 + scale
    mean = scatter(lam, anchor_of_edge, dim=0, dim_size=num_nodes, reduce="mean")
    squared = (lam - mean[anchor_of_edge]).pow(2).sum(1)
    if reduce is None:
        spread = squared.mean()
    else:
        count = reduce(torch.tensor(float(squared.numel()), dtype=squared.dtype, device=squared.device))
        if count.item() == 0:
            return lam.sum() * 0.0 + scale
        spread = reduce(squared.sum()) / count
    return scale * (1 - (spread + 1e-12).sqrt())
