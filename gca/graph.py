"""The batch graph of GCA-HNG: one node per sample, one directed edge per pair.

This module is deliberately free of anything GCA-specific beyond the edge feature, so that other
graph-based deep-metric-learning code can reuse :func:`build_batch_graph` on its own.

Edge convention (the PyG one): ``edge_index[0]`` is the *source* ``i``, ``edge_index[1]`` the *target*
``j``, and messages flow from source to target. In GCA-HNG the target is the *anchor* and the source is
the candidate negative: node ``j`` aggregates over its incoming edges, and the generator reads the state
of edge ``(n -> a)`` to make a synthetic negative for anchor ``a`` from sample ``n``. On the full graph
the edge states are symmetric (see :mod:`gca.nn`), so this is the same as the authors' ``(a -> n)``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch_geometric.data import Data

from gca._checks import check_choice, check_embeddings_and_labels

EDGE_MODES = ("full", "knn")


def centred_unit(embeddings: Tensor, eps: float = 1e-12) -> Tensor:
    """Centre each embedding across its channels and scale it to unit norm.

    The inner product of two such vectors is the Pearson correlation of the two embeddings (channels
    act as observations).
    """
    centred = embeddings - embeddings.mean(dim=1, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(eps)


def channel_correlation(embeddings: Tensor, edge_index: Tensor) -> Tensor:
    r"""Channel-wise correlation of the pairs in ``edge_index`` (METHOD 2.2).

    .. math::
        e_{ij} = \frac{\tilde z_i \odot \tilde z_j}{\lVert\tilde z_i\rVert\,\lVert\tilde z_j\rVert},
        \qquad \tilde z = z - \operatorname{mean}_d z_d,

    so that :math:`\sum_d e_{ij,d}` is the Pearson correlation of :math:`z_i` and :math:`z_j`.

    Shapes:
        embeddings ``[B, D]``, edge_index ``[2, E]`` -> ``[E, D]``.
    """
    unit = centred_unit(embeddings)
    return unit[edge_index[0]] * unit[edge_index[1]]


def full_edge_index(num_nodes: int, self_loops: bool = True, device=None) -> Tensor:
    """All ordered pairs, source-major (edge id ``i * B + j`` when self-loops are kept)."""
    idx = torch.arange(num_nodes, device=device)
    src = idx.repeat_interleave(num_nodes)
    dst = idx.repeat(num_nodes)
    if not self_loops:
        keep = src != dst
        src, dst = src[keep], dst[keep]
    return torch.stack([src, dst])


def knn_edge_index(embeddings: Tensor, k: int, self_loops: bool = True, chunk_size: int = 4096) -> Tensor:
    """For every node ``j``, incoming edges from its ``k`` most correlated other nodes.

    Correlation is the Pearson correlation of the embeddings (the sum of the edge feature). The
    selection is made without gradient; it is computed in row chunks so that only ``chunk x B`` scores
    exist at once. Edges are returned sorted source-major, like :func:`full_edge_index`, so that
    ``k = B - 1`` reproduces the full graph exactly.
    """
    num_nodes = embeddings.shape[0]
    with torch.no_grad():
        unit = centred_unit(embeddings.detach().float())
        neighbours = []
        for start in range(0, num_nodes, chunk_size):
            rows = unit[start:start + chunk_size]
            scores = rows @ unit.T
            own = torch.arange(start, start + rows.shape[0], device=unit.device)
            scores[torch.arange(rows.shape[0], device=unit.device), own] = float("-inf")
            neighbours.append(scores.topk(k, dim=1).indices)
        nbr = torch.cat(neighbours)  # [B, k]: nbr[j] are the sources that send to target j
    dst = torch.arange(num_nodes, device=embeddings.device).repeat_interleave(k)
    src = nbr.reshape(-1)
    if self_loops:
        loops = torch.arange(num_nodes, device=embeddings.device)
        src, dst = torch.cat([src, loops]), torch.cat([dst, loops])
    order = torch.argsort(src * num_nodes + dst)
    return torch.stack([src[order], dst[order]])


def build_batch_graph(
    embeddings: Tensor,
    labels: Tensor,
    edges: str = "full",
    k: Optional[int] = None,
    self_loops: bool = True,
) -> Data:
    """Turn a labelled mini-batch of embeddings into a PyG graph.

    Args:
        embeddings: ``[B, D]`` floating tensor; gradients flow back to it through ``x`` and
            ``edge_attr``.
        labels: ``[B]`` integer class labels, in any order and with any class sizes.
        edges: ``"full"`` for all ``B*B`` directed pairs (``B*(B-1)`` without self-loops), or ``"knn"``
            for, per node, incoming edges from its ``k`` most correlated other nodes (``B*k`` edges, plus
            ``B`` self-loops), which equals ``"full"`` when ``k = B - 1``.
        k: neighbours per node for ``"knn"``, in ``[1, B - 1]``.
        self_loops: keep the edge ``(i -> i)``.

    Returns:
        ``Data`` with ``x`` ``[B, D]``, ``edge_index`` ``[2, E]`` (row 0 source, row 1 target),
        ``edge_attr`` ``[E, D]`` (channel-wise correlation, :func:`channel_correlation`), ``y`` ``[B]`` and
        the boolean ``same_class`` ``[E]``.
    """
    check_choice("edges", edges, EDGE_MODES)
    check_embeddings_and_labels(embeddings, labels)
    num_nodes = embeddings.shape[0]
    if edges == "full":
        if k is not None:
            raise ValueError(f"k ({k!r}) is only used with edges='knn'")
        edge_index = full_edge_index(num_nodes, self_loops, device=embeddings.device)
    else:
        if k is None or isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"edges='knn' needs an integer k (neighbours per node), got {k!r}")
        if not 1 <= k <= num_nodes - 1:
            raise ValueError(f"k must be in [1, B-1] = [1, {num_nodes - 1}] for a batch of {num_nodes}, got {k}")
        edge_index = knn_edge_index(embeddings, k, self_loops)
    edge_attr = channel_correlation(embeddings, edge_index)
    same_class = labels[edge_index[0]] == labels[edge_index[1]]
    return Data(x=embeddings, edge_index=edge_index, edge_attr=edge_attr, y=labels, same_class=same_class,
                num_nodes=num_nodes)
