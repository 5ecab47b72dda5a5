"""Per-edge normalisations shared by the propagation layers."""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import scatter


def masked_edge_softmax(scores: Tensor, index: Tensor, mask: Tensor, num_nodes: int,
                        zero_logit: bool = True) -> Tensor:
    r"""Softmax of edge ``scores`` over the incoming edges of each target, restricted to ``mask``.

    With ``zero_logit`` the normaliser holds one extra logit fixed at zero (METHOD 2.3),

    .. math::
        a_{ij} = \frac{M_{ij} \exp s_{ij}}{1 + \sum_{i'} M_{i'j} \exp s_{i'j}},

    so the weights of a target sum to less than one and a target can attend to nothing. Without it,
    the weights of a target with at least one unmasked edge sum to one, and a target whose edges are
    all masked gets zeros (not NaN).

    Shapes:
        scores ``[E, H]``, index ``[E]`` (the target of each edge), mask ``[E]`` bool -> ``[E, H]``.
    """
    neg_inf = torch.finfo(scores.dtype).min
    masked = scores.masked_fill(~mask.unsqueeze(-1), neg_inf)
    # The shift only stabilises exp(); it cancels out, so it carries no gradient.
    shift = scatter(masked.detach(), index, dim=0, dim_size=num_nodes, reduce="max")
    shift = shift.clamp_min(0.0) if zero_logit else shift.masked_fill(shift <= neg_inf, 0.0)
    weights = (masked - shift[index]).exp() * mask.unsqueeze(-1)
    denom = scatter(weights, index, dim=0, dim_size=num_nodes, reduce="sum")
    if zero_logit:
        denom = denom + (-shift).exp()
    return weights / denom.clamp_min(torch.finfo(scores.dtype).tiny)[index]
