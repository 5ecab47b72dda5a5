"""The hardness and synthetic-weight schedules: the authors' absolute form and the scale-free one."""
import math

import pytest
import torch

import gca
from gca.losses import NPairLoss
from gca.schedules import HardnessSchedule, SyntheticWeightSchedule


def _run(schedule, epoch_losses):
    factors = [float(schedule.factor())]
    for losses in epoch_losses:
        for value in losses:
            schedule.update(torch.tensor(value))
        schedule.end_epoch()
        factors.append(float(schedule.factor()))
    return factors


@pytest.mark.parametrize("cls, closed_form", [
    (HardnessSchedule, lambda a, ratio: math.exp(-a / ratio)),
    (SyntheticWeightSchedule, lambda b, ratio: 1 - math.exp(-b / ratio)),
])
def test_first_epoch_scale_is_independent_of_the_losss_scale(cls, closed_form):
    epochs = [[3.0, 5.0], [2.0, 2.0], [1.0, 1.5]]               # epoch means 4, 2, 1.25
    by_scale = {}
    for loss_scale in (1.0, 0.01, 250.0):
        scaled = [[v * loss_scale for v in e] for e in epochs]
        by_scale[loss_scale] = _run(cls(1.5, scale="first_epoch"), scaled)
        absolute = _run(cls(1.5, scale="absolute"), scaled)
        assert absolute[1] == pytest.approx(closed_form(1.5, 4.0 * loss_scale), rel=1e-5)
    # the same factors whatever unit the loss comes in, and the closed form in units of the first epoch
    assert by_scale[1.0] == pytest.approx(by_scale[0.01], rel=1e-5) == by_scale[250.0]
    assert by_scale[1.0][1:] == pytest.approx([closed_form(1.5, r) for r in (1.0, 0.5, 1.25 / 4)], rel=1e-5)
    # before the first epoch ends both forms start where the authors' code does (1e6 as the loss)
    assert by_scale[1.0][0] == pytest.approx(closed_form(1.5, 1e6), rel=1e-5)


def test_a_nonfinite_loss_does_not_enter_the_mean():
    schedule = HardnessSchedule(4.0)
    for value in (2.0, float("nan"), 4.0, float("inf")):
        schedule.update(torch.tensor(value))
    schedule.end_epoch()
    assert float(schedule.previous_mean) == 3.0


def test_model_schedules_follow_the_scale_and_survive_a_state_dict_round_trip():
    torch.manual_seed(0)
    z, y = torch.randn(24, 16), torch.arange(8).repeat(3)
    gammas = {}
    for scale in ("absolute", "first_epoch"):
        for loss_scale in (1.0, 10.0):
            model = gca.GCAHNG(16, 8, num_layers=1, schedule_scale=scale,
                               metric_loss=lambda e, lab, *a, s=loss_scale, **k: s * NPairLoss()(e, lab, *a, **k))
            model.metric_losses(z, y)
            model.end_epoch()
            gammas[scale, loss_scale] = float(model.hardness.factor())
            copy = gca.GCAHNG(16, 8, num_layers=1, schedule_scale=scale)
            copy.load_state_dict(model.state_dict())
            assert float(copy.hardness.factor()) == gammas[scale, loss_scale]
    assert gammas["first_epoch", 1.0] == pytest.approx(math.exp(-4.0)) == gammas["first_epoch", 10.0]
    assert gammas["absolute", 10.0] > gammas["absolute", 1.0]      # the authors' form moves with the scale
    with pytest.raises(ValueError, match="schedule scale must be one of"):
        gca.GCAHNG(16, 8, schedule_scale="relative")


def test_schedules_follow_previous_epoch_mean_and_survive_state_dict():
    h, w = HardnessSchedule(alpha=4.0), SyntheticWeightSchedule(beta=30.0)
    assert h.factor().item() == pytest.approx(math.exp(-4e-6))       # J = 1e6 before the first epoch ends
    assert w.factor().item() == pytest.approx(1 - math.exp(-3e-5), rel=1e-4)
    for v in (1.0, 3.0):
        h.update(torch.tensor(v))
        w.update(v)
    assert h.factor().item() == pytest.approx(math.exp(-4e-6))       # unchanged until the epoch ends
    h.end_epoch()
    w.end_epoch()
    assert h.factor().item() == pytest.approx(math.exp(-2.0))
    assert w.factor().item() == pytest.approx(1 - math.exp(-15.0))
    restored = HardnessSchedule(alpha=4.0)
    restored.load_state_dict(h.state_dict())
    assert restored.factor().item() == pytest.approx(math.exp(-2.0))
