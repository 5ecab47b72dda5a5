"""Data-parallel training over ``torch.distributed`` (launched by ``torchrun``) with a global batch graph.

Who this process is (:class:`ProcessGroupInfo`); the batch gathered from every process with each sample's
gradient path kept (:func:`all_gather_with_grad`, :func:`all_gather_rows_with_grad`); the objective on the
gathered batch (:class:`GatheredObjective`), whose generator either repeats the graph work on every process
or shards it by edges (:class:`EdgeShard`: each process owns the edges that end in its own samples); BatchNorm
over the global batch (:func:`use_global_batchnorm`). The sampler's share of a global batch is
:class:`gca.data.ClassBalancedBatchSampler` with ``rank`` and ``world_size``.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class ProcessGroupInfo:
    """This process's place among the launcher's copies: ``rank`` in ``[0, world_size)``, ``local_rank`` on
    its machine (the GPU it takes)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files, logs and progress bars."""
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "ProcessGroupInfo":
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as ``torchrun`` sets them (absent: one process).

        Raises:
            ValueError: a variable that is not an integer, or a rank outside ``[0, WORLD_SIZE)``.
        """
        env = os.environ if environ is None else environ
        values = {}
        for key, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
            text = env.get(key, "").strip()
            try:
                values[key] = int(text) if text else default
            except ValueError:
                raise ValueError(f"environment variable {key}={text!r} is not an integer") from None
        if values["WORLD_SIZE"] < 1 or not 0 <= values["RANK"] < values["WORLD_SIZE"]:
            raise ValueError(f"RANK={values['RANK']} is not in [0, WORLD_SIZE={values['WORLD_SIZE']})")
        return cls(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor, group) -> Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        # every process's loss may read every sample: a sample's gradient is the sum over the processes
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None


def all_gather_with_grad(tensor: Tensor, group=None) -> Tensor:
    r"""Every process's ``tensor`` stacked in rank order, differentiable back to each process's own rows.

    The gradient that reaches this process's ``tensor`` is the sum, over all processes, of the gradients their
    losses sent to these rows (an all-reduce of the gathered tensor's gradient). Loss scaling with DDP, which
    averages parameter gradients over the ``N`` processes: if every process computes the *same* loss on the
    gathered batch, the sum gives ``N`` times its gradient and DDP's average brings it back to the gradient of
    one process on the concatenated batch; if each process computes its *share* ``L_r`` of a loss
    ``L = \sum_r L_r`` (its own anchors), multiply ``L_r`` by ``N`` to get ``\partial L`` after DDP's average.

    Shapes:
        ``[n, *]`` on each process (the same ``n`` everywhere) -> ``[N * n, *]``.

    Raises:
        ValueError: the processes hold different row counts or shapes (checked with one small all-gather).
    """
    world = dist.get_world_size(group)
    shape = torch.tensor(list(tensor.shape), dtype=torch.long, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape, group=group)
    if any(not torch.equal(s, shape) for s in shapes):
        raise ValueError(f"all_gather_with_grad needs the same shape on every process, got "
                         f"{[tuple(s.tolist()) for s in shapes]}")
    return _AllGatherWithGrad.apply(tensor, group)


