"""The Objective protocol: the baseline, HDML and GCA-HNG are interchangeable for the training step."""
import pytest
import torch

import gca
from gca.baselines import HDMLInterpolation
from gca.losses import NPairLoss
from gca.objective import MetricLossObjective, Objective
from gca.train.step import Optimisers, train_step


def test_every_method_is_an_objective():
    loss = NPairLoss()
    objectives = [MetricLossObjective(loss), HDMLInterpolation(metric_loss=loss), gca.GCAHNG(16, 8, metric_loss=loss)]
    assert all(isinstance(o, Objective) for o in objectives)
    assert [o.trains_generator for o in objectives] == [False, False, True]
    for o in objectives[:2]:
        assert list(o.generator_parameters()) == [] and list(o.classifier_parameters()) == []
        with pytest.raises(RuntimeError, match="trains_generator is False"):
            o.generator_losses(torch.randn(8, 16), torch.arange(4).repeat(2))
    assert set(objectives[2].schedule_factors()) == {"gamma", "synthetic_weight"}
    assert objectives[0].schedule_factors() == {}


def test_baseline_objective_is_the_metric_loss_in_float32():
    torch.manual_seed(0)
    z, y = torch.randn(12, 16), torch.arange(4).repeat(3)
    loss = NPairLoss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts = MetricLossObjective(loss).metric_losses(z, y)
    assert parts["total"].dtype == torch.float32 and torch.equal(parts["total"], loss(z, y))


def test_train_step_refuses_a_generator_objective_without_its_optimisers():
    net = torch.nn.Linear(4, 16)
    objective = gca.GCAHNG(16, 4, num_layers=1)
    with pytest.raises(ValueError, match="GCAHNG trains a generator: train_step needs optimisers.generator"):
        train_step(net, objective, torch.randn(8, 4), torch.arange(4).repeat(2),
                   Optimisers(torch.optim.SGD(net.parameters(), lr=0.1)))
