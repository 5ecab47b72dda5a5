"""Backbone warm-up and the learning-rate schedules, observed at every optimiser step of a real ``fit``."""
import functools
import math

import pytest
import torch

from gca.testing.runs import tiny_run_overrides
from gca.train import Trainer, load_config


def _trainer(tmp_path, *extra, name="run"):
    cfg = load_config(None, tiny_run_overrides(tmp_path, "device=cpu", f"name={name}", *extra))
    return Trainer(cfg, progress=False)


def _wrap_step(trainer, opt_name, record):
    """Record ``(record(trainer) before, record(trainer) after)`` around every ``step`` of ``trainer.<opt_name>``."""
    opt = getattr(trainer, opt_name)
    original = opt.step
    calls = []

    @functools.wraps(original)          # keeps the LR scheduler's mark on the wrapped step
    def step(*args, **kwargs):
        before = record(trainer)
        out = original(*args, **kwargs)
        calls.append((before, record(trainer)))
        return out
    opt.step = step
    return calls


@pytest.mark.parametrize("warmup", [0, 2])
def test_backbone_is_frozen_exactly_during_the_warmup_epochs(tmp_path, warmup):
    trainer = _trainer(tmp_path, f"solver.warmup_epochs={warmup}", "solver.epochs=3", "solver.steps_per_epoch=2",
                       "gca.enabled=false")
    backbone, head = trainer.model.backbone_parameters(), trainer.model.head_parameters()
    assert backbone and head

    def state(t):
        return {"epoch": t.epoch, "trainable": [p.requires_grad for p in backbone],
                "backbone": [p.detach().clone() for p in backbone], "head": [p.detach().clone() for p in head]}
    calls = _wrap_step(trainer, "opt_metric", state)
    trainer.fit()
    assert [before["epoch"] for before, _ in calls] == [0, 0, 1, 1, 2, 2]
    for before, after in calls:
        frozen = before["epoch"] < warmup
        assert all(t is not frozen for t in before["trainable"])
        backbone_moved = [not torch.equal(a, b) for a, b in zip(before["backbone"], after["backbone"])]
        assert not any(backbone_moved) if frozen else all(backbone_moved)
        assert all(not torch.equal(a, b) for a, b in zip(before["head"], after["head"]))    # the head always trains


def test_learning_rates_follow_step_decay_cosine_and_group_ratios(tmp_path):
    lr, gnn_lr, epochs, every, gamma = 1e-3, 2e-3, 5, 2, 0.5
    trainer = _trainer(tmp_path, "loss.metric=proxy_anchor", f"solver.lr={lr}", "solver.head_lr_ratio=3",
                       "loss.proxy_lr_ratio=10", f"solver.lr_decay_epochs={every}", f"solver.lr_decay_gamma={gamma}",
                       f"solver.gnn_lr={gnn_lr}", f"solver.epochs={epochs}", "solver.steps_per_epoch=1")

    def metric_lrs(t):
        return t.epoch, {g["name"]: g["lr"] for g in t.opt_metric.param_groups}

    def gnn_lr_now(t):
        return t.epoch, t.opt_gnn.param_groups[0]["lr"]
    metric_calls = _wrap_step(trainer, "opt_metric", metric_lrs)
    gnn_calls = _wrap_step(trainer, "opt_gnn", gnn_lr_now)
    trainer.fit()
    assert [before[0] for before, _ in metric_calls] == list(range(epochs))
    for (epoch, lrs), _ in metric_calls:
        decay = gamma ** (epoch // every)                         # StepLR, stepped at every epoch end
        assert lrs == pytest.approx({"head": 3 * lr * decay, "backbone": lr * decay, "loss": 10 * lr * decay},
                                    rel=1e-9)
    # the GNN steps twice per iteration, both times at the cosine-annealed rate of the epoch
    assert [before[0] for before, _ in gnn_calls] == [e for e in range(epochs) for _ in range(2)]
    for (epoch, rate), _ in gnn_calls:
        assert rate == pytest.approx(gnn_lr * (1 + math.cos(math.pi * epoch / epochs)) / 2, rel=1e-9)
    # after the last epoch end the schedules have moved once per epoch
    assert trainer.sched_metric.last_epoch == epochs and trainer.sched_gnn.last_epoch == epochs
    assert trainer.opt_gnn.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
