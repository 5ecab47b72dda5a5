"""The seam between a hard-negative method and the trainer: the :class:`Objective` protocol.

An objective owns a metric loss and everything a method adds to it (a generator's losses, a classifier,
epoch schedules) and hands the trainer the losses of the three phases of METHOD 2.6. Three objectives ship:
:class:`MetricLossObjective` (the baseline: the metric loss alone), :class:`gca.baselines.HDMLInterpolation`
(HDML's scalar interpolation: synthetics, no learned generator) and :class:`gca.GCAHNG`. The trainer and
:func:`gca.train.step.train_step` use nothing else.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from gca._precision import full_precision


@runtime_checkable
class Objective(Protocol):
    """What a training step needs of a method.

    Attributes:
        metric_loss: the base metric loss (its parameters, Proxy-Anchor's proxies for example, train with the
            embedding network).
        trains_generator: whether phases B and C exist (a learned generator and its classifier).
    """

    metric_loss: Callable
    trains_generator: bool

    def metric_losses(self, embeddings: Tensor, labels: Tensor,
                      generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Phase A: a dict with ``total`` (what the embedding network minimises) and parts to log."""

    def classifier_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Phase B (only when ``trains_generator``)."""

    def generator_losses(self, embeddings: Tensor, labels: Tensor,
                         generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Phase C (only when ``trains_generator``): a dict with ``total``."""

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """What phase A's node loss and phase C train (empty without a learned generator)."""

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """What phase B trains (empty without a learned generator)."""

    def schedule_factors(self) -> Dict[str, float]:
        """The epoch-level factors now in use (``gamma``, ``synthetic_weight``), for the logs."""

    def end_epoch(self) -> None:
        """Move the epoch-level schedules on."""

    def end_step(self, embeddings: Tensor, labels: Tensor) -> None:
        """After every training step, with the step's batch (detached): a cross-batch memory is refreshed
        here (:mod:`gca.memory`); nothing for most methods."""


class WithoutGenerator:
    """The parts of :class:`Objective` for a method with no learned generator (no phases B and C)."""

    trains_generator = False

    def classifier_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        raise RuntimeError(f"{type(self).__name__} has no classifier (trains_generator is False)")

    def generator_losses(self, embeddings: Tensor, labels: Tensor,
                         generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        raise RuntimeError(f"{type(self).__name__} has no generator to train (trains_generator is False)")

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def end_step(self, embeddings: Tensor, labels: Tensor) -> None:
        pass


class MetricLossObjective(WithoutGenerator, nn.Module):
    """The baseline: the metric loss alone, in float32 whatever the ambient autocast.

    Args:
        metric_loss: any loss called as ``loss(embeddings, labels)``.
    """

    def __init__(self, metric_loss: Callable):
        super().__init__()
        self.metric_loss = metric_loss

    def metric_losses(self, embeddings: Tensor, labels: Tensor,
                      generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        with full_precision(embeddings.device):
            j_m = self.metric_loss(embeddings.float(), labels)
        return {"total": j_m, "metric": j_m}

    def schedule_factors(self) -> Dict[str, float]:
        return {}

    def end_epoch(self) -> None:
        pass
