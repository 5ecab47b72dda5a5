"""Propagation blocks: one node update followed by one edge update that sees the new node states.

Every block has the same interface, ``block(x, edge_index, edge_attr, same_class) -> (x, edge_attr)``,
which is what the registry in :mod:`gca.nn.registry` builds and what :class:`gca.nn.GraphPropagation`
stacks.

Blocks whose edge update treats the two end nodes as an unordered pair (both blocks here) also accept
``pairs=(pair_index, edge_to_pair)``: ``edge_attr`` then holds one state per unordered pair ``[P, D]``
(``pair_index`` ``[2, P]``), every directed edge reads the state of its pair (``edge_to_pair`` ``[E]``),
and the edge update runs once per pair instead of once per direction. On a symmetric graph this gives the
same result with about half of the edge work (METHOD section 7); they say so with ``supports_pairs``.

Blocks that take ``sync`` (a function of the node states) call it between their node and edge updates, so
that a propagation sharded by edges over processes (:class:`gca.distributed.EdgeShard`) can gather the node
states the edge update reads; they say so with ``supports_sharding``.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch.nn.functional as F
from torch import Tensor, nn

from gca.nn.gca_edge_conv import GCAEdgeConv
from gca.nn.gca_node_conv import GCANodeConv

MESSAGE_EDGES = ("negative", "all")


Pairs = Tuple[Tensor, Tensor]


class GCABlock(nn.Module):
    """The authors' layer: :class:`GCANodeConv` then :class:`GCAEdgeConv`.

    Args:
        channels: node and edge width :math:`D`.
        heads: attention heads of the node update; :math:`D` must be divisible by them.
        dropout: dropout of the edge update's attention (0.1 in the authors' code).
        attention_dropout: dropout of the node update's attention.
        zero_logit: the node attention's implicit zero logit (:class:`GCANodeConv`).
        edge_aggr: ``"sum"`` or ``"mean"`` for the edge-to-node message.
        ffn_ratio: hidden width of both feed-forward blocks in multiples of :math:`D`.
        fast: the edge update's key-side projection (:class:`GCAEdgeConv`).
        recompute: ``"gathers"``: recompute the per-edge gathers in the backward pass; ``"all"`` (or ``True``):
            also the edge update's feed-forward activations (:class:`GCANodeConv`, :class:`GCAEdgeConv`): less
            memory for a little more work; ``"none"`` (or ``False``): store everything.

    Shapes:
        - **input:** node states ``[N, D]``, edge_index ``[2, E]``, edge states ``[E, D]`` (``[P, D]`` with
          ``pairs``), same_class ``[E]`` (bool)
        - **output:** node states ``[N, D]``, edge states of the same shape as the input's
    """

    supports_pairs = True
    supports_sharding = True

    def __init__(self, channels: int, heads: int = 4, dropout: float = 0.1, attention_dropout: float = 0.0,
                 zero_logit: bool = True, edge_aggr: str = "sum", ffn_ratio: int = 4, fast: bool = True,
                 recompute: Union[bool, str] = False):
        super().__init__()
        self.node = GCANodeConv(channels, heads=heads, dropout=attention_dropout, zero_logit=zero_logit,
                                ffn_ratio=ffn_ratio, edge_aggr=edge_aggr, recompute=recompute)
        self.edge = GCAEdgeConv(channels, dropout=dropout, ffn_ratio=ffn_ratio, fast=fast, recompute=recompute)

    def reset_parameters(self):
        self.node.reset_parameters()
        self.edge.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, same_class: Tensor,
                pairs: Optional[Pairs] = None, sync: Optional[Callable[[Tensor], Tensor]] = None
                ) -> Tuple[Tensor, Tensor]:
        x = self.node(x, edge_index, edge_attr, same_class, pairs=pairs)
        if sync is not None:
            x = sync(x)
        return x, self.edge(x, edge_index if pairs is None else pairs[0], edge_attr)


class PyGConvBlock(nn.Module):
    """Wrap any PyG convolution that takes edge features as a GCA-HNG propagation block.

    The node update is ``LN(GELU(x + conv(x, edges, edge_attr)))`` followed by the same feed-forward
    block as the GCA layer; the edges are then updated by a learned :class:`GCAEdgeConv`, since PyG
    convolutions leave edge features unchanged. With ``message_edges="negative"`` (default) the
    convolution sees only edges between different classes, as GCA's attention does; ``"all"`` passes
    every edge.

    Args:
        conv: a module called as ``conv(x, edge_index, edge_attr)`` returning ``[N, channels]``.
        channels: node and edge width.
        dropout: dropout of the edge update's attention.
        message_edges: ``"negative"`` or ``"all"``.
        ffn_ratio: hidden width of the feed-forward blocks in multiples of ``channels``.

    Shapes:
        - **input:** node states ``[N, D]``, edge_index ``[2, E]``, edge states ``[E, D]`` (``[P, D]`` with
          ``pairs``), same_class ``[E]`` (bool)
        - **output:** node states ``[N, D]``, edge states of the same shape as the input's
    """

    supports_pairs = True

    def __init__(self, conv: nn.Module, channels: int, dropout: float = 0.1, message_edges: str = "negative",
                 ffn_ratio: int = 4):
        super().__init__()
        if message_edges not in MESSAGE_EDGES:
            raise ValueError(f"message_edges must be one of {MESSAGE_EDGES}, got {message_edges!r}")
        self.conv, self.message_edges = conv, message_edges
        self.norm = nn.LayerNorm(channels)
        self.ffn_in = nn.Linear(channels, ffn_ratio * channels)
        self.ffn_out = nn.Linear(ffn_ratio * channels, channels)
        self.edge = GCAEdgeConv(channels, dropout=dropout, ffn_ratio=ffn_ratio)

    @property
    def supports_sharding(self) -> bool:
        """Whether the block can run on a process's share of a graph sharded by edges: not when the convolution
        normalises over the nodes (GENConv's default BatchNorm), since a process's nodes without incoming edges
        (the other processes') would enter its statistics."""
        return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.conv.modules())

    def reset_parameters(self):
        self.conv.reset_parameters()
        for mod in (self.norm, self.ffn_in, self.ffn_out, self.edge):
            mod.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, same_class: Tensor,
                pairs: Optional[Pairs] = None, sync: Optional[Callable[[Tensor], Tensor]] = None
                ) -> Tuple[Tensor, Tensor]:
        directed = edge_attr if pairs is None else edge_attr[pairs[1]]
        if self.message_edges == "negative":
            keep = ~same_class
            conv_out = self.conv(x, edge_index[:, keep], directed[keep])
        else:
            conv_out = self.conv(x, edge_index, directed)
        h = self.norm(F.gelu(x + conv_out))
        h = self.norm(F.gelu(h + self.ffn_out(F.gelu(self.ffn_in(h)))))
        if sync is not None:
            h = sync(h)
        return h, self.edge(h, edge_index if pairs is None else pairs[0], edge_attr)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.conv}, message_edges={self.message_edges!r})"
