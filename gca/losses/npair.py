"""Multi-class N-pair loss (Sohn, NeurIPS 2016) on raw dot products, pytorch-metric-learning style."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter


def _group_logsumexp(values: Tensor, group: Tensor, num_groups: int) -> Tensor:
    shift = scatter(values.detach(), group, dim=0, dim_size=num_groups, reduce="max")
    total = scatter((values - shift[group]).exp(), group, dim=0, dim_size=num_groups, reduce="sum")
    return shift + total.log()


class NPairLoss(nn.Module):
    r"""N-pair loss over every positive pair, callable like a pytorch-metric-learning loss.

    For a positive pair :math:`(a, p)` with negatives :math:`\mathcal N(a, p)`:

    .. math::
        \ell_{ap} = \log\Big(1 + \sum_{n \in \mathcal N(a,p)} \exp(z_a^\top r_n - z_a^\top r_p)\Big),

    averaged over the pairs, plus :math:`\tfrac14 \lambda_{l2}` times the mean squared norm of the anchors
    and of the references (the authors' regulariser; embeddings are not normalised, METHOD D15).

    Who is positive and negative comes from the labels: without ``indices_tuple`` every same-label pair
    (self excluded when there is no ``ref_emb``) is a positive pair and every other-label reference a
    negative of it. With ``indices_tuple`` as triplets ``(a, p, n)`` the negatives of pair ``(a, p)``
    are the ``n`` listed with it; as pairs ``(a1, p, a2, n)`` the negatives of ``(a1, p)`` are the ``n``
    with ``a2 == a1``. This is how the synthetic N-pair of GCA-HNG gives each anchor its own
    synthetic negatives (see :func:`gca.losses.synthetic_indices`).

    Args:
        l2_reg: :math:`\lambda_{l2}` (3e-3 in the paper's code).
    """

    def __init__(self, l2_reg: float = 3e-3):
        super().__init__()
        self.l2_reg = l2_reg

    def forward(self, embeddings: Tensor, labels: Tensor, indices_tuple: Optional[Tuple[Tensor, ...]] = None,
                ref_emb: Optional[Tensor] = None, ref_labels: Optional[Tensor] = None) -> Tensor:
        if (ref_emb is None) != (ref_labels is None):
            raise ValueError("ref_emb and ref_labels must be given together")
        self_ref = ref_emb is None
        refs = embeddings if self_ref else ref_emb
        ref_labels = labels if self_ref else ref_labels
        if refs.shape[0] != ref_labels.shape[0] or embeddings.shape[0] != labels.shape[0]:
            raise ValueError("embeddings/labels or ref_emb/ref_labels differ in length")
        sim = embeddings @ refs.T
        if indices_tuple is None:
            same = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
            pos = same.clone()
            if self_ref:
                pos.fill_diagonal_(False)
            neg_sim = sim.masked_fill(same, float("-inf"))
            lse_neg = torch.logsumexp(neg_sim, dim=1)                      # -inf when no negative
            anchor, positive = pos.nonzero(as_tuple=True)
            pair_lse = lse_neg[anchor]
        elif len(indices_tuple) == 3:
            anchor_t, pos_t, neg_t = indices_tuple
            m = refs.shape[0]
            pairs, group = (anchor_t * m + pos_t).unique(return_inverse=True)
            anchor, positive = pairs // m, pairs % m
            pair_lse = _group_logsumexp(sim[anchor_t, neg_t], group, pairs.numel())
        elif len(indices_tuple) == 4:
            a1, p, a2, n = indices_tuple
            pairs = torch.stack([a1, p]).unique(dim=1)
            anchor, positive = pairs[0], pairs[1]
            lse_by_anchor = _group_logsumexp(sim[a2, n], a2, embeddings.shape[0]) if n.numel() else \
                sim.new_full((embeddings.shape[0],), float("-inf"))
            pair_lse = lse_by_anchor[anchor]
        else:
            raise ValueError(f"indices_tuple must hold 3 (triplets) or 4 (pairs) tensors, got {len(indices_tuple)}")
        reg = 0.25 * self.l2_reg * (embeddings.pow(2).sum(1).mean() + refs.pow(2).sum(1).mean())
        if anchor.numel() == 0:
            return reg + 0.0 * sim.sum()
        s_pos = sim[anchor, positive]
        return (torch.logaddexp(s_pos, pair_lse) - s_pos).mean() + reg

    def extra_repr(self) -> str:
        return f"l2_reg={self.l2_reg}"
