"""Which losses are proxy losses: declared by the loss or by the table of pytorch-metric-learning's, not guessed."""
import pytest
import torch
from pytorch_metric_learning import losses as pml
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.losses.mixins import WeightRegularizerMixin

import gca
from gca.losses import NPairLoss, is_proxy_loss, synthetic_mode_for
from gca.losses.compat import PROXY_LOSS_ATTR


@pytest.mark.parametrize("loss, expected", [
    (pml.ProxyAnchorLoss(4, 8), True), (pml.ArcFaceLoss(4, 8), True), (pml.SoftTripleLoss(4, 8), True),
    (pml.P2SGradLoss(8, 4), True),              # class weights named `weight`: a hasattr guess missed it
    (pml.MultiSimilarityLoss(), False), (pml.NTXentLoss(), False), (pml.FastAPLoss(), False),
    (NPairLoss(), False),
], ids=lambda v: type(v).__name__ if not isinstance(v, bool) else str(v))
def test_pytorch_metric_learning_and_gca_losses(loss, expected):
    assert is_proxy_loss(loss) is expected


def test_subclasses_inherit_their_row_and_can_override_it():
    class MyProxyAnchor(pml.ProxyAnchorLoss):
        pass

    class MyNPair(NPairLoss):
        is_proxy_loss = True

    assert is_proxy_loss(MyProxyAnchor(4, 8)) and is_proxy_loss(MyNPair())


def test_a_newer_pytorch_metric_learning_proxy_loss_is_known_by_its_weight_mixin():
    class NewProxyLoss(WeightRegularizerMixin, BaseMetricLossFunction):
        pass

    assert is_proxy_loss(NewProxyLoss())


def test_user_losses_declare_it_and_are_never_guessed():
    class UndeclaredProxyLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proxies = torch.nn.Parameter(torch.randn(4, 8))

        def forward(self, embeddings, labels):
            return -(embeddings @ self.proxies.T).log_softmax(1)[torch.arange(len(labels)), labels].mean()

    class DeclaredProxyLoss(UndeclaredProxyLoss):
        is_proxy_loss = True

    assert PROXY_LOSS_ATTR == "is_proxy_loss"
    assert not is_proxy_loss(UndeclaredProxyLoss())
    declared = DeclaredProxyLoss()
    assert is_proxy_loss(declared) and synthetic_mode_for(declared) == "embeddings"
    model = gca.GCAHNG(8, 4, num_layers=1, metric_loss=declared)
    assert model.synthetic_gradient == "negatives"
    z, y = torch.randn(12, 8), torch.arange(12) % 4
    assert torch.isfinite(model.metric_losses(z, y)["total"])

    def fn(embeddings, labels):
        return embeddings.sum() * 0.0
    fn.is_proxy_loss = True                     # a plain callable declares it the same way
    assert is_proxy_loss(fn) and not is_proxy_loss(lambda e, lab: e.sum())
