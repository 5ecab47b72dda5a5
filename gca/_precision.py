"""Losses in float32 whatever the ambient autocast, so that a method and its baseline compare in one precision."""
from __future__ import annotations

import torch


def full_precision(device: torch.device):
    """A context in which autocast is off on ``device``: what runs inside computes in its inputs' dtype."""
    return torch.autocast(device_type=torch.device(device).type, enabled=False)
