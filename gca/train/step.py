"""One training iteration: the three phases of METHOD 2.6, for any :class:`gca.objective.Objective`.

Phase A  embedding network (+ the generator through its node loss): ``objective.metric_losses``, value-clipped;
         the metric optimiser steps, then (with a learned generator) the generator optimiser.
Phase B  the classifier on detached embeddings (``objective.classifier_loss``).
Phase C  the generator: ``objective.generator_losses`` (a second pass from detached embeddings), one more
         generator step.

The baseline (:class:`gca.objective.MetricLossObjective`) and HDML's interpolation have no phases B and C.

The fused step (``fused=True``, objectives with ``fused_losses`` such as :class:`gca.GCAHNG`) builds and
propagates the batch graph once instead of twice and backpropagates phases A and C in one sweep (about half
of the generator's FLOPs). It differs from the two-pass step, on purpose, in four ways:

1. the GNN takes one optimiser step per iteration, on the sum of the J_gce and J_gen gradients (clipped
   together), where the authors take two sequential steps;
2. J_gce trains the GNN but not the embedding network (the propagation runs from ``sg(z)``, see
   :meth:`gca.GCAHNG.fused_losses`);
3. phase C's channel weights come from the GNN before this iteration's J_gce step, not after it;
4. one dropout mask and one graph serve both phases.

Phase B (the classifier on ``sg(z)``) runs first in the fused step; it reads only detached embeddings, so
phase C still sees the classifier after its step, as in the two-pass order (and a non-finite phase A or C
loss leaves that classifier step done).
A phase whose loss is NaN or infinite raises :class:`NonFiniteLossError` before its backward pass: that
phase and the ones after it change no parameter (the trainer's ``solver.nonfinite`` decides what follows).
Like timm's ``train_one_epoch``, the step takes every model, optimiser and the autocast context as arguments.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, Iterable, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils import clip_grad_value_
from torch.optim import Optimizer

from gca.objective import Objective

#: the two ways :func:`train_step` trains a generator (config key ``gca.step``)
GENERATOR_STEPS = ("two_pass", "fused")


class NonFiniteLossError(FloatingPointError):
    """A phase's loss is NaN or infinite; raised before its backward pass, so that phase updates nothing."""


@dataclass
class Optimisers:
    """The optimisers of one step.

    Attributes:
        metric: the embedding network's, with the metric loss's parameters (proxies).
        generator: the generator's (GNN and heads; the authors' ``opt_gnn``), when the objective trains one.
        classifier: the label-preservation classifier's (the authors' ``opt_s``), likewise.
    """

    metric: Optimizer
    generator: Optional[Optimizer] = None
    classifier: Optional[Optimizer] = None


def _check_finite(loss: Tensor, phase: str, step: int, logs: Dict[str, float]) -> None:
    if not torch.isfinite(loss):
        parts = ", ".join(f"{k}={v:.4g}" for k, v in logs.items())
        raise NonFiniteLossError(f"non-finite {phase} loss at step {step + 1} ({parts})")


def _clip(params: Iterable[nn.Parameter], value: Optional[float]) -> None:
    if value is not None:
        clip_grad_value_([p for p in params if p.grad is not None], value)


def _params(optimiser: Optimizer):
    for group in optimiser.param_groups:
        yield from group["params"]


