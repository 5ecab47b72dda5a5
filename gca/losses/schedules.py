"""Epoch-level schedules from HDML, driven by the previous epoch's mean of a loss (METHOD 2.5)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class RunningLossSchedule(nn.Module):
    """Keeps the running mean of a loss over the current epoch and the previous epoch's mean.

    ``update`` accumulates finite values (without a host sync), ``end_epoch`` moves the current mean into
    ``previous_mean`` (floored at 1e-6). Before the first ``end_epoch`` the previous mean is 1e6, as in the
    authors' code. Both live in buffers, so they are saved in checkpoints and restored on resume.
    """

    def __init__(self, initial: float = 1e6, floor: float = 1e-6):
        super().__init__()
        self.floor = floor
        self.register_buffer("previous_mean", torch.tensor(float(initial), dtype=torch.float64))
        self.register_buffer("running_sum", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("running_count", torch.tensor(0, dtype=torch.long))

    @torch.no_grad()
    def update(self, value) -> None:
        value = torch.as_tensor(value).detach().to(self.running_sum.device, torch.float64)
        # a NaN/inf loss of a skipped step must not poison the epoch mean (and with it every later epoch)
        finite = torch.isfinite(value)
        self.running_sum += torch.where(finite, value, torch.zeros_like(value))
        self.running_count += finite.long()

    @torch.no_grad()
    def end_epoch(self) -> None:
        if int(self.running_count) > 0:
            self.previous_mean.copy_((self.running_sum / self.running_count).clamp_min(self.floor))
        self.running_sum.zero_()
        self.running_count.zero_()


class HardnessSchedule(RunningLossSchedule):
    r"""Hardness factor :math:`\gamma = \exp(-\alpha / \bar J_m)`: smaller metric loss, harder negatives."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def factor(self) -> Tensor:
        return torch.exp(-self.alpha / self.previous_mean).float()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class SyntheticWeightSchedule(RunningLossSchedule):
    r"""Weight of the synthetic loss :math:`w = 1 - \exp(-\beta / \bar J_{gen})`: a better generator gets
    more weight."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def factor(self) -> Tensor:
        return (1 - torch.exp(-self.beta / self.previous_mean)).float()

    def extra_repr(self) -> str:
        return f"beta={self.beta}"
