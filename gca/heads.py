"""Output heads read after propagation (METHOD 2.3, output heads)."""
from __future__ import annotations

from torch import Tensor, nn


class FrozenBiasBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose shift is fixed at zero (the "bottleneck" BN of the authors' heads)."""

    def __init__(self, num_features: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.bias.requires_grad_(False)

    def reset_parameters(self):
        super().reset_parameters()  # weight 1, bias 0


class ChannelWeightHead(nn.Module):
    r"""Edge state -> interpolation weights :math:`\lambda = \sigma(W_\lambda \mathrm{BN}(e) + b_\lambda)`.

    ``per_channel=False`` gives one scalar per edge (broadcast over the channels): the ablation of the
    channel-wise weights. The BN uses the edges of the batch as its batch.

    Shapes:
        edge states ``[E, D]`` -> ``[E, D]`` (or ``[E, 1]`` when not per channel)
    """

    def __init__(self, channels: int, per_channel: bool = True):
        super().__init__()
        self.per_channel = per_channel
        self.norm = FrozenBiasBatchNorm1d(channels)
        self.linear = nn.Linear(channels, channels if per_channel else 1)

    def forward(self, edge_states: Tensor) -> Tensor:
        return self.linear(self.norm(edge_states)).sigmoid()


class NodeClassifierHead(nn.Module):
    """Node state -> logits over the training classes, ``Linear(BN(h))`` with the BN shift frozen."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = FrozenBiasBatchNorm1d(channels)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, node_states: Tensor) -> Tensor:
        return self.linear(self.norm(node_states))
