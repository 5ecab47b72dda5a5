"""Local hard negative generation without a graph: HDML's scalar interpolation (Zheng et al., CVPR 2019).

The baseline GCA-HNG improves on: each synthetic negative interpolates one anchor with one negative
sample by one scalar, ``z + [d+ + (d- - d+) exp(-alpha / J_m)] / d- (z- - z)``, with no learned
correlation. It is an :class:`gca.objective.Objective` like :class:`gca.GCAHNG`, so the trainer swaps them;
it has no generator to train (``trains_generator`` is False: no phase B or C).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
from torch import Tensor, nn

from gca._checks import check_embeddings_and_labels
from gca._precision import full_precision
from gca.graph import full_edge_index
from gca.losses.compat import resolve_synthetic_gradient
from gca.losses.npair import NPairLoss
from gca.losses.synthetic import synthetic_metric_loss
from gca.objective import WithoutGenerator
from gca.schedules import HardnessSchedule
from gca.synthesis import Synthetics, synthesize_negatives


class HDMLInterpolation(WithoutGenerator, nn.Module):
    """Scalar hardness-aware interpolation of one anchor and one negative per negative class.

    Args:
        alpha: hardness schedule ``gamma = exp(-alpha / J_m)`` (previous epoch's mean metric loss).
        synthetic_weight: fixed weight of the synthetic loss (HDML's generator-driven weight needs a
            generator loss, which this baseline does not have).
        metric_loss: pytorch-metric-learning-style loss; default :class:`gca.losses.NPairLoss`.
        synthetic_loss_mode: see :func:`gca.losses.synthetic_metric_loss`.
        schedule_scale: see :class:`gca.schedules.HardnessSchedule`.
        synthetic_gradient: see :class:`gca.GCAHNG`.
    """

    def __init__(self, alpha: float = 4.0, synthetic_weight: float = 1.0, metric_loss: Optional[Callable] = None,
                 synthetic_loss_mode: str = "auto", schedule_scale: str = "absolute",
                 synthetic_gradient: str = "auto"):
        super().__init__()
        self.synthetic_weight_value = synthetic_weight
        self.metric_loss = metric_loss if metric_loss is not None else NPairLoss()
        self.synthetic_gradient = resolve_synthetic_gradient(self.metric_loss, synthetic_loss_mode, synthetic_gradient)
        self.synthetic_loss_mode = synthetic_loss_mode
        self.hardness = HardnessSchedule(alpha, scale=schedule_scale)

    def metric_loss_parameters(self):
        return self.metric_loss.parameters() if isinstance(self.metric_loss, nn.Module) else iter(())

    def synthesize(self, embeddings: Tensor, labels: Tensor,
                   generator: Optional[torch.Generator] = None) -> Synthetics:
        check_embeddings_and_labels(embeddings, labels, min_classes=2)
        edge_index = full_edge_index(embeddings.shape[0], self_loops=False, device=embeddings.device)
        gamma = self.hardness.factor().to(embeddings.device)
        return synthesize_negatives(embeddings, labels, edge_index, None, gamma, mixing="mean",
                                    negatives_per_class="one", generator=generator,
                                    anchor_gradient=self.synthetic_gradient == "full")

    def metric_losses(self, embeddings: Tensor, labels: Tensor,
                      generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        with full_precision(embeddings.device):       # the same precision as the baseline's loss
            z = embeddings.float()
            synthetics = self.synthesize(z, labels, generator)
            j_m = self.metric_loss(z, labels)
            j_syn = synthetic_metric_loss(self.metric_loss, z, labels, synthetics, self.synthetic_loss_mode)
        if self.training:
            self.hardness.update(j_m)
        weight = torch.tensor(self.synthetic_weight_value, device=embeddings.device)
        return {"total": j_m + weight * j_syn, "metric": j_m, "synthetic": j_syn, "synthetic_weight": weight,
                "gamma": self.hardness.factor()}

    def schedule_factors(self) -> Dict[str, float]:
        return {"gamma": float(self.hardness.factor()), "synthetic_weight": float(self.synthetic_weight_value)}

    def end_epoch(self) -> None:
        self.hardness.end_epoch()
