"""Epoch-level schedules from HDML, driven by the previous epoch's mean of a loss (METHOD 2.5)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

SCHEDULE_SCALES = ("absolute", "first_epoch")


class RunningLossSchedule(nn.Module):
    """Keeps the running mean of a loss over the current epoch and the previous epoch's mean.

    ``update`` accumulates finite values (without a host sync), ``end_epoch`` moves the current mean into
    ``previous_mean`` (floored at 1e-6). Before the first ``end_epoch`` the previous mean is 1e6, as in the
    authors' code. Both live in buffers, so they are saved in checkpoints and restored on resume.
    """

    def __init__(self, initial: float = 1e6, floor: float = 1e-6, scale: str = "absolute"):
        super().__init__()
        if scale not in SCHEDULE_SCALES:
            raise ValueError(f"schedule scale must be one of {SCHEDULE_SCALES}, got {scale!r}")
        self.floor, self.scale = floor, scale
        self.register_buffer("previous_mean", torch.tensor(float(initial), dtype=torch.float64))
        # the first epoch's mean (NaN until the first end_epoch): the unit of the loss for scale="first_epoch"
        self.register_buffer("reference_mean", torch.tensor(float("nan"), dtype=torch.float64))
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
            if torch.isnan(self.reference_mean):
                self.reference_mean.copy_(self.previous_mean)
        self.running_sum.zero_()
        self.running_count.zero_()

    def loss_in_units(self) -> Tensor:
        """The previous epoch's mean in the schedule's unit: as it is (``"absolute"``, the authors'), or
        divided by the first epoch's mean (``"first_epoch"``: 1 after the first epoch, whatever the loss's
        scale). Before the first epoch ends it is the initial value (1e6), as in the authors' code."""
        if self.scale == "absolute" or torch.isnan(self.reference_mean):
            return self.previous_mean
        return self.previous_mean / self.reference_mean

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before reference_mean existed resume with it unset
        state_dict.setdefault(prefix + "reference_mean", torch.tensor(float("nan"), dtype=torch.float64))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class HardnessSchedule(RunningLossSchedule):
    r"""Hardness factor :math:`\gamma = \exp(-\alpha / \bar J_m)`: smaller metric loss, harder negatives.

    With ``scale="first_epoch"``, :math:`\bar J_m` is measured in units of the first epoch's mean, so
    :math:`\gamma = e^{-\alpha}` after the first epoch and falls as the loss falls relative to where it
    started, for any metric loss; ``"absolute"`` is the authors' form, calibrated for their N-pair loss.
    """

    def __init__(self, alpha: float, scale: str = "absolute"):
        super().__init__(scale=scale)
        self.alpha = alpha

    def factor(self) -> Tensor:
        return torch.exp(-self.alpha / self.loss_in_units()).float()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, scale={self.scale!r}"


class SyntheticWeightSchedule(RunningLossSchedule):
    r"""Weight of the synthetic loss :math:`w = 1 - \exp(-\beta / \bar J_{gen})`: a better generator gets
    more weight (``scale`` as in :class:`HardnessSchedule`: ``w = 1 - e^{-\beta}`` after the first epoch)."""

    def __init__(self, beta: float, scale: str = "absolute"):
        super().__init__(scale=scale)
        self.beta = beta

    def factor(self) -> Tensor:
        return (1 - torch.exp(-self.beta / self.loss_in_units())).float()

    def extra_repr(self) -> str:
        return f"beta={self.beta}, scale={self.scale!r}"
