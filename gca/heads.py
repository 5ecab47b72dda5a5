"""Output heads read after propagation (METHOD 2.3, output heads)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from gca._precision import full_precision


class FrozenBiasBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose shift is fixed at zero (the "bottleneck" BN of the authors' heads).

    Args:
        num_features: channels :math:`D`.
        **kwargs: passed to :class:`torch.nn.BatchNorm1d`.

    Shapes:
        ``[N, D]`` -> ``[N, D]``
    """

    def __init__(self, num_features: int, **kwargs):
        super().__init__(num_features, **kwargs)  # calls reset_parameters, which freezes the bias

    def reset_parameters(self):
        """Running statistics reset, weight 1, bias 0 and frozen again."""
        super().reset_parameters()
        # the zero shift is part of the layer, not a trained value: a reset restores it
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def forward(self, x: Tensor, row_weight: Optional[Tensor] = None,
                reduce: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
        """Normalise ``x``; with ``row_weight`` (``[N]``), row ``r`` counts as ``row_weight[r]`` rows.

        A weighted batch is the same as the batch with every row repeated its weight's number of times:
        the mean and the (biased) variance are weighted means, the running variance gets the unbiased
        correction of ``sum(row_weight)`` rows. This is how one state per unordered pair of a symmetric
        graph normalises exactly as the two directed edges it stands for (weight 2, self-loops 1).

        ``reduce`` (a differentiable sum over processes, :meth:`gca.distributed.EdgeShard.sum`) makes the
        training statistics those of every process's rows together: the batch of a graph sharded by edges.
        """
        if row_weight is None and reduce is None:
            return super().forward(x)
        if row_weight is None:
            row_weight = torch.ones(x.shape[0], dtype=torch.float32, device=x.device)
        with full_precision(x.device):    # the statistics are sums over many rows: never in half precision
            return self._weighted(x, row_weight, reduce).to(x.dtype)

    def _weighted(self, x: Tensor, row_weight: Tensor, reduce=None) -> Tensor:
        # float32 at least (half-precision inputs are promoted), float64 kept
        xf = x if x.dtype == torch.float64 else x.float()
        if self.training or not self.track_running_stats:
            w = row_weight.to(xf.dtype)
            total_of = reduce if reduce is not None else (lambda t: t)
            total = total_of(w.sum())
            mean = total_of(w @ xf) / total
            centred = xf - mean
            var = total_of(w @ centred.square()) / total
            if self.training and self.track_running_stats:
                self._update_running_stats(mean.detach(), var.detach(), total)
        else:
            mean, var = self.running_mean, self.running_var
            centred = xf - mean
        out = centred * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / (count - 1).clamp_min(1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


class ChannelWeightHead(nn.Module):
    r"""Edge state -> interpolation weights :math:`\lambda = \sigma(W_\lambda \mathrm{BN}(e) + b_\lambda)`.

    ``per_channel=False`` gives one scalar per edge (broadcast over the channels): the ablation of the
    channel-wise weights. The BN uses the edges of the batch as its batch.

    Args:
        channels: edge width :math:`D`.
        per_channel: one weight per channel (``False``: one per edge).

    Shapes:
        edge states ``[E, D]`` -> ``[E, D]`` (or ``[E, 1]`` when not per channel)
    """

    def __init__(self, channels: int, per_channel: bool = True):
        super().__init__()
        self.per_channel = per_channel
        self.norm = FrozenBiasBatchNorm1d(channels)
        self.linear = nn.Linear(channels, channels if per_channel else 1)

    def reset_parameters(self):
        self.norm.reset_parameters()
        self.linear.reset_parameters()

    def forward(self, edge_states: Tensor, row_weight: Optional[Tensor] = None,
                reduce: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
        """``row_weight``: how many edges each row stands for (one state per unordered pair: 2, self-loops 1),
        so that the BN normalises as over the directed edges; ``reduce``: the sum over the processes of a graph
        sharded by edges (:meth:`FrozenBiasBatchNorm1d.forward`)."""
        return self.linear(self.norm(edge_states, row_weight, reduce)).sigmoid()


class NodeClassifierHead(nn.Module):
    """Node state -> logits over the training classes, ``Linear(BN(h))`` with the BN shift frozen.

    Args:
        channels: node width :math:`D`.
        num_classes: training classes :math:`C`.

    Shapes:
        node states ``[N, D]`` -> logits ``[N, C]``
    """

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = FrozenBiasBatchNorm1d(channels)
        self.linear = nn.Linear(channels, num_classes)

    def reset_parameters(self):
        self.norm.reset_parameters()
        self.linear.reset_parameters()

    def forward(self, node_states: Tensor) -> Tensor:
        return self.linear(self.norm(node_states))
