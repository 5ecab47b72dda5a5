"""Multi-class N-pair loss (Sohn, NeurIPS 2016) on raw dot products, as a pytorch-metric-learning loss."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from pytorch_metric_learning.distances import DotProductSimilarity
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.regularizers import LpRegularizer
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import Tensor
from torch_geometric.utils import scatter


def _group_logsumexp(values: Tensor, group: Tensor, num_groups: int) -> Tensor:
    """``logsumexp`` of ``values`` within each group (``-inf`` for an empty group)."""
    if values.numel() == 0:
        return values.new_full((num_groups,), float("-inf"))
    # The shift only stabilises exp(); it cancels out, so it carries no gradient.
    shift = scatter(values.detach(), group, dim=0, dim_size=num_groups, reduce="max")
    total = scatter((values - shift[group]).exp(), group, dim=0, dim_size=num_groups, reduce="sum")
    return shift + total.log()


class NPairLoss(BaseMetricLossFunction):
    r"""N-pair loss over every positive pair, a pytorch-metric-learning loss.

    For a positive pair :math:`(a, p)` with negatives :math:`\mathcal N(a, p)` and similarity :math:`s`
    (raw dot products by default; embeddings are not normalised, METHOD D15):

    .. math::
        \ell_{ap} = \log\Big(1 + \sum_{n \in \mathcal N(a,p)} \exp(s_{an} - s_{ap})\Big),

    reduced over the pairs by the reducer (the mean by default), plus
    :math:`\tfrac14 \lambda_{l2}` times the mean squared norm of the anchors and of the references (the
    authors' regulariser): pytorch-metric-learning's embedding regulariser
    (``LpRegularizer(p=2, power=2)`` with ``embedding_reg_weight`` :math:`\tfrac14 \lambda_{l2}`) on the
    anchors, and the same regulariser on the references as the ``ref_emb_reg_loss`` sub-loss. Without
    ``ref_emb`` the references are the anchors, so the two terms are equal.

    Who is positive and negative comes from the labels: without ``indices_tuple`` every same-label pair
    (self excluded when there is no ``ref_emb``) is a positive pair and every other-label reference a
    negative of it (``lmu.get_all_pairs_indices``). With ``indices_tuple`` as pairs ``(a1, p, a2, n)`` the
    negatives of ``(a1, p)`` are the ``n`` with ``a2 == a1``; as triplets ``(a, p, n)`` the negatives of
    pair ``(a, p)`` are the ``n`` listed with it. That last rule is why triplets are not turned into pairs
    first (``lmu.convert_to_pairs`` would give each pair all negatives of its anchor, listed once per
    positive); it is how the synthetic N-pair of GCA-HNG gives each anchor its own synthetic negatives
    (see :func:`gca.losses.synthetic_indices`). Repeated positive pairs count once; a batch with no
    positive pair gives only the regulariser.

    It declares ``is_proxy_loss = False`` (:func:`gca.losses.is_proxy_loss`): it has no class weights and
    takes ``indices_tuple`` and ``ref_emb``, so GCA-HNG passes it the synthetics as per-anchor negatives.

    Args:
        l2_reg: :math:`\lambda_{l2}` (3e-3 in the paper's code); 0 drops the regulariser.
        **kwargs: pytorch-metric-learning's loss options (``distance``, ``reducer``,
            ``embedding_regularizer``, ``embedding_reg_weight``, ``collect_stats``). A distance that is not
            a similarity is negated.

    Shapes:
        embeddings ``[B, D]``, labels ``[B]``, ref_emb ``[M, D]``, ref_labels ``[M]`` -> scalar
    """

    is_proxy_loss = False

    def __init__(self, l2_reg: float = 3e-3, **kwargs):
        if l2_reg:
            kwargs.setdefault("embedding_regularizer", LpRegularizer(p=2, power=2))
            kwargs.setdefault("embedding_reg_weight", 0.25 * l2_reg)
        super().__init__(**kwargs)
        self.l2_reg = l2_reg
        self.add_to_recordable_attributes(list_of_names=["l2_reg"], is_stat=False)

    def get_default_distance(self) -> DotProductSimilarity:
        return DotProductSimilarity(normalize_embeddings=False)

    def _sub_loss_names(self):
        # the references get the embedding regulariser too; while __init__ builds the reducer this
        # attribute still holds the mixin's "regulariser given" flag, later the regulariser or None
        return ["loss", "ref_emb_reg_loss"] if self.embedding_regularizer else ["loss"]

    def forward(self, embeddings: Tensor, labels: Optional[Tensor] = None,
                indices_tuple: Optional[Tuple[Tensor, ...]] = None, ref_emb: Optional[Tensor] = None,
                ref_labels: Optional[Tensor] = None) -> Tensor:
        # pytorch-metric-learning would silently drop ref_labels without ref_emb, and compare the labels
        # with themselves for ref_emb without ref_labels
        if ref_labels is not None and ref_emb is None:
            raise ValueError("ref_labels was given without ref_emb")
        if ref_emb is not None and ref_labels is None and indices_tuple is None:
            raise ValueError("ref_emb needs ref_labels (or an indices_tuple)")
        if indices_tuple is not None and len(indices_tuple) not in (3, 4):
            raise ValueError(f"indices_tuple must hold 3 (triplets) or 4 (pairs) tensors, got {len(indices_tuple)}")
        return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        mat = self.distance(embeddings, ref_emb)
        if not self.distance.is_inverted:
            mat = -mat
        if indices_tuple is not None and len(indices_tuple) == 3:
            a, p, n = indices_tuple
            pairs, pair_of = (a * mat.shape[1] + p).unique(return_inverse=True)
            anchor, positive = pairs // mat.shape[1], pairs % mat.shape[1]
            lse_neg = _group_logsumexp(mat[a, n], pair_of, pairs.numel())
        else:
            a1, p, a2, n = lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
            # pairs drawn from the labels are unique already; given ones may repeat
            anchor, positive = (a1, p) if indices_tuple is None else torch.stack([a1, p]).unique(dim=1)
            lse_neg = _group_logsumexp(mat[a2, n], a2, mat.shape[0])[anchor]
        if anchor.numel() == 0:
            loss_dict = self.zero_losses()
        else:
            s_pos = mat[anchor, positive]
            losses = torch.logaddexp(s_pos, lse_neg) - s_pos       # 0 for a pair without negatives
            loss_dict = {"loss": {"losses": losses, "indices": (anchor, positive), "reduction_type": "pos_pair"}}
        if self.embedding_regularizer is not None:
            loss_dict["ref_emb_reg_loss"] = self.embedding_regularization_loss(ref_emb)
        return loss_dict

    def extra_repr(self) -> str:
        return f"l2_reg={self.l2_reg}"
