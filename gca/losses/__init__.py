"""Losses of GCA-HNG: metric side (N-pair, synthetic) and generator side (label, hardness, diversity)."""
from gca.losses.compat import (
    check_metric_loss,
    is_proxy_loss,
    resolve_synthetic_gradient,
    synthetic_loss_terms,
    synthetic_mode_for,
)
from gca.losses.generator import diversity_loss, hardness_loss, label_preservation_loss
from gca.losses.npair import NPairLoss
from gca.losses.registry import METRIC_LOSSES, create_metric_loss, list_metric_losses, register_metric_loss
from gca.losses.synthetic import anchor_proxy_loss, synthetic_indices, synthetic_metric_loss

__all__ = ["NPairLoss", "METRIC_LOSSES", "create_metric_loss", "list_metric_losses", "register_metric_loss",
           "synthetic_metric_loss", "synthetic_indices", "is_proxy_loss", "check_metric_loss", "synthetic_mode_for",
           "synthetic_loss_terms",
           "label_preservation_loss", "hardness_loss", "diversity_loss",
           "anchor_proxy_loss", "resolve_synthetic_gradient"]
