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

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Data

from gca._checks import check_choice, check_embeddings_and_labels, check_int

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


def full_edge_index(num_nodes: int, self_loops: bool = True, device=None, targets: Optional[Tensor] = None) -> Tensor:
    """All ordered pairs, source-major (edge id ``i * B + j`` when self-loops are kept).

    With ``targets`` (sorted node ids), only the edges into those nodes, still source-major.
    """
    idx = torch.arange(num_nodes, device=device)
    dst_nodes = idx if targets is None else targets.to(device)
    src = idx.repeat_interleave(dst_nodes.numel())
    dst = dst_nodes.repeat(num_nodes)
    if not self_loops:
        keep = src != dst
        src, dst = src[keep], dst[keep]
    return torch.stack([src, dst])


# Default budget of the knn search: 2**22 float32 scores (16 MiB) at once, so B = 2048 is scored in one block
# and larger batches in blocks of 2**22 // B rows instead of one B x B matrix.
KNN_MAX_SCORES = 2 ** 22


def knn_chunk_rows(num_nodes: int, max_scores: int = KNN_MAX_SCORES) -> int:
    """Rows scored at once by :func:`knn_edge_index`: as many as fit in ``max_scores`` scores.

    A row needs all ``num_nodes`` scores for its ``topk``, so one row (``num_nodes`` scores) is the
    floor when the budget is smaller than that.

    Args:
        num_nodes: ``B``, the nodes of the batch (the length of one row of scores).
        max_scores: the most scores (``rows x B`` floats) to hold at once; at least 1.

    Returns:
        The block height, in ``[1, max(num_nodes, 1)]``.
    """
    check_int("max_scores", max_scores)
    check_int("num_nodes", num_nodes, minimum=0)
    return max(1, min(num_nodes, max_scores // max(num_nodes, 1)))


def knn_edge_index(embeddings: Tensor, k: int, self_loops: bool = True, chunk_size: Optional[int] = None,
                   max_scores: int = KNN_MAX_SCORES, targets: Optional[Tensor] = None) -> Tensor:
    """For every node ``j``, incoming edges from its ``k`` most correlated other nodes.

    Correlation is the Pearson correlation of the embeddings (the sum of the edge feature). The
    selection is made without gradient, in blocks of rows, so that the search holds at most
    ``max_scores`` scores at once (one row of ``B`` scores when ``B`` exceeds the budget), never the
    ``B x B`` matrix once ``B * B > max_scores``. Each row is selected from its own scores alone (``topk``, whose
    choice among exactly tied scores is made per row), so the edges do not depend on the blocks, except
    where two candidates agree to float32 rounding (about ``1e-7``): BLAS may round a row's products
    differently for blocks of different heights, as it does for different thread counts. Edges are
    returned sorted source-major, like :func:`full_edge_index`, so that ``k = B - 1`` reproduces the full
    graph exactly.

    Args:
        embeddings: ``[B, D]`` floating tensor (the search runs in float32 on its device).
        k: neighbours per node, in ``[1, B - 1]`` (checked by :func:`build_batch_graph`).
        self_loops: add the edge ``(i -> i)`` for every node.
        chunk_size: rows scored at once; ``None`` takes :func:`knn_chunk_rows` of ``max_scores``.
        max_scores: the most scores held at once when ``chunk_size`` is ``None``.
        targets: only the incoming edges of these nodes (sorted ids; a process's share of the graph, see
            :class:`gca.distributed.EdgeShard`); ``None``: all nodes.

    Returns:
        ``edge_index`` ``[2, T * k (+ T)]`` for ``T`` targets (all ``B`` by default): row 0 the sources, row 1
        the targets, source-major.

    Raises:
        TypeError, ValueError: ``chunk_size`` or ``max_scores`` is not a positive integer.
    """
    num_nodes = embeddings.shape[0]
    rows_per_block = knn_chunk_rows(num_nodes, max_scores)
    if chunk_size is not None:
        check_int("chunk_size", chunk_size)
        rows_per_block = chunk_size
    nodes = torch.arange(num_nodes, device=embeddings.device) if targets is None else targets.to(embeddings.device)
    with torch.no_grad():
        unit = centred_unit(embeddings.detach().float())
        neighbours = []
        for start in range(0, nodes.numel(), rows_per_block):
            own = nodes[start:start + rows_per_block]
            scores = unit[own] @ unit.T
            scores[torch.arange(own.numel(), device=unit.device), own] = float("-inf")
            neighbours.append(scores.topk(k, dim=1).indices)
            del scores      # free this block before the next one is formed, or two would coexist
        nbr = torch.cat(neighbours)  # [T, k]: nbr[t] are the sources that send to target nodes[t]
    dst = nodes.repeat_interleave(k)
    src = nbr.reshape(-1)
    if self_loops:
        src, dst = torch.cat([src, nodes]), torch.cat([dst, nodes])
    order = torch.argsort(src * num_nodes + dst)
    return torch.stack([src[order], dst[order]])


def memory_edge_index(embeddings: Tensor, labels: Tensor, memory: Tensor, memory_labels: Tensor, k: int,
                      max_scores: int = KNN_MAX_SCORES) -> Tensor:
    """For every batch node ``j``, edges from its ``k`` most correlated memory entries of other classes.

    Correlation as in :func:`knn_edge_index` (Pearson, no gradient), in blocks of batch rows holding at most
    ``max_scores`` scores (one row of ``M`` scores at least). Entries of the node's own class are never
    chosen; a node with fewer than ``k`` entries of other classes gets all of them.

    Args:
        embeddings: ``[B, D]`` the batch; labels ``[B]``.
        memory: ``[M, D]`` memory entries; memory_labels ``[M]``.
        k: entries per batch node (at least 1; more than ``M`` takes all).
        max_scores: the most scores held at once.

    Returns:
        ``[2, B * k']``: row 0 the memory entry (an index into ``memory``), row 1 the batch node; ordered by
        batch node, then by falling correlation.
    """
    check_int("memory_k", k)
    num_memory = memory.shape[0]
    take = min(k, num_memory)
    rows_per_block = max(1, max_scores // max(num_memory, 1))
    sources, targets = [], []
    with torch.no_grad():
        unit_batch = centred_unit(embeddings.detach().float())
        unit_memory = centred_unit(memory.detach().float())
        for start in range(0, embeddings.shape[0], rows_per_block):
            scores = unit_batch[start:start + rows_per_block] @ unit_memory.T
            scores.masked_fill_(labels[start:start + rows_per_block].unsqueeze(1) == memory_labels.unsqueeze(0),
                                float("-inf"))
            best = scores.topk(take, dim=1)
            keep = best.values > float("-inf")
            sources.append(best.indices[keep])
            targets.append(keep.nonzero(as_tuple=True)[0] + start)
            del scores
    return torch.stack([torch.cat(sources), torch.cat(targets)])


def build_batch_graph(
    embeddings: Tensor,
    labels: Tensor,
    edges: str = "full",
    k: Optional[int] = None,
    self_loops: bool = True,
    memory: Optional[Tuple[Tensor, Tensor]] = None,
    memory_k: int = 16,
    shard=None,
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
        memory: optional ``(entries [M, D], labels [M])`` of a cross-batch memory (:mod:`gca.memory`): the
            entries chosen by :func:`memory_edge_index` join the graph as nodes ``B, B + 1, ...`` (detached),
            each with edges into the batch nodes that chose it (and its self-loop when ``self_loops``).
        memory_k: memory entries per batch node.
        shard: build only this process's share of the graph over a global batch (a
            :class:`gca.distributed.EdgeShard`): the edges whose target it owns (``shard.owned_nodes``), so that
            the processes' edges together are the whole graph's. The nodes (and the memory entries chosen, from
            every batch node's choice) are the whole graph's on every process.

    Returns:
        ``Data`` with ``x`` ``[N, D]``, ``edge_index`` ``[2, E]`` (row 0 source, row 1 target),
        ``edge_attr`` ``[E, D]`` (channel-wise correlation, :func:`channel_correlation`), ``y`` ``[N]``, the
        boolean ``same_class`` ``[E]``, ``num_batch`` (``B``) and ``memory_index`` (the memory rows of nodes
        ``B..N-1``, empty without memory); ``N = B`` plus the memory entries chosen. The batch's edges come
        first, as without memory. With ``shard`` also ``owned`` (``[N]`` bool, the nodes whose incoming edges
        are here).
    """
    check_choice("edges", edges, EDGE_MODES)
    check_embeddings_and_labels(embeddings, labels)
    num_nodes = embeddings.shape[0]
    device = embeddings.device
    if edges == "knn":
        if k is None or isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"edges='knn' needs an integer k (neighbours per node), got {k!r}")
        if not 1 <= k <= num_nodes - 1:
            raise ValueError(f"k must be in [1, B-1] = [1, {num_nodes - 1}] for a batch of {num_nodes}, got {k}")
    elif k is not None:
        raise ValueError(f"k ({k!r}) is only used with edges='knn'")
    x, y = embeddings, labels
    memory_index = torch.zeros(0, dtype=torch.long, device=device)
    memory_edges = None
    if memory is not None and memory[0].shape[0] > 0:
        entries, entry_labels = memory
        if entries.dim() != 2 or entries.shape[1] != embeddings.shape[1] or entry_labels.shape != entries.shape[:1]:
            raise ValueError(f"memory must be (entries [M, {embeddings.shape[1]}], labels [M]), got "
                             f"{tuple(entries.shape)} and {tuple(entry_labels.shape)}")
        # every batch node's choice, also under a shard: the memory nodes are the same on every process
        chosen = memory_edge_index(embeddings, labels, entries, entry_labels, memory_k)
        memory_index, node_of_entry = chosen[0].unique(return_inverse=True)
        memory_edges = torch.stack([num_nodes + node_of_entry, chosen[1]])
        x = torch.cat([embeddings, entries[memory_index].detach().to(embeddings.dtype)])
        y = torch.cat([labels, entry_labels[memory_index].to(labels.dtype)])
    owned = None if shard is None else shard.owned_nodes(num_nodes, memory_index.numel(), device=device)
    targets = None if owned is None else owned[:num_nodes].nonzero(as_tuple=True)[0]
    if edges == "full":
        edge_index = full_edge_index(num_nodes, self_loops, device=device, targets=targets)
    else:
        edge_index = knn_edge_index(embeddings, k, self_loops, targets=targets)
    if memory_edges is not None:
        memory_nodes = num_nodes + torch.arange(memory_index.numel(), device=device)
        extra = [memory_edges]
        if self_loops:
            extra.append(torch.stack([memory_nodes, memory_nodes]))
        extra = torch.cat(extra, dim=1)
        if owned is not None:       # the batch's edges already end in owned nodes only
            extra = extra[:, owned[extra[1]]]
        edge_index = torch.cat([edge_index, extra], dim=1)
    edge_attr = channel_correlation(x, edge_index)
    same_class = y[edge_index[0]] == y[edge_index[1]]
    graph = Data(x=x, edge_index=edge_index, edge_attr=edge_attr, y=y, same_class=same_class,
                 num_nodes=x.shape[0], num_batch=num_nodes, memory_index=memory_index)
    if owned is not None:
        graph.owned = owned
    return graph
