"""A stack of L propagation blocks over a batch graph (METHOD 2.3)."""
from __future__ import annotations

import functools
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor, nn

from gca._checks import check_int
from gca.nn.registry import LAYERS, check_layer_args, create_layer


class GraphPropagation(nn.Module):
    r"""Input projection of the nodes, then ``num_layers`` blocks of type ``layer``.

    .. math::
        h^{(0)} = W_r z + b_r,\quad e^{(0)} = \text{edge correlation},\qquad
        (h^{(l+1)}, e^{(l+1)}) = \text{block}_l(h^{(l)}, e^{(l)})

    With ``num_layers=0`` the output is the projected nodes and the raw correlations (the "local
    correlations only" ablation).

    ``symmetric=True`` (in :meth:`forward`) is for graphs where every edge ``(i -> j)`` has its reverse
    and ``e_ij = e_ji`` (the full batch graph): edge states are kept once per unordered pair, which
    halves the edge work and gives the same result (dropout then shares its mask between the two
    directions). It needs blocks with ``supports_pairs``; see :func:`symmetric_pairs`.

    ``paired_nodes`` (in :meth:`forward`) restricts the pairing to the edges between those nodes, where both
    directions are in the graph; every other edge is a row of its own (a cross-batch memory's edges into the
    batch, or, sharded by edges, an edge from another process's node).

    Sharded by edges (``sync`` in :meth:`forward`, see :class:`gca.distributed.EdgeShard`), the graph holds only
    the edges into this process's nodes; after each block's node update ``sync`` replaces the node states by
    every owner's (the edge update needs both end nodes).

    Args:
        channels: embedding width :math:`D`.
        num_layers: number of blocks :math:`L` (2 for CUB/Cars, 1 for SOP/In-Shop in the paper).
        heads: attention heads :math:`H`.
        layer: a registered layer type (:func:`gca.nn.list_layers`).
        dropout: dropout of the edge updates.
        **layer_kwargs: passed to the layer builder.

    Shapes:
        - **input:** embeddings ``[N, D]``, edge_index ``[2, E]``, edge_attr ``[E, D]``, same_class ``[E]``
        - **output:** node states ``[N, D]``, edge states ``[E, D]``
    """

    def __init__(self, channels: int, num_layers: int = 2, heads: int = 4, layer: str = "gca",
                 dropout: float = 0.1, **layer_kwargs):
        super().__init__()
        check_int("num_layers", num_layers, 0)
        # checked here too (D divisible by H included): with num_layers=0 no layer is built, and bad
        # arguments must not pass silently
        check_layer_args(channels, heads, dropout)
        LAYERS.get(layer)          # an unknown name fails here even when num_layers=0 builds no layer
        self.channels, self.num_layers, self.heads, self.layer_type = channels, num_layers, heads, layer
        self.input_proj = nn.Linear(channels, channels)
        self.layers = nn.ModuleList(create_layer(layer, channels, heads, dropout, **layer_kwargs)
                                    for _ in range(num_layers))

    def reset_parameters(self):
        self.input_proj.reset_parameters()
        for block in self.layers:
            block.reset_parameters()

    @property
    def supports_pairs(self) -> bool:
        return all(getattr(block, "supports_pairs", False) for block in self.layers)

    @property
    def supports_sharding(self) -> bool:
        return all(getattr(block, "supports_sharding", False) for block in self.layers)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, same_class: Tensor,
                symmetric: bool = False, return_pairs: bool = False, paired_nodes: Optional[Tensor] = None,
                sync: Optional[Callable[[Tensor], Tensor]] = None):
        """Propagate; returns ``(node states, edge states)``.

        With ``symmetric=True`` and ``return_pairs=True`` the edge states stay one per unordered pair and
        the pairs come along: ``(node states [N, D], pair states [P, D], (pair_index [2, P], edge_to_pair
        [E]))``, so that what reads them (the lambda head) can also run per pair.

        ``paired_nodes`` (``[N]`` bool): with ``symmetric``, pair only the edges between these nodes (``None``:
        all). ``sync`` (node states -> every owner's node states) runs this process's share of a graph sharded by
        edges (see the class docstring).
        """
        if sync is not None and not self.supports_sharding:
            raise ValueError(f"propagation sharded by edges needs blocks that support it; {self.layer_type!r} "
                             f"does not (a block needs supports_sharding and a sync argument)")
        blocks = [block if sync is None else functools.partial(block, sync=sync) for block in self.layers]
        h = self.input_proj(x)
        if not symmetric or (not self.layers and not return_pairs):
            e = edge_attr
            for block in blocks:
                h, e = block(h, edge_index, e, same_class)
            return h, e
        if not self.supports_pairs:
            raise ValueError("symmetric propagation needs blocks that support pairs; "
                             f"{self.layer_type!r} does not")
        pair_edge, edge_to_pair = symmetric_pairs(edge_index, x.shape[0], paired_nodes)
        pairs = (edge_index[:, pair_edge], edge_to_pair)
        e = edge_attr[pair_edge]
        for block in blocks:
            h, e = block(h, edge_index, e, same_class, pairs=pairs)
        if return_pairs:
            return h, e, pairs
        return h, e[edge_to_pair]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, num_layers={self.num_layers}, heads={self.heads}, "
                f"layer={self.layer_type!r})")


def symmetric_pairs(edge_index: Tensor, num_nodes: int, paired_nodes: Optional[Tensor] = None
                    ) -> Tuple[Tensor, Tensor]:
    """For a graph holding both directions of every edge: the ids of the edges with ``source <= target``
    (one per unordered pair, ``[P]``) and, for every edge, the position of its pair among them (``[E]``).

    With ``paired_nodes`` (``[N]`` bool), only the edges between two of those nodes are paired (both directions
    must be in the graph); every other edge is a row of its own: a cross-batch memory's edges into the batch,
    or, in a process's share of a graph sharded by edges (the edges into its nodes), an edge whose reverse lives
    on another process.
    """
    src, dst = edge_index
    lo, hi = torch.minimum(src, dst), torch.maximum(src, dst)
    key = lo * num_nodes + hi
    canonical = src <= dst
    if paired_nodes is not None:
        paired = paired_nodes[src] & paired_nodes[dst]
        # an unpaired edge gets a key of its own, after every pair's
        key = torch.where(paired, key, num_nodes * num_nodes + src * num_nodes + dst)
        canonical = canonical | ~paired
    pair_edge = canonical.nonzero(as_tuple=True)[0]
    pair_keys, order = torch.sort(key[pair_edge])
    pair_edge = pair_edge[order]
    position = torch.searchsorted(pair_keys, key)
    if position.max() >= pair_keys.numel() or not torch.equal(
            pair_keys[position.clamp_max(pair_keys.numel() - 1)], key):
        raise ValueError("symmetric propagation needs the reverse of every edge in the graph")
    return pair_edge, position
