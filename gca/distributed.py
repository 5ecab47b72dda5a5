"""Building blocks for data-parallel training over ``torch.distributed`` (launched by ``torchrun``).

The trainer does not use them yet (it refuses to run as one of several launcher copies); they are the parts
that a global batch graph needs whatever way its edges are sharded: who this process is
(:class:`ProcessGroupInfo`), and the batch gathered from every process with each sample's gradient path kept
(:func:`all_gather_with_grad`). The sampler's share of a global batch is
:class:`gca.data.ClassBalancedBatchSampler` with ``rank`` and ``world_size``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

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
    """Every phase of ``objective`` computed on the batch gathered from all processes.

    Each process hands its own embeddings and labels; the wrapped objective sees the global batch (rank
    order), so its graph, synthetics and losses are those of one process on the concatenated batch. Every
    process computes the same losses (the generator's work is repeated on each process, not sharded), so the
    embedding network's gradient reaching each process is ``N`` times that of the global loss for its own
    samples (:func:`all_gather_with_grad`) and DDP's average over the ``N`` processes returns the global
    loss's gradient; the generator, classifier and metric-loss parameters get the same gradient on every
    process without any averaging (they are not wrapped in DDP). The processes' random number generators
    must be in step (the same seed, the same draws), as the repeated dropout masks must agree.

    Args:
        objective: the objective to wrap (:class:`gca.objective.Objective`).
        group: the process group (default: the world).
    """

    def __init__(self, objective, group=None):
        super().__init__()
        self.objective = objective
        self.group = group

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
        return self.objective.metric_losses(*self._gathered(embeddings, labels, True), generator=generator)

    def classifier_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return self.objective.classifier_loss(*self._gathered(embeddings, labels, False))

    def generator_losses(self, embeddings: Tensor, labels: Tensor, generator=None):
        return self.objective.generator_losses(*self._gathered(embeddings, labels, False), generator=generator)

    def fused_losses(self, embeddings: Tensor, labels: Tensor, generator=None):
        if not hasattr(self.objective, "fused_losses"):
            raise TypeError(f"{type(self.objective).__name__} has no fused_losses")
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


def all_gather_rows(tensor: Tensor, group=None) -> Tensor:
    """Every process's ``tensor`` stacked in rank order when the row counts differ (no gradient): each
    process's rows are padded to the longest, gathered, and cut back."""
    world = dist.get_world_size(group)
    count = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    counts = [torch.empty_like(count) for _ in range(world)]
    dist.all_gather(counts, count, group=group)
    longest = int(max(c.item() for c in counts))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[:tensor.shape[0]] = tensor
    parts = all_gather_no_grad(padded, group).split(longest)
    return torch.cat([part[:int(c.item())] for part, c in zip(parts, counts)])