def all_gather_no_grad(tensor: Tensor, group=None) -> Tensor:
    """Every process's ``tensor`` in rank order, without a gradient path (labels; detached embeddings)."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts)


class GatheredObjective(torch.nn.Module):
    r"""Every phase of ``objective`` computed on the batch gathered from all processes.

    Each process hands its own embeddings and labels; the wrapped objective sees the global batch (rank
    order), so its graph, synthetics and losses are those of one process on the concatenated batch.

    Gradients and loss scaling. Every process computes the same loss value on the global batch, so the
    gradient reaching a process's own embeddings through :func:`all_gather_with_grad` is ``N`` times that of
    the global loss, and DDP's average of the embedding network's gradients over the ``N`` processes returns
    exactly the global loss's gradient: no ``world_size`` factor to set by hand. The classifier and the
    metric loss's parameters (proxies) read only gathered tensors: the same gradient on every process, no
    averaging needed.

    The generator's graph work is either repeated on every process (``shard_edges=False``: the same gradient
    everywhere, the processes' random number generators in step so that the repeated dropout masks agree)
    or sharded by edges (``shard_edges=True``, :meth:`gca.GCAGenerator.sharded` with an :class:`EdgeShard`:
    each process owns the edges into its own samples and about ``1/N`` of the edge work and memory). Sharded,
    the generator's gradient on process ``r`` is ``N g_r`` for the parts computed on its own edges (``g_r`` its
    share of the global gradient; the gathered outputs' gradients are summed over the processes) and the full
    gradient ``g`` for the parts every process repeats on gathered tensors (the node head), so the step
    averages it over the processes (:meth:`reduce_generator_gradients`), which gives ``\sum_r g_r`` and ``g``.
    The generator's random draws (dropout, mixing weights) then come from a stream of each process's own,
    forked from the shared one, so the processes' generators stay in step for everything else and draw
    independently for their edges: with dropout, the two directions of a pair split between two processes get
    two masks, as one process's directed edges (``symmetric_edges=False``) do, where one process keeping pair
    states shares one mask. A layer whose blocks cannot be sharded (``supports_sharding`` false, e.g. ``gen``
    with its BatchNorm over nodes) falls back to the repeated graph, with a warning.

    Args:
        objective: the objective to wrap (:class:`gca.objective.Objective`).
        group: the process group (default: the world).
        shard_edges: shard the generator's graph by edges (when the objective has a generator that can).
    """

    def __init__(self, objective, group=None, shard_edges: bool = False):
        super().__init__()
        self.objective = objective
        self.group = group
        generator = getattr(objective, "generator", None)
        propagation = getattr(generator, "propagation", None)
        can_shard = hasattr(generator, "sharded") and getattr(propagation, "supports_sharding", False)
        if shard_edges and hasattr(generator, "sharded") and not can_shard:
            warnings.warn(f"layer {getattr(propagation, 'layer_type', '?')!r} cannot be sharded by edges (its blocks "
                          f"lack supports_sharding); every process repeats the whole graph", stacklevel=2)
        self.shards_edges = bool(shard_edges) and can_shard

    @contextlib.contextmanager
    def _generator_work(self, device: torch.device):
        if not self.shards_edges:
            yield
            return
        shard = EdgeShard.current(self.group)
        # one draw from the shared stream (the same on every process), then a stream of this process's own
        seed = int(torch.randint(2 ** 62, (1,)).item()) + shard.rank
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self.objective.generator.sharded(shard):
            torch.manual_seed(seed)
            yield

    def reduce_generator_gradients(self) -> None:
        """Average the generator's gradients over the processes (sharded by edges; nothing otherwise). Called
        by :func:`gca.train.train_step` after every backward pass that trains the generator."""
        if not self.shards_edges:
            return
        params = list(self.objective.generator_parameters())
        if not params:
            return
        # on the parameters' device: NCCL reduces CUDA tensors only
        present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
        dist.all_reduce(present, op=dist.ReduceOp.MAX, group=self.group)
        grads = []
        for p, anywhere in zip(params, present.tolist()):
            if anywhere:
                if p.grad is None:      # unused here, used on another process
                    p.grad = torch.zeros_like(p)
                grads.append(p.grad)
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        flat /= dist.get_world_size(self.group)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    @property
    def metric_loss(self):
        return self.objective.metric_loss

    @property
    def trains_generator(self) -> bool:
        return self.objective.trains_generator

    def _gathered(self, embeddings: Tensor, labels: Tensor, grad: bool):
        z = all_gather_with_grad(embeddings, self.group) if grad else \
            all_gather_no_grad(embeddings.detach(), self.group)
        return z, all_gather_no_grad(labels, self.group)

    def metric_losses(self, embeddings: Tensor, labels: Tensor, generator=None):
        with self._generator_work(embeddings.device):
            return self.objective.metric_losses(*self._gathered(embeddings, labels, True), generator=generator)

    def classifier_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return self.objective.classifier_loss(*self._gathered(embeddings, labels, False))

    def generator_losses(self, embeddings: Tensor, labels: Tensor, generator=None):
        with self._generator_work(embeddings.device):
            return self.objective.generator_losses(*self._gathered(embeddings, labels, False), generator=generator)

    def fused_losses(self, embeddings: Tensor, labels: Tensor, generator=None):
        if not hasattr(self.objective, "fused_losses"):
            raise TypeError(f"{type(self.objective).__name__} has no fused_losses")
        with self._generator_work(embeddings.device):
            return self.objective.fused_losses(*self._gathered(embeddings, labels, True), generator=generator)

    def generator_parameters(self):
        return self.objective.generator_parameters()

    def classifier_parameters(self):
        return self.objective.classifier_parameters()

    def schedule_factors(self):
        return self.objective.schedule_factors()

    def end_epoch(self) -> None:
        self.objective.end_epoch()

    def end_step(self, embeddings: Tensor, labels: Tensor) -> None:
        # the global batch in rank order: every process's memory receives the same rows in the same order
        self.objective.end_step(*self._gathered(embeddings, labels, False))


class _AllReduceSum(torch.autograd.Function):
    """The sum over the processes; its gradient is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, tensor: Tensor, group) -> Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


