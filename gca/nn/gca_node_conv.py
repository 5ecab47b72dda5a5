"""The node update of GCA-HNG's global correlation learning (METHOD 2.3, node update)."""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from gca._checks import check_dropout, check_heads_divide, check_int, recompute_level
from gca.nn.functional import masked_edge_softmax


class EdgeMessageAggregation(MessagePassing):
    r"""Aggregates one message per edge at the edge's target: :math:`m_j = \operatorname{aggr}_{i \to j} m_{ij}`.

    Parameter-free; the edge-to-node message of :class:`GCANodeConv` goes through its ``propagate``.

    Args:
        aggr: ``"sum"`` or ``"mean"`` (a target without incoming edges gets zeros).

    Shapes:
        - **input:** edge_index ``[2, E]``, messages ``[E, D]``
        - **output:** ``[N, D]``
    """

    def __init__(self, aggr: str = "sum"):
        super().__init__(aggr=aggr, node_dim=0)

    def forward(self, edge_index: Tensor, messages: Tensor, size: Tuple[int, int]) -> Tensor:
        return self.propagate(edge_index, messages=messages, size=size)

    def message(self, messages: Tensor) -> Tensor:
        return messages

    def forward_pairs(self, pair_index: Tensor, messages: Tensor, num_nodes: int,
                      edge_to_pair: Optional[Tensor] = None) -> Tensor:
        """The same aggregation when both directions of every edge carry one message per unordered pair.

        ``pair_index`` ``[2, P]`` holds each pair once (a self-loop ``(i, i)`` included); its message reaches
        both end nodes, a self-loop's only once, so no per-direction copy of the messages is ever formed. With
        ``edge_to_pair`` (``[E]``, the row of every directed edge), a row that stands for one directed edge only
        (an edge whose reverse is not in the graph, written ``(source, target)``) reaches its target only.

        Shapes:
            pair_index ``[2, P]``, messages ``[P, D]`` -> ``[N, D]``
        """
        lo, hi = pair_index
        # a self-loop's (or a one-way row's) message arrives once: the reverse direction counts only the rows
        # that stand for two edges (a mask, not an index, so that no device sync is needed)
        if edge_to_pair is None:
            two_way = lo != hi
        else:
            two_way = torch.bincount(edge_to_pair, minlength=lo.numel()) == 2
        reverse = two_way.unsqueeze(-1).to(messages.dtype)
        out = scatter(messages, hi, 0, dim_size=num_nodes, reduce="sum")
        out = out + scatter(messages * reverse, lo, 0, dim_size=num_nodes, reduce="sum")
        if self.aggr == "mean":
            degree = (scatter(torch.ones_like(reverse), hi, 0, dim_size=num_nodes, reduce="sum")
                      + scatter(reverse, lo, 0, dim_size=num_nodes, reduce="sum"))
            out = out / degree.clamp_min(1)
        return out


