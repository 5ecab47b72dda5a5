"""``GCAGenerator``: the batch graph, the propagation, the heads and the synthesis settings of GCA-HNG.

This is the part a user swaps and reuses: it turns a batch of embeddings into node and edge states,
channel weights :math:`\\lambda` and synthetic negatives (METHOD 2.2-2.4). It owns no loss and no schedule;
:class:`gca.GCAHNG` (the objective) calls it with the current hardness :math:`\\gamma`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from gca._checks import check_embeddings_and_labels, check_generator_options, check_int, check_label_range
from gca._precision import full_precision
from gca.graph import build_batch_graph
from gca.heads import ChannelWeightHead, NodeClassifierHead
from gca.memory import CrossBatchMemory
from gca.nn.propagation import GraphPropagation
from gca.synthesis import Synthetics, synthesize_negatives


class _EdgeStates:
    @property
    def edge_states(self) -> Tensor:
        """``[E, D]``: the state of every directed edge (formed on demand from the pair states, if any)."""
        return self.edge_rows if self.edge_to_row is None else self.edge_rows[self.edge_to_row]


@dataclass
class Propagation(_EdgeStates):
    """The batch graph after propagation, with the two heads read (see :meth:`GCAGenerator.propagate`).

    With symmetric edges the edge states are kept once per unordered pair (``edge_rows`` ``[P, D]``,
    ``edge_to_row`` ``[E]``); ``edge_states`` gives them per directed edge either way.
    """

    graph: Data
    node_states: Tensor      # [B, D]
    edge_rows: Tensor        # [E, D], or [P, D] with edge_to_row
    lam: Tensor              # [E, D] (or [E, 1] with per_channel=False), float32
    node_logits: Tensor      # [B, num_classes], float32
    edge_to_row: Optional[Tensor] = None


@dataclass
class Generation(_EdgeStates):
    """Everything one generator pass produces (see :meth:`GCAGenerator.forward`).

    Sharded by edges (:meth:`GCAGenerator.sharded`), ``graph``, ``edge_rows`` and ``lam`` are this process's
    share (the edges into its nodes), ``node_states`` and ``node_logits`` are every node's, ``synthetics`` holds
    every process's rows in anchor order (its ``edge_ids`` this process's edges, which fed its own rows),
    ``local_synthetics`` this process's rows, and ``reduce`` sums a statistic over the processes.
    """

    graph: Data
    node_states: Tensor      # [B, D]
    edge_rows: Tensor        # as in Propagation
    lam: Tensor              # [E, D] (or [E, 1] with per_channel=False), float32
    node_logits: Tensor      # [B, num_classes], float32
    synthetics: Synthetics   # with the ids of the edges that fed them
    gamma: Tensor            # hardness factor used
    edge_to_row: Optional[Tensor] = None
    local_synthetics: Optional[Synthetics] = None
    reduce: Optional[Callable[[Tensor], Tensor]] = None

    @property
    def own_synthetics(self) -> Synthetics:
        """The rows this process made (all of them without sharding), with their ``edge_ids``."""
        return self.synthetics if self.local_synthetics is None else self.local_synthetics


class GCAGenerator(nn.Module):
    r"""The batch graph, the propagation network, the two heads and the synthesis of GCA-HNG.

    Args:
        embedding_dim: :math:`D`.
        num_classes: training classes, for the node-classification head (labels in ``[0, num_classes)``).
        num_layers, heads, layer, dropout, layer_kwargs: the propagation network
            (:class:`gca.nn.GraphPropagation`); ``num_layers=0`` is the "no propagation" ablation.
        edges, k, self_loops: the batch graph (:func:`gca.build_batch_graph`).
        per_channel: one interpolation weight per channel (``False``: one scalar per pair, an ablation).
        negatives_per_class: ``"all"`` or ``"one"`` sample of each negative class per synthetic.
        mixing: ``"sequential"``, ``"dirichlet"`` or ``"mean"`` (:func:`gca.synthesis.mixing_weights`).
        symmetric_edges: keep one edge state per unordered pair (:class:`gca.nn.GraphPropagation`), which
            halves the edge work on the full graph with the same result (with a memory, the pairs of batch
            nodes; each memory edge keeps a state of its own); ``"auto"`` uses it whenever the graph is full and
            the layer type supports it.
        memory_size: ``M > 0`` keeps a cross-batch memory of the last ``M`` embeddings (:mod:`gca.memory`),
            refreshed by :meth:`remember`; ``0``: none (the batch graph alone).
        memory_k: memory entries of other classes joined to each anchor.

    Shapes:
        embeddings ``[B, D]``, labels ``[B]`` -> :class:`Generation` (``E`` edges, ``S`` synthetics; with a
        memory the graph, ``node_states`` and ``lam`` also cover the memory entries it chose)
    """

    def __init__(self, embedding_dim: int, num_classes: int, *, num_layers: int = 2, heads: int = 4,
                 layer: str = "gca", dropout: float = 0.1, layer_kwargs: Optional[dict] = None,
                 edges: str = "full", k: Optional[int] = None, self_loops: bool = True, per_channel: bool = True,
                 negatives_per_class: str = "all", mixing: str = "sequential",
                 symmetric_edges: Union[str, bool] = "auto", memory_size: int = 0, memory_k: int = 16):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        check_generator_options(edges=edges, k=k, mixing=mixing, negatives_per_class=negatives_per_class)
        self.embedding_dim, self.num_classes = embedding_dim, num_classes
        self.edges, self.k, self.self_loops = edges, k, self_loops
        self.negatives_per_class, self.mixing = negatives_per_class, mixing
        self.propagation = GraphPropagation(embedding_dim, num_layers, heads, layer, dropout, **(layer_kwargs or {}))
        check_int("memory_size", memory_size, minimum=0)
        check_int("memory_k", memory_k)
        self.memory = CrossBatchMemory(memory_size, embedding_dim) if memory_size else None
        self.memory_k = memory_k
        if symmetric_edges == "auto":
            symmetric_edges = edges == "full" and self.propagation.supports_pairs
        elif symmetric_edges and edges != "full":
            raise ValueError("symmetric_edges needs edges='full' (a knn graph is not symmetric)")
        self.symmetric_edges = bool(symmetric_edges)
        self.lambda_head = ChannelWeightHead(embedding_dim, per_channel)
        self.node_head = NodeClassifierHead(embedding_dim, num_classes)
        self.edge_shard = None

    @contextlib.contextmanager
    def sharded(self, shard):
        """Within the block, build and propagate only this process's share of the graph over a global batch.

        ``shard`` is a :class:`gca.distributed.EdgeShard`; every process must call the generator with the same
        global batch (embeddings gathered with their gradient, :func:`gca.distributed.all_gather_with_grad`).
        Each process builds the edges that end in its nodes (:func:`gca.build_batch_graph` with ``shard``),
        propagates them, gathering the node states after every node update, normalises lambda with the
        statistics of every process's edges and synthesises its anchors' negatives; the synthetics are then
        gathered, so every loss on them is the one-process loss. A loss on a :class:`Generation` gives each
        process ``N`` times its share of the gradient of what it computed on its edges, and the whole gradient of
        what every process repeats (the node head): average the generator's gradients over the processes
        (:meth:`gca.distributed.GatheredObjective.reduce_generator_gradients`). On the full graph
        with ``symmetric_edges``, only pairs of two owned nodes keep one state: about ``B^2 (2N - 1) / 2N^2``
        edge states per process, where one process keeps ``B (B + 1) / 2``
        (:func:`gca.distributed.shard_edge_counts`).
        """
        if shard is not None and not self.propagation.supports_sharding:
            raise ValueError(f"layer {self.propagation.layer_type!r} cannot be sharded by edges "
                             f"(its blocks lack supports_sharding)")
        previous, self.edge_shard = self.edge_shard, shard
        try:
            yield self
        finally:
            self.edge_shard = previous

    def parameters_to_train(self) -> Iterator[nn.Parameter]:
        """The GNN and its heads (the authors' ``opt_gnn``), frozen ones left out."""
        return (p for p in self.parameters() if p.requires_grad)

    def compile_layers(self, **compile_kwargs) -> "GCAGenerator":
        """Compile the forward of every propagation block with :func:`torch.compile`, in place.

        Each block is compiled through :meth:`torch.nn.Module.compile` rather than wrapped in an
        ``OptimizedModule``, so ``state_dict()`` keeps its keys: checkpoints load into compiled and uncompiled
        generators alike. The input projection, the batch graph, the heads and the synthesis stay eager. The
        first call of each block compiles it (and again for a new input signature, e.g. embeddings that stop
        requiring gradients), which takes seconds to minutes. On a CPU it does not pay (the cost benchmark's
        ``compile`` suite: the step 10-15% slower, its tensors about 25% smaller).

        Args:
            **compile_kwargs: passed to :func:`torch.compile` (``backend``, ``mode``, ``dynamic``, ...).
                ``dynamic`` defaults to ``True``, since the number of edges changes with the batch size and the
                graph, except in blocks that recompute (``layer_kwargs.recompute`` ``"gathers"`` or ``"all"``):
                dynamo fails on :func:`torch.utils.checkpoint.checkpoint` under ``dynamic=True`` (torch 2.14),
                so those get torch's ``None`` (static shapes first, dynamic once a shape changes).

        Returns:
            The generator itself.

        Raises:
            ValueError: ``dynamic=True`` asked for blocks that recompute.
        """
        for block in self.propagation.layers:
            recomputes = any(getattr(module, "recompute", "none") != "none" for module in block.modules())
            kwargs = dict(compile_kwargs)
            if recomputes and kwargs.get("dynamic") is True:
                raise ValueError("compile_layers: dynamic=True fails on blocks that recompute "
                                 "(layer_kwargs.recompute); pass dynamic=None or False")
            kwargs.setdefault("dynamic", None if recomputes else True)
            block.compile(**kwargs)
        return self

    def check_inputs(self, embeddings: Tensor, labels: Tensor) -> None:
        check_embeddings_and_labels(embeddings, labels, min_classes=2)
        if embeddings.shape[1] != self.embedding_dim:
            raise ValueError(f"embeddings have D={embeddings.shape[1]} but the model was built for "
                             f"D={self.embedding_dim}")
        check_label_range(labels, self.num_classes)

    def propagate(self, embeddings: Tensor, labels: Tensor) -> Propagation:
        """Build the batch graph, propagate, and read the two heads (no synthesis).

        Args:
            embeddings, labels: the batch; gradients reach ``embeddings`` through the graph.
        """
        self.check_inputs(embeddings, labels)
        memory = self.memory.contents() if self.memory is not None else None
        shard = self.edge_shard
        graph = build_batch_graph(embeddings, labels, self.edges, self.k, self.self_loops, memory=memory,
                                  memory_k=self.memory_k, shard=shard)
        sharding, reduce = {}, None
        if shard is not None:
            sharding = dict(sync=lambda h: shard.gather_nodes(h, graph.num_batch))
            reduce = shard.sum
        # the propagation and its heads run in the ambient autocast precision (they are the cost); lambda,
        # the logits and everything after them in float32, as the baseline's loss
        if not self.symmetric_edges:
            node_states, edge_states = self.propagation(graph.x, graph.edge_index, graph.edge_attr, graph.same_class,
                                                        **sharding)
            lam = self.lambda_head(edge_states, reduce=reduce).float()
            edge_to_row = None
        else:
            # one state per unordered pair of batch nodes (a memory's edges go one way) that this process owns
            # (sharded): the lambda head runs per row, its BN weighting each row as the directed edges it stands
            # for (two, or one for a self-loop, a memory edge or an edge from another process's node), and
            # lambda is read per directed edge
            paired_nodes = None
            if graph.num_nodes > graph.num_batch or shard is not None:
                paired_nodes = torch.arange(graph.num_nodes, device=graph.x.device) < graph.num_batch
                if shard is not None:
                    paired_nodes &= graph.owned
            node_states, edge_states, (pair_index, edge_to_row) = self.propagation(
                graph.x, graph.edge_index, graph.edge_attr, graph.same_class, symmetric=True, return_pairs=True,
                paired_nodes=paired_nodes, **sharding)
            directions = torch.bincount(edge_to_row, minlength=edge_states.shape[0]).float()
            lam = self.lambda_head(edge_states, row_weight=directions, reduce=reduce).float()[edge_to_row]
        node_logits = self.node_head(node_states[:graph.num_batch]).float()
        return Propagation(graph, node_states, edge_states, lam, node_logits, edge_to_row)

    def synthesize(self, embeddings: Tensor, labels: Tensor, propagation: Propagation,
                   gamma: Union[float, Tensor] = 1.0, *, detach_lambda: bool = False, anchor_gradient: bool = True,
                   generator: Optional[torch.Generator] = None) -> Generation:
        """Synthesise negatives of ``embeddings`` with the channel weights of ``propagation``.

        The embeddings may be another view of the propagated batch (the same values, detached or not): the
        fused step (:meth:`gca.GCAHNG.fused_losses`) propagates once and synthesises twice.

        Args:
            embeddings, labels: the batch the propagation ran on.
            propagation: what :meth:`propagate` returned for that batch.
            gamma: hardness factor in ``[0, 1]``.
            detach_lambda: keep the synthesis from training the GNN (phase A).
            anchor_gradient: see :func:`gca.synthesize_negatives`.
            generator: a ``torch.Generator`` for the random draws (torch's naming).
        """
        gamma = torch.as_tensor(gamma, dtype=torch.float32, device=embeddings.device)
        lam = propagation.lam
        graph = propagation.graph
        nodes, node_labels = embeddings.float(), labels
        if graph.num_nodes > graph.num_batch:          # memory entries: candidate negatives, never anchors
            nodes = torch.cat([nodes, graph.x[graph.num_batch:].detach().float()])
            node_labels = graph.y
        with full_precision(embeddings.device):
            synthetics = synthesize_negatives(nodes, node_labels, graph.edge_index,
                                              lam.detach() if detach_lambda else lam, gamma, self.mixing,
                                              self.negatives_per_class, generator, anchor_gradient,
                                              num_anchors=graph.num_batch)
        shard, local = self.edge_shard, None
        if shard is not None:
            # this process made its anchors' rows (a block of the anchors, so rank order is anchor order)
            local = synthetics
            synthetics = Synthetics(shard.gather_rows(local.embeddings), shard.gather_rows(local.labels),
                                    shard.gather_rows(local.anchor_index), local.edge_ids)
        return Generation(propagation.graph, propagation.node_states, propagation.edge_rows, lam,
                          propagation.node_logits, synthetics, gamma, propagation.edge_to_row, local,
                          None if shard is None else shard.sum)

    def forward(self, embeddings: Tensor, labels: Tensor, gamma: Union[float, Tensor] = 1.0, *,
                detach_lambda: bool = False, anchor_gradient: bool = True,
                generator: Optional[torch.Generator] = None) -> Generation:
        """Build the batch graph, propagate, read the heads and synthesise negatives.

        Args:
            embeddings, labels: the batch.
            gamma: hardness factor in ``[0, 1]``.
            detach_lambda: keep the synthesis from training the GNN (phase A).
            anchor_gradient: see :func:`gca.synthesize_negatives`.
            generator: a ``torch.Generator`` for the random draws (torch's naming).
        """
        return self.synthesize(embeddings, labels, self.propagate(embeddings, labels), gamma,
                               detach_lambda=detach_lambda, anchor_gradient=anchor_gradient, generator=generator)

    @torch.no_grad()
    def remember(self, embeddings: Tensor, labels: Tensor) -> None:
        """Put a trained step's batch into the cross-batch memory (nothing without one)."""
        if self.memory is not None:
            self.memory.enqueue(embeddings.detach().float(), labels)

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, edges={self.edges!r}, "
                f"k={self.k}, mixing={self.mixing!r}, negatives_per_class={self.negatives_per_class!r}, "
                f"symmetric_edges={self.symmetric_edges}, memory_k={self.memory_k}")
