"""Metric losses on the synthetic negatives: the per-anchor triplets and pytorch-metric-learning losses."""
import pytest
import torch
from pytorch_metric_learning.losses import MultiSimilarityLoss, ProxyAnchorLoss

import gca
from gca.losses import synthetic_indices, synthetic_metric_loss
from gca.synthesis import Synthetics


def test_synthetic_indices_tie_each_synthetic_to_its_anchor():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    s = Synthetics(torch.randn(4, 3), torch.tensor([1, 2, 0, 0]), torch.tensor([0, 1, 3, 4]))
    a, p, n = synthetic_indices(y, s)
    assert torch.all(y[a] == y[p]) and torch.all(a != p)
    assert torch.equal(s.anchor_index[n - 6], a)
    assert len(a) == 2 + 2 + 1 + 1          # anchors 0 and 1 have two positives, 3 and 4 one each


@pytest.mark.parametrize("loss_fn", [ProxyAnchorLoss(6, 16), MultiSimilarityLoss()], ids=["proxy_anchor", "ms"])
def test_pytorch_metric_learning_losses_plug_in(loss_fn):
    model = gca.GCAHNG(16, 6, num_layers=1, metric_loss=loss_fn)
    z = torch.randn(12, 16, requires_grad=True)
    y = torch.arange(12) % 6
    out = model.generate(z, y, detach_lambda=True)
    syn = synthetic_metric_loss(loss_fn, z, y, out.synthetics)
    assert torch.isfinite(syn)
    syn.backward()
    assert z.grad.abs().sum() > 0                 # through the synthetics into the embeddings
    model.metric_losses(z.detach().requires_grad_(), y)["total"].backward()
