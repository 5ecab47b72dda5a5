"""Output heads read after propagation (METHOD 2.3, output heads)."""
from __future__ import annotations

from torch import Tensor, nn


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

    def forward(self, edge_states: Tensor) -> Tensor:
        return self.linear(self.norm(edge_states)).sigmoid()


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
