"""The edge update of GCA-HNG's global correlation learning (METHOD 2.3, edge update)."""
from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torch_geometric.nn import MessagePassing

from gca._checks import check_dropout, check_int, recompute_level
from gca.nn.functional import norm_act_linear


class GCAEdgeConv(MessagePassing):
    r"""Each edge cross-attends to its two end nodes, then a feed-forward block.

    For an edge :math:`(i \to j)` with state :math:`e_{ij}` and node states :math:`h`:

    .. math::
        n &= \mathrm{GELU}(W_{NE} h + b), \qquad
        \alpha = \operatorname{softmax}_{t \in \{i, j\}} \langle W_q e_{ij}, W_k n_t \rangle / \sqrt{D} \\
        \hat e_{ij} &= \mathrm{LN}\big(\mathrm{GELU}(\textstyle\sum_t \alpha_t W_v n_t + e_{ij})\big) \\
        e_{ij}' &= \mathrm{LN}\big(\mathrm{GELU}(\hat e_{ij}
            + W_4\, \mathrm{LN}_{4D}(\mathrm{GELU}(W_3 \hat e_{ij})))\big)

    The two end nodes are an unordered pair, so symmetric edge states stay symmetric.

    ``fast=True`` (default) never forms the per-edge query :math:`W_q e_{ij}` (an ``E x D x D`` product):
    since :math:`\langle W_q e + b_q, k\rangle = \langle e, W_q^\top k\rangle + \langle b_q, k\rangle`,
    it projects the ``N`` keys instead. ``fast=False`` is the plain reference path; both agree to
    rounding.

    Args:
        channels: node and edge width :math:`D`.
        dropout: dropout on the two attention weights (0.1 in the authors' code).
        ffn_ratio: hidden width of the feed-forward block in multiples of :math:`D`.
        fast: use the key-side projection described above.
        recompute: store less for the backward pass and recompute it there
            (:func:`torch.utils.checkpoint.checkpoint`), the same values and gradients: ``"gathers"`` the
            attention's per-edge gathers of keys and values (no extra matrix product); ``"all"`` (or ``True``)
            also the feed-forward block's ``[E, 4D]`` GELU and LayerNorm outputs, recomputed from the stored
            pre-activation (:func:`gca.nn.functional.norm_act_linear`: elementwise work, no extra product, two
            ``[E, 4D]`` tensors less); ``"none"`` (or ``False``) stores everything.

    Shapes:
        - **input:** node states ``[N, D]``, edge_index ``[2, E]``, edge states ``[E, D]``
        - **output:** edge states ``[E, D]``
    """

    def __init__(self, channels: int, dropout: float = 0.1, ffn_ratio: int = 4, fast: bool = True,
                 recompute: Union[bool, str] = False):
        super().__init__(node_dim=0)
        check_int("channels", channels, 1)
        check_dropout("dropout", dropout)
        check_int("ffn_ratio", ffn_ratio, 1)
        self.channels, self.dropout, self.ffn_ratio, self.fast = channels, dropout, ffn_ratio, fast
        self.recompute = recompute_level(recompute)
        self.node_proj = nn.Linear(channels, channels)
        self.query = nn.Linear(channels, channels)
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.ffn_in = nn.Linear(channels, ffn_ratio * channels)
        self.ffn_norm = nn.LayerNorm(ffn_ratio * channels)
        self.ffn_out = nn.Linear(ffn_ratio * channels, channels)
        self.norm = nn.LayerNorm(channels)
        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        for mod in (self.node_proj, self.query, self.key, self.value, self.ffn_in, self.ffn_norm, self.ffn_out,
                    self.norm):
            mod.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        nodes = F.gelu(self.node_proj(x))
        keys = self.key(nodes)
        values = self.value(nodes)
        if self.fast:
            # score(e, t) = <e, W_q^T k_t> + <b_q, k_t>: per-node work instead of per-edge.
            key_scores = torch.cat([keys @ self.query.weight, (keys @ self.query.bias).unsqueeze(-1)], dim=-1)
        else:
            key_scores = keys
        grad = torch.is_grad_enabled()
        if grad and self.recompute != "none":
            # the attention gathers its end nodes' keys and values per edge: keep the node tensors only and
            # gather again in the backward pass (the dropout mask is replayed from the saved RNG state)
            e = checkpoint(self._attend, edge_index, key_scores, values, edge_attr, use_reentrant=False)
        else:
            e = self._attend(edge_index, key_scores, values, edge_attr)
        hidden = self.ffn_in(e)
        if grad and self.recompute == "all" and hidden.requires_grad:
            # store only the hidden pre-activation: the [E, 4D] GELU and LayerNorm outputs are recomputed in
            # the backward pass (elementwise), the output projection is not
            return self.norm(F.gelu(e + norm_act_linear(hidden, self.ffn_norm, self.ffn_out)))
        return self._ffn_tail(e, hidden)

    def _attend(self, edge_index: Tensor, key_scores: Tensor, values: Tensor, edge_attr: Tensor) -> Tensor:
        return self.edge_updater(edge_index, key_scores=key_scores, values=values, edge_attr=edge_attr)

    def edge_update(self, key_scores_i: Tensor, key_scores_j: Tensor, values_i: Tensor, values_j: Tensor,
                    edge_attr: Tensor) -> Tensor:
        """The cross-attention of an edge over its two end nodes, with the residual: ``e_hat`` above."""
        scale = 1.0 / math.sqrt(self.channels)
        if self.fast:
            d = self.channels
            score_j = ((edge_attr * key_scores_j[:, :d]).sum(-1) + key_scores_j[:, d]) * scale
            score_i = ((edge_attr * key_scores_i[:, :d]).sum(-1) + key_scores_i[:, d]) * scale
        else:
            query = self.query(edge_attr)
            score_j = (query * key_scores_j).sum(-1) * scale
            score_i = (query * key_scores_i).sum(-1) * scale
        alpha = torch.softmax(torch.stack([score_j, score_i], dim=-1), dim=-1)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        attended = alpha[:, :1] * values_j + alpha[:, 1:] * values_i
        return self.norm(F.gelu(attended + edge_attr))

    def _ffn_tail(self, e: Tensor, hidden: Tensor) -> Tensor:
        return self.norm(F.gelu(e + self.ffn_out(self.ffn_norm(F.gelu(hidden)))))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, dropout={self.dropout}, fast={self.fast}, "
                f"recompute={self.recompute!r})")
