"""One training iteration: the three phases of METHOD 2.6, or the metric loss alone for the baseline.

Phase A  embedding network (+ GNN through J_gce): ``J_m + w_syn J_syn + J_gce``, value-clipped, two steps.
Phase B  classifier on detached embeddings.
Phase C  generator: a second GNN pass from detached embeddings, ``J_gen``, one more GNN step.

A phase whose loss is NaN or infinite raises :class:`NonFiniteLossError` before its backward pass: that
phase and the ones after it change no parameter (the trainer's ``solver.nonfinite`` decides what follows).
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor
from torch.nn.utils import clip_grad_value_


class NonFiniteLossError(FloatingPointError):
    """A phase's loss is NaN or infinite; raised before its backward pass, so that phase updates nothing."""


def _check_finite(loss: Tensor, phase: str, step: int, logs: Dict[str, float]) -> None:
    if not torch.isfinite(loss):
        parts = ", ".join(f"{k}={v:.4g}" for k, v in logs.items())
        raise NonFiniteLossError(f"non-finite {phase} loss at step {step + 1} ({parts})")


def _clip(params, value) -> None:
    if value is not None:
        clip_grad_value_([p for p in params if p.grad is not None], value)


def _metric_params(trainer):
    for group in trainer.opt_metric.param_groups:
        yield from group["params"]


def train_step(trainer, images: Tensor, labels: Tensor) -> Dict[str, float]:
    """Run one iteration on ``trainer``'s models and optimisers; returns the losses as floats."""
    clip = trainer.cfg.solver.grad_clip_value
    gen = trainer.generator
    trainer.opt_metric.zero_grad(set_to_none=True)
    if trainer.opt_gnn is not None:
        trainer.opt_gnn.zero_grad(set_to_none=True)
    with trainer._autocast():
        z = trainer.model(images)
    # the backbone (and the GNN, inside metric_losses) run under autocast; every loss is computed in float32,
    # for the baseline here and for GCA-HNG/HDML inside their modules, so the two compare in one precision
    z = z.float()
    logs: Dict[str, float] = {}

    # phase A
    if gen is None:
        loss = trainer.metric_loss(z, labels)
        logs["metric"] = loss.item()
    else:
        with trainer._autocast():
            parts = gen.metric_losses(z, labels)
        loss = parts["total"]
        logs.update({k: float(v.detach()) for k, v in parts.items() if k != "total"})
    logs["total"] = loss.item()
    _check_finite(loss, "metric (phase A)", trainer.step, logs)
    loss.backward()
    _clip(_metric_params(trainer), clip)
    trainer.opt_metric.step()
    if trainer.opt_gnn is None:
        return logs
    _clip(gen.generator_parameters(), clip)
    trainer.opt_gnn.step()

    # phase B
    trainer.opt_cls.zero_grad(set_to_none=True)
    cls_loss = gen.classifier_loss(z, labels)
    _check_finite(cls_loss, "classifier (phase B)", trainer.step, {"classifier": cls_loss.item()})
    cls_loss.backward()
    trainer.opt_cls.step()
    logs["classifier"] = cls_loss.item()

    # phase C
    trainer.opt_gnn.zero_grad(set_to_none=True)
    with trainer._autocast():
        g = gen.generator_losses(z, labels)
    _check_finite(g["total"], "generator (phase C)", trainer.step, {"generator": g["total"].item()})
    g["total"].backward()
    _clip(gen.generator_parameters(), clip)
    trainer.opt_gnn.step()
    logs.update({"generator": g["total"].item(), "gen_label": g["label"].item(), "gen_hardness": g["hardness"].item(),
                 "gen_diversity": g["diversity"].item()})
    logs.update({k: float(v) for k, v in g.items() if k.startswith("diag_")})
    return logs
