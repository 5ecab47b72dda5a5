"""Plain dense PyTorch reference of the GCA layers, on ``[N, N, D]`` edge tensors (a test reference).

Written for clarity, not speed: it shares the parameters of the PyG modules and is what the tests and
the cost benchmark compare the message-passing path against. Dense edge tensors are indexed
``[source, target]``; ``adjacency[i, j]`` says whether the edge ``(i -> j)`` exists.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from gca.graph import centred_unit
from gca.nn.blocks import GCABlock
from gca.nn.gca_edge_conv import GCAEdgeConv
from gca.nn.gca_node_conv import GCANodeConv
from gca.nn.propagation import GraphPropagation


def dense_node_update(conv: GCANodeConv, x: Tensor, edges: Tensor, adjacency: Tensor, same_class: Tensor) -> Tensor:
    """:class:`GCANodeConv` on dense tensors (no attention dropout)."""
    n, heads, dh = x.shape[0], conv.heads, conv.head_dim
    q = conv.query(x).view(n, heads, dh)
    k = conv.key(x).view(n, heads, dh)
    v = conv.value(x).view(n, heads, dh)
    scores = torch.einsum("jhd,ihd->ijh", q, k) / math.sqrt(dh)          # [src, dst, H]
    mask = (adjacency & ~same_class).unsqueeze(-1)
    scores = scores.masked_fill(~mask, float("-inf"))
    if conv.zero_logit:
        zero = torch.zeros(1, n, heads, dtype=x.dtype, device=x.device)
        alpha = torch.softmax(torch.cat([scores, zero]), dim=0)[:n]
    else:
        alpha = torch.nan_to_num(torch.softmax(scores, dim=0), nan=0.0)
    attended = torch.einsum("ijh,ihd->jhd", alpha, v).reshape(n, conv.channels)
    h = conv.norm(F.gelu(x + conv.out(attended)))
    messages = F.gelu(conv.edge_to_node(edges)) * adjacency.unsqueeze(-1)
    incoming = messages.sum(0)
    if conv.edge_aggr == "mean":
        incoming = incoming / adjacency.sum(0).clamp_min(1).unsqueeze(-1)
    h = conv.norm(F.gelu(h + incoming))
    return conv.norm(F.gelu(h + conv.ffn_out(F.gelu(conv.ffn_in(h)))))


def dense_edge_update(conv: GCAEdgeConv, x: Tensor, edges: Tensor) -> Tensor:
    """:class:`GCAEdgeConv` on dense tensors (no attention dropout), always the plain query path."""
    nodes = F.gelu(conv.node_proj(x))
    keys, values = conv.key(nodes), conv.value(nodes)
    query = conv.query(edges)                                             # [src, dst, D]
    scale = 1.0 / math.sqrt(conv.channels)
    score_src = (query * keys.unsqueeze(1)).sum(-1) * scale
    score_dst = (query * keys.unsqueeze(0)).sum(-1) * scale
    alpha = torch.softmax(torch.stack([score_src, score_dst], dim=-1), dim=-1)
    attended = alpha[..., :1] * values.unsqueeze(1) + alpha[..., 1:] * values.unsqueeze(0)
    e = conv.norm(F.gelu(attended + edges))
    return conv.norm(F.gelu(e + conv.ffn_out(conv.ffn_norm(F.gelu(conv.ffn_in(e))))))


def dense_correlation(embeddings: Tensor) -> Tensor:
    """``[N, N, D]`` channel-wise correlations of every ordered pair."""
    unit = centred_unit(embeddings)
    return unit.unsqueeze(1) * unit.unsqueeze(0)


def dense_propagation(prop: GraphPropagation, embeddings: Tensor, labels: Tensor,
                      self_loops: bool = True) -> Tuple[Tensor, Tensor]:
    """:class:`GraphPropagation` of GCA blocks over the full graph, densely.

    Returns node states ``[N, D]`` and dense edge states ``[N, N, D]`` (``[source, target]``).
    """
    n = embeddings.shape[0]
    adjacency = torch.ones(n, n, dtype=torch.bool, device=embeddings.device)
    if not self_loops:
        adjacency.fill_diagonal_(False)
    same_class = labels.unsqueeze(1) == labels.unsqueeze(0)
    h, e = prop.input_proj(embeddings), dense_correlation(embeddings)
    for block in prop.layers:
        if not isinstance(block, GCABlock):
            raise TypeError(f"the dense reference covers GCA blocks only, got {type(block).__name__}")
        h = dense_node_update(block.node, h, e, adjacency, same_class)
        e = dense_edge_update(block.edge, h, e)
    return h, e