class GCANodeConv(MessagePassing):
    r"""Negative-only multi-head attention, edge-to-node message and feed-forward block.

    For a target node :math:`j` with incoming edges :math:`(i \to j)` carrying states :math:`e_{ij}`:

    .. math::
        s_{ij}^h &= \langle W_Q^h h_j, W_K^h h_i \rangle / \sqrt{d_h}, \qquad
        a_{ij}^h = \frac{M_{ij} \exp s_{ij}^h}{1 + \sum_{i'} M_{i'j}\exp s_{i'j}^h},\quad
        M_{ij} = [y_i \ne y_j] \\
        \hat h_j &= \mathrm{LN}\big(\mathrm{GELU}(h_j + W_O \,\Vert_h \textstyle\sum_i a_{ij}^h W_V^h h_i)\big) \\
        \bar h_j &= \mathrm{LN}\big(\mathrm{GELU}(\hat h_j + \textstyle\sum_i \mathrm{GELU}(W_{EN} e_{ij} + b))\big) \\
        h_j' &= \mathrm{LN}\big(\mathrm{GELU}(\bar h_j + W_2\, \mathrm{GELU}(W_1 \bar h_j))\big)

    The attention sees only edges between different classes (self-loops included in the mask), so an
    anchor exchanges attention messages with negatives only. ``zero_logit=True`` keeps the authors'
    implicit zero logit; ``False`` gives a plain softmax over the negative edges. The edge-to-node
    message is unmasked, as in the authors' code, and aggregated by ``edge_aggr`` (``"sum"`` as the
    authors; ``"mean"`` keeps its scale independent of the degree, useful on large graphs). One
    LayerNorm is shared by the three normalisations, as in the authors' layer.

    As in PyG's ``GATv2Conv``, the attention weights are computed per edge by :meth:`edge_update` (called
    through ``edge_updater``) and passed to ``propagate``. The edge-to-node message has its own
    aggregation, so it goes through the ``propagate`` of a parameter-free :class:`EdgeMessageAggregation`.

    Args:
        channels: node and edge width :math:`D`.
        heads: attention heads :math:`H`; :math:`D` must be divisible by :math:`H`.
        dropout: dropout on the attention weights.
        zero_logit: add the implicit zero logit to the attention normaliser.
        ffn_ratio: hidden width of the feed-forward block in multiples of :math:`D`.
        edge_aggr: ``"sum"`` or ``"mean"`` for the edge-to-node message.

    With ``pairs=(pair_index, edge_to_pair)`` (a symmetric graph, see :class:`gca.nn.GraphPropagation`),
    ``edge_attr`` holds one state per unordered pair and the edge-to-node message is computed once per pair;
    the result is that of the directed edges.

    Shapes:
        - **input:** node states ``[N, D]``, edge_index ``[2, E]``, edge states ``[E, D]`` (``[P, D]`` with
          ``pairs``), same_class ``[E]`` (bool)
        - **output:** node states ``[N, D]``; with ``return_attention_weights=True`` also
          ``(edge_index [2, E], attention weights [E, H])``, the weights before dropout (zero on
          same-class edges)
    """

    def __init__(self, channels: int, heads: int = 4, dropout: float = 0.0, zero_logit: bool = True,
                 ffn_ratio: int = 4, edge_aggr: str = "sum", recompute: Union[bool, str] = False):
        super().__init__(aggr="sum", node_dim=0)
        check_heads_divide(channels, heads)
        check_dropout("dropout", dropout)
        check_int("ffn_ratio", ffn_ratio, 1)
        if edge_aggr not in ("sum", "mean"):
            raise ValueError(f"edge_aggr must be 'sum' or 'mean', got {edge_aggr!r}")
        self.channels, self.heads, self.head_dim = channels, heads, channels // heads
        self.dropout, self.zero_logit, self.ffn_ratio, self.edge_aggr = dropout, zero_logit, ffn_ratio, edge_aggr
        self.recompute = recompute_level(recompute)
        self.query = nn.Linear(channels, channels)
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)
        self.edge_to_node = nn.Linear(channels, channels)
        self.ffn_in = nn.Linear(channels, ffn_ratio * channels)
        self.ffn_out = nn.Linear(ffn_ratio * channels, channels)
        self.norm = nn.LayerNorm(channels)
        self.edge_messages = EdgeMessageAggregation(edge_aggr)
        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        for lin in (self.query, self.key, self.value, self.out, self.edge_to_node, self.ffn_in, self.ffn_out):
            lin.reset_parameters()
        self.norm.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, same_class: Tensor,
                return_attention_weights: bool = False,
                pairs: Optional[Tuple[Tensor, Tensor]] = None) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
        num_nodes = x.shape[0]
        size = (num_nodes, num_nodes)
        q = self.query(x).view(num_nodes, self.heads, self.head_dim)
        k = self.key(x).view(num_nodes, self.heads, self.head_dim)
        v = self.value(x).view(num_nodes, self.heads, self.head_dim)
        negative = ~same_class
        if self.recompute != "none" and torch.is_grad_enabled():
            # the per-edge gathers of queries, keys and values are not stored but redone in the backward pass
            alpha = checkpoint(self._attention, edge_index, q, k, negative, size, use_reentrant=False)
            dropped = F.dropout(alpha, p=self.dropout, training=self.training)
            attended = checkpoint(self._attend, edge_index, v, dropped, size, use_reentrant=False)
        else:
            alpha = self._attention(edge_index, q, k, negative, size)
            dropped = F.dropout(alpha, p=self.dropout, training=self.training)
            attended = self._attend(edge_index, v, dropped, size)
        h = self.norm(F.gelu(x + self.out(attended.reshape(num_nodes, self.channels))))
        messages = F.gelu(self.edge_to_node(edge_attr))
        if pairs is None:
            incoming = self.edge_messages(edge_index, messages, size)
        else:   # one message per unordered pair, sent both ways: half the edge-to-node work
            incoming = self.edge_messages.forward_pairs(pairs[0], messages, num_nodes, pairs[1])
        h = self.norm(F.gelu(h + incoming))
        h = self.norm(F.gelu(h + self.ffn_out(F.gelu(self.ffn_in(h)))))
        if return_attention_weights:
            return h, (edge_index, alpha)
        return h

    def _attention(self, edge_index: Tensor, q: Tensor, k: Tensor, negative: Tensor, size) -> Tensor:
        return self.edge_updater(edge_index, q=q, k=k, negative=negative, size=size)

    def _attend(self, edge_index: Tensor, v: Tensor, alpha: Tensor, size) -> Tensor:
        return self.propagate(edge_index, v=v, alpha=alpha, size=size)

    def edge_update(self, q_i: Tensor, k_j: Tensor, negative: Tensor, index: Tensor,
                    dim_size: Optional[int]) -> Tensor:
        scores = (q_i * k_j).sum(dim=-1) / math.sqrt(self.head_dim)
        return masked_edge_softmax(scores, index, negative, dim_size, self.zero_logit)

    def message(self, v_j: Tensor, alpha: Tensor) -> Tensor:
        return v_j * alpha.unsqueeze(-1)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, heads={self.heads}, zero_logit={self.zero_logit}, "
                f"edge_aggr={self.edge_aggr!r}, recompute={self.recompute!r})")