def train_step(model: nn.Module, objective: Objective, images: Tensor, labels: Tensor, optimisers: Optimisers, *,
               amp_autocast: Callable[[], ContextManager] = contextlib.nullcontext,
               clip_value: Optional[float] = None, step: int = 0, fused: bool = False) -> Dict[str, float]:
    """Run one iteration; returns the losses (and the generator's diagnostics) as floats.

    Args:
        model: the embedding network (images -> embeddings).
        objective: the method (:class:`gca.objective.Objective`).
        images, labels: the batch, on the model's device.
        optimisers: see :class:`Optimisers`; ``generator`` and ``classifier`` are needed exactly when
            ``objective.trains_generator``.
        amp_autocast: a factory of the autocast context for the forward passes (``contextlib.nullcontext``
            for full precision); every loss is computed in float32 either way.
        clip_value: gradient value clipping of each optimiser's parameters (``None``: none).
        step: the step's index, for error messages.
        fused: one propagation and one backward sweep for phases A and C (see the module's docstring);
            needs an objective with ``fused_losses``.
    """
    trains_generator = objective.trains_generator
    if trains_generator and (optimisers.generator is None or optimisers.classifier is None):
        raise ValueError(f"{type(objective).__name__} trains a generator: train_step needs "
                         f"optimisers.generator and optimisers.classifier")
    if fused and not (trains_generator and hasattr(objective, "fused_losses")):
        raise ValueError(f"the fused step needs an objective that trains a generator and has fused_losses; "
                         f"{type(objective).__name__} has not")
    optimisers.metric.zero_grad(set_to_none=True)
    if trains_generator:
        optimisers.generator.zero_grad(set_to_none=True)
    with amp_autocast():
        z = model(images)
    z = z.float()
    logs: Dict[str, float] = {}
    if fused:
        _fused_step(objective, z, labels, optimisers, amp_autocast, clip_value, step, logs)
        objective.end_step(z.detach(), labels)
        return logs

    # phase A (the GNN runs under autocast inside the objective; its losses are float32)
    with amp_autocast():
        parts = objective.metric_losses(z, labels)
    loss = _metric_loss_checked(parts, step, logs)
    loss.backward()
    _clip(_params(optimisers.metric), clip_value)
    optimisers.metric.step()
    if not trains_generator:
        objective.end_step(z.detach(), labels)
        return logs
    _reduce_generator_gradients(objective)
    _clip(_params(optimisers.generator), clip_value)
    optimisers.generator.step()

    # phase B
    _classifier_phase(objective, z, labels, optimisers, step, logs)

    # phase C
    optimisers.generator.zero_grad(set_to_none=True)
    with amp_autocast():
        g = objective.generator_losses(z, labels)
    _check_finite(g["total"], "generator (phase C)", step, {"generator": g["total"].item()})
    g["total"].backward()
    _reduce_generator_gradients(objective)
    _clip(_params(optimisers.generator), clip_value)
    optimisers.generator.step()
    logs.update(_generator_logs(g))
    objective.end_step(z.detach(), labels)
    return logs


def _reduce_generator_gradients(objective) -> None:
    # an objective whose generator's work is split over processes averages its gradients here (before clipping)
    reduce = getattr(objective, "reduce_generator_gradients", None)
    if reduce is not None:
        reduce()


def _metric_loss_checked(parts: Dict[str, Tensor], step: int, logs: Dict[str, float]) -> Tensor:
    """Phase A's total loss, its parts logged, checked to be finite before any backward pass."""
    loss = parts["total"]
    logs.update({k: float(v.detach()) for k, v in parts.items() if k != "total"})
    logs["total"] = loss.item()
    _check_finite(loss, "metric (phase A)", step, logs)
    return loss


def _generator_logs(g: Dict[str, Tensor]) -> Dict[str, float]:
    logs = {"generator": g["total"].item(), "gen_label": g["label"].item(), "gen_hardness": g["hardness"].item(),
            "gen_diversity": g["diversity"].item()}
    logs.update({k: float(v) for k, v in g.items() if k.startswith("diag_")})
    return logs


def _classifier_phase(objective: Objective, z: Tensor, labels: Tensor, optimisers: Optimisers, step: int,
                      logs: Dict[str, float]) -> None:
    optimisers.classifier.zero_grad(set_to_none=True)
    cls_loss = objective.classifier_loss(z, labels)
    _check_finite(cls_loss, "classifier (phase B)", step, {"classifier": cls_loss.item()})
    cls_loss.backward()
    optimisers.classifier.step()
    logs["classifier"] = cls_loss.item()


def _fused_step(objective, z: Tensor, labels: Tensor, optimisers: Optimisers, amp_autocast, clip_value, step: int,
                logs: Dict[str, float]) -> Dict[str, float]:
    _classifier_phase(objective, z, labels, optimisers, step, logs)
    with amp_autocast():
        parts, g = objective.fused_losses(z, labels)
    loss = _metric_loss_checked(parts, step, logs)
    _check_finite(g["total"], "generator (phase C)", step, {"generator": g["total"].item()})
    (loss + g["total"]).backward()
    _clip(_params(optimisers.metric), clip_value)
    optimisers.metric.step()
    _reduce_generator_gradients(objective)
    _clip(_params(optimisers.generator), clip_value)
    optimisers.generator.step()
    logs.update(_generator_logs(g))
    return logs
