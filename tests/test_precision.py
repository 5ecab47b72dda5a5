"""Method and baseline compute their losses in one precision (float32), whatever the ambient autocast."""
import pytest
import torch

import gca
from gca.baselines import HDMLInterpolation
from gca.losses import NPairLoss


def _batch(b=24, d=16, classes=8):
    torch.manual_seed(0)
    return torch.randn(b, d), torch.arange(classes).repeat(b // classes)


@pytest.mark.parametrize("generator", ["gca", "hdml"])
def test_metric_loss_under_bf16_autocast_equals_the_baselines_fp32_loss(generator):
    z, y = _batch()
    loss = NPairLoss()
    model = gca.GCAHNG(16, 8, num_layers=1, dropout=0.0, metric_loss=loss) if generator == "gca" \
        else HDMLInterpolation(metric_loss=loss)
    baseline = loss(z, y)                          # the baseline's J_m: fp32, outside autocast (gca.train.step)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts = model.metric_losses(z, y, generator=torch.Generator().manual_seed(0))
        in_bf16 = loss(z, y)                       # what the old step computed for J_m under autocast
    assert in_bf16.dtype == torch.bfloat16 or not torch.equal(in_bf16.float(), baseline)
    assert parts["metric"].dtype == parts["synthetic"].dtype == parts["total"].dtype == torch.float32
    assert torch.equal(parts["metric"], baseline)  # bit for bit: same inputs, same precision
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        reference = model.metric_losses(z, y, generator=torch.Generator().manual_seed(0))
    if generator == "hdml":                        # no GNN: the whole phase-A loss is identical
        assert torch.equal(parts["total"], reference["total"])
    else:                                          # only the GNN (lambda) ran in bf16
        assert torch.equal(parts["metric"], reference["metric"])


def test_generator_and_classifier_losses_are_float32_under_autocast():
    z, y = _batch()
    model = gca.GCAHNG(16, 8, num_layers=1, dropout=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(z, y)
        gen = model.generator_losses(z, y)
        cls = model.classifier_loss(z, y)
    assert out.lam.dtype == out.node_logits.dtype == out.synthetics.embeddings.dtype == torch.float32
    assert all(v.dtype == torch.float32 for k, v in gen.items() if k != "num_synthetics")
    assert cls.dtype == torch.float32
    assert torch.equal(cls, model.classifier_loss(z, y))     # the classifier does not touch the GNN