class _GlobalBatchNormMixin:
    """BatchNorm whose training statistics are those of every process's batch together (as one process on
    the concatenated batch): the per-channel count, sum and sum of squared deviations are summed over the
    processes, with their gradient. In eval mode, or outside a process group, it is the plain layer."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = _AllReduceSum.apply(torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device), None)
        mean = _AllReduceSum.apply(x.sum(dims), None) / count
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply(centred.pow(2).sum(dims), None) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                unbiased = var.detach() * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


class GlobalBatchNorm1d(_GlobalBatchNormMixin, torch.nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` with the statistics of every process's batch (see the mixin)."""


class GlobalBatchNorm2d(_GlobalBatchNormMixin, torch.nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` with the statistics of every process's batch (see the mixin)."""


def use_global_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Make every plain ``BatchNorm1d``/``BatchNorm2d`` in ``module`` use the statistics of all processes'
    batches, in place (their parameters, buffers and state-dict keys unchanged). Works with gloo on CPU,
    where :class:`torch.nn.SyncBatchNorm` does not."""
    for m in module.modules():
        if type(m) is torch.nn.BatchNorm1d:
            m.__class__ = GlobalBatchNorm1d
        elif type(m) is torch.nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d
    return module


def shard_range(length: int, rank: int, world_size: int) -> range:
    """The contiguous block of ``range(length)`` that process ``rank`` of ``world_size`` handles (the blocks
    cover it in order; their sizes differ by at most one)."""
    base, extra = divmod(length, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def _row_counts(tensor: Tensor, group=None) -> tuple:
    """Every process's row count of ``tensor``, in rank order (one small all-gather)."""
    count = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    counts = [torch.empty_like(count) for _ in range(dist.get_world_size(group))]
    dist.all_gather(counts, count, group=group)
    return tuple(int(c.item()) for c in counts)


def _gather_padded(tensor: Tensor, counts: tuple, group=None) -> Tensor:
    """Each process's rows padded to the longest, gathered, and cut back to ``counts``, in rank order."""
    longest = max(max(counts), 1)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[:tensor.shape[0]] = tensor
    parts = all_gather_no_grad(padded, group).split(longest)
    return torch.cat([part[:c] for part, c in zip(parts, counts)])


def all_gather_rows(tensor: Tensor, group=None) -> Tensor:
    """Every process's ``tensor`` stacked in rank order when the row counts differ (no gradient): each
    process's rows are padded to the longest, gathered, and cut back."""
    return _gather_padded(tensor, _row_counts(tensor, group), group)


class _AllGatherRowsWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor, counts: tuple, group) -> Tensor:
        ctx.group, ctx.rank, ctx.counts = group, dist.get_rank(group), counts
        return _gather_padded(tensor, counts, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        # as in all_gather_with_grad: every process's loss may read every row
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.counts[:ctx.rank])
        return grad[start:start + ctx.counts[ctx.rank]], None, None


def all_gather_rows_with_grad(tensor: Tensor, group=None, counts: Optional[tuple] = None) -> Tensor:
    """:func:`all_gather_with_grad` for row counts that differ between the processes (the rows of every
    process in rank order; the gradient reaching this process's rows is the sum over the processes').

    Args:
        tensor: ``[n_r, *]`` on process ``r`` (the trailing shape the same everywhere).
        counts: every process's ``n_r`` when the caller knows them (saves one small all-gather).
    """
    if counts is None:
        counts = _row_counts(tensor, group)
    elif counts[dist.get_rank(group)] != tensor.shape[0]:
        raise ValueError(f"counts say {counts[dist.get_rank(group)]} rows on this process, the tensor has "
                         f"{tensor.shape[0]}")
    return _AllGatherRowsWithGrad.apply(tensor, tuple(counts), group)


def all_reduce_sum(tensor: Tensor, group=None) -> Tensor:
    """The sum of ``tensor`` over the processes, differentiable: the gradient reaching each process is the sum
    of the processes' gradients (each process's loss depends on every process's share)."""
    return _AllReduceSum.apply(tensor, group)


@dataclass(frozen=True)
class EdgeShard:
    r"""This process's share of a batch graph built over the global batch: the edges that end in its nodes.

    Process ``r`` of ``N`` owns the block :func:`shard_range` ``(B, r, N)`` of the ``B`` batch nodes (its own
    samples, when every process holds ``B / N`` of them in rank order) and, with a cross-batch memory, the
    block ``shard_range(M', r, N)`` of the ``M'`` memory nodes the graph chose. It builds only the edges whose
    target it owns (:func:`gca.build_batch_graph` with ``shard``), runs every layer's edge work and node update
    on them, and after each node update the owned rows of every process are gathered
    (:meth:`gather_nodes`), since an edge needs the states of both its end nodes. Node-level work (input
    projection, queries, feed-forward blocks: ``O(N D^2)``) is repeated on every process for simplicity; the
    edge work (``O(E D^2)``) is split: about ``E / N`` edges per process.

    Args:
        rank, world_size: this process's place (``dist.get_rank()``, ``dist.get_world_size()``).
        group: the process group (``None``: the world).
    """

    rank: int
    world_size: int
    group: Any = None

    @classmethod
    def current(cls, group=None) -> "EdgeShard":
        """The shard of this process in ``group`` (an initialised process group)."""
        return cls(dist.get_rank(group), dist.get_world_size(group), group)

    def node_blocks(self, num_batch: int, num_memory: int = 0) -> List[Tensor]:
        """Every process's owned nodes, in rank order: its batch block, then its memory block."""
        blocks = []
        for r in range(self.world_size):
            batch = shard_range(num_batch, r, self.world_size)
            memory = shard_range(num_memory, r, self.world_size)
            blocks.append(torch.cat([torch.arange(batch.start, batch.stop),
                                     num_batch + torch.arange(memory.start, memory.stop)]))
        return blocks

    def owned_nodes(self, num_batch: int, num_memory: int = 0, device=None) -> Tensor:
        """``[N]`` bool: the nodes whose incoming edges (and node update) this process computes."""
        owned = torch.zeros(num_batch + num_memory, dtype=torch.bool)
        owned[self.node_blocks(num_batch, num_memory)[self.rank]] = True
        return owned.to(device)

    def gather_nodes(self, states: Tensor, num_batch: int) -> Tensor:
        """Every node's state, each from the process that owns it.

        Args:
            states: ``[N, *]`` this process's node states; only the rows it owns are used (the others, whose
                incoming edges live on other processes, are incomplete).
            num_batch: ``B``; the nodes after it are memory nodes.

        Returns:
            ``[N, *]``, differentiable back to every process's owned rows.
        """
        blocks = self.node_blocks(num_batch, states.shape[0] - num_batch)
        own = blocks[self.rank].to(states.device)
        gathered = all_gather_rows_with_grad(states[own], self.group, tuple(b.numel() for b in blocks))
        # gathered holds the blocks in rank order; put every row back at its node
        position = torch.empty(states.shape[0], dtype=torch.long)
        position[torch.cat(blocks)] = torch.arange(states.shape[0])
        return gathered[position.to(states.device)]

    def sum(self, tensor: Tensor) -> Tensor:
        """:func:`all_reduce_sum` over the shard's group (statistics over every process's edges)."""
        return all_reduce_sum(tensor, self.group)

    def gather_rows(self, tensor: Tensor) -> Tensor:
        """Every process's rows in rank order, with gradient (:func:`all_gather_rows_with_grad`)."""
        return all_gather_rows_with_grad(tensor, self.group) if tensor.requires_grad else \
            all_gather_rows(tensor, self.group)


def shard_edge_counts(num_batch: int, world_size: int, rank: int, edges: str = "full", k: Optional[int] = None,
                      self_loops: bool = True, symmetric: bool = False) -> dict:
    """How many edges process ``rank`` of ``world_size`` holds of the batch graph over a global batch of
    ``num_batch`` (no memory), as :func:`gca.build_batch_graph` with an :class:`EdgeShard` builds them.

    With ``T`` owned targets (:func:`shard_range`): ``directed`` = ``B T`` on the full graph (``B T - T``
    without self-loops), ``T k`` (``+ T``) on knn; ``rows`` (the edge states kept) = ``directed`` except on the
    full graph with ``symmetric``, where the pairs of two owned nodes keep one state:
    ``T (T + 1) / 2`` (``T (T - 1) / 2`` without self-loops) plus the ``(B - T) T`` edges from other
    processes' nodes. One process (``world_size = 1``) keeps ``B (B + 1) / 2`` pair states; ``N`` processes
    together keep ``B^2 / 2 + B^2 (N - 1) / 2N`` (the edges between two processes' nodes once in each
    direction).
    """
    targets = len(shard_range(num_batch, rank, world_size))
    loops = targets if self_loops else 0
    if edges == "knn":
        directed = targets * k + loops
        return {"targets": targets, "directed": directed, "rows": directed}
    directed = num_batch * targets - (0 if self_loops else targets)
    if not symmetric:
        return {"targets": targets, "directed": directed, "rows": directed}
    inside = targets * (targets - 1) // 2 + loops
    return {"targets": targets, "directed": directed, "rows": inside + (num_batch - targets) * targets}
