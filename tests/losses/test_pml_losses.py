"""Every loss class in ``pytorch_metric_learning.losses`` as GCA-HNG's ``metric_loss``: it trains and sees the
synthetic negatives, or construction refuses it naming the loss."""
from __future__ import annotations

import copy
import inspect

import pytest
import torch
from pytorch_metric_learning import losses as pml
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper

import gca
from gca.losses import synthetic_metric_loss, synthetic_mode_for
from gca.synthesis import Synthetics

D, C, M = 16, 4, 3          # embedding size, classes, samples per class (balanced, as SmoothAP would need)

PAIRS = ["AngularLoss", "CircleLoss", "ContrastiveLoss", "GeneralizedLiftedStructureLoss", "IntraPairVarianceLoss",
         "LiftedStructureLoss", "MarginLoss", "MultiSimilarityLoss", "NTXentLoss", "SignalToNoiseRatioContrastiveLoss",
         "SupConLoss", "TripletMarginLoss", "TupletMarginLoss", "CrossBatchMemory"]
EMBEDDINGS = ["ArcFaceLoss", "CosFaceLoss", "LargeMarginSoftmaxLoss", "NormalizedSoftmaxLoss", "P2SGradLoss",
              "ProxyAnchorLoss", "ProxyNCALoss", "SoftTripleLoss", "SphereFaceLoss", "SubCenterArcFaceLoss",
              "FastAPLoss", "HistogramLoss", "InstanceLoss", "PNPLoss", "RankedListLoss", "NCALoss",
              "ThresholdConsistentMarginLoss"]
REFUSED = ["NPairsLoss", "SmoothAPLoss", "DynamicSoftMarginLoss", "VICRegLoss", "ManifoldLoss", "SelfSupervisedLoss"]
BASES = ["BaseMetricLossFunction", "GenericPairLoss", "BaseLossWrapper"]
# the mode "auto" resolves to, "refused", or "base" (abstract, not a loss of its own)
EXPECTED = {**dict.fromkeys(PAIRS, "pairs"), **dict.fromkeys(EMBEDDINGS, "embeddings"), "MultipleLosses": "mixed",
            **dict.fromkeys(REFUSED, "refused"), **dict.fromkeys(BASES, "base")}

# constructor arguments by name, so a new release's loss with the usual arguments is built too
_ARGS = {"num_classes": C, "embedding_size": D, "descriptors_dim": D, "l": 3, "K": 5, "margin": 0.4, "Tn": 10}
_SPECIAL = {
    "CrossBatchMemory": lambda: pml.CrossBatchMemory(pml.ContrastiveLoss(), D, memory_size=64),
    "MultipleLosses": lambda: pml.MultipleLosses([pml.TripletMarginLoss(), pml.ProxyAnchorLoss(C, D)], weights=[1, .5]),
    "SelfSupervisedLoss": lambda: pml.SelfSupervisedLoss(pml.TripletMarginLoss()),
}


def _discovered():
    return sorted(n for n, c in vars(pml).items() if inspect.isclass(c) and issubclass(c, torch.nn.Module))


def _build(name):
    if name in _SPECIAL:
        return _SPECIAL[name]()
    cls = getattr(pml, name)
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):          # CosFace, SubCenterArcFace: (*args, **kwargs)
        return cls(num_classes=C, embedding_size=D)
    return cls(**{p.name: _ARGS[p.name] for p in params if p.default is p.empty and p.name in _ARGS})


def _batch():
    """Tight classes, so that synthetics as close as the positives violate every margin."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(C * M) % C
    return torch.randn(C, D, generator=g)[y] + 0.3 * torch.randn(C * M, D, generator=g), y


def _phase_a(model, z, y, previous_metric_mean):
    """J of a copy of ``model`` (loss state included) with the hardness factor set by the previous epoch's J_m."""
    model = copy.deepcopy(model)
    model.hardness.previous_mean.fill_(previous_metric_mean)
    return model.metric_losses(z, y, generator=torch.Generator().manual_seed(0))


def test_every_discovered_loss_has_an_expected_outcome():
    assert sorted(set(_discovered()) - set(EXPECTED)) == []
    assert sorted(set(EXPECTED) - set(_discovered())) == []


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")    # pytorch-metric-learning's own
@pytest.mark.parametrize("name", _discovered())
def test_pml_loss_trains_on_synthetics_or_is_refused(name):
    expected = EXPECTED.get(name)
    if expected is None:
        pytest.fail(f"{name} is new in pytorch-metric-learning: try it and add it to gca.losses.compat and EXPECTED")
    if expected == "base":
        assert any(issubclass(getattr(pml, other), getattr(pml, name)) for other in _discovered() if other != name)
        return
    loss = _build(name)
    if expected == "refused":
        with pytest.raises(ValueError, match=name):
            gca.GCAHNG(D, C, num_layers=1, metric_loss=loss)
        return
    assert synthetic_mode_for(loss) == expected
    if expected == "embeddings":
        with pytest.raises(ValueError, match=f"{name} cannot use synthetic_loss_mode='pairs'"):
            gca.GCAHNG(D, C, num_layers=1, metric_loss=loss, synthetic_loss_mode="pairs")
    model = gca.GCAHNG(D, C, num_layers=1, metric_loss=loss).eval()     # eval: no dropout, schedules untouched
    z, y = _batch()
    z.requires_grad_()
    hard, easy = _phase_a(model, z, y, 1e-3), _phase_a(model, z, y, 1e6)   # gamma ~ 0 vs ~ 1
    hard["total"].backward()
    assert torch.isfinite(hard["total"]) and z.grad.abs().sum() > 0
    # the same real batch, other synthetics: J_m is unchanged and J_syn is not
    assert torch.allclose(hard["metric"], easy["metric"])
    assert not torch.allclose(hard["synthetic"], easy["synthetic"])
    # and J_syn is differentiable in the (hard) synthetics themselves
    model.hardness.previous_mean.fill_(1e-3)
    syn = model.generate(z.detach(), y, generator=torch.Generator().manual_seed(0)).synthetics
    leaf = syn.embeddings.detach().requires_grad_()
    synthetic_metric_loss(model.metric_loss, z.detach(), y, Synthetics(leaf, syn.labels, syn.anchor_index)).backward()
    assert leaf.grad.abs().sum() > 0


def test_cross_batch_memory_sees_the_synthetics_through_its_inner_loss_and_enqueues_the_batch_once():
    xbm = _build("CrossBatchMemory")
    model = gca.GCAHNG(D, C, num_layers=1, metric_loss=xbm).eval()
    z, y = _batch()
    out = model.metric_losses(z, y, generator=torch.Generator().manual_seed(0))
    assert xbm.queue_idx == len(y)                                  # neither the batch again nor the synthetics
    syn = model.generate(z, y, generator=torch.Generator().manual_seed(0)).synthetics
    assert torch.allclose(out["synthetic"], synthetic_metric_loss(xbm.loss, z, y, syn))


def test_multiple_losses_weights_each_sub_loss_in_its_own_mode():
    multi = _build("MultipleLosses")
    triplet, proxy = multi.losses
    z, y = _batch()
    syn = gca.GCAHNG(D, C, num_layers=1).generate(z, y).synthetics
    expected = (synthetic_metric_loss(triplet, z, y, syn, "pairs")
                + 0.5 * synthetic_metric_loss(proxy, z, y, syn, "embeddings"))
    assert torch.allclose(synthetic_metric_loss(multi, z, y, syn), expected)
    with pytest.raises(ValueError, match="NPairsLoss"):
        gca.GCAHNG(D, C, metric_loss=pml.MultipleLosses([pml.TripletMarginLoss(), pml.NPairsLoss()]))


@pytest.mark.filterwarnings("ignore:DistributedLossWrapper is being used in a non-distributed setting")
def test_distributed_wrapper_takes_its_inner_loss_mode():
    z, y = _batch()
    syn = gca.GCAHNG(D, C, num_layers=1).generate(z, y).synthetics
    for inner, mode in ((pml.TripletMarginLoss(), "pairs"), (pml.ProxyAnchorLoss(C, D), "embeddings")):
        wrapped = DistributedLossWrapper(inner)
        assert synthetic_mode_for(wrapped) == mode
        assert torch.allclose(synthetic_metric_loss(wrapped, z, y, syn), synthetic_metric_loss(inner, z, y, syn))
    with pytest.raises(ValueError, match="NPairsLoss"):
        gca.GCAHNG(D, C, metric_loss=DistributedLossWrapper(pml.NPairsLoss()))


def test_user_callables_keep_pairs_mode():
    calls = []

    def my_loss(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None):
        calls.append(indices_tuple is not None and ref_emb is not None)
        return embeddings.sum() * 0.0 + (0.0 if ref_emb is None else ref_emb[len(labels):].pow(2).sum())

    model = gca.GCAHNG(D, C, num_layers=1, metric_loss=my_loss)
    assert synthetic_mode_for(my_loss) == "pairs"
    assert model.metric_losses(*_batch())["synthetic"] > 0 and calls == [False, True]


def test_dynamic_soft_margin_refusal_is_still_needed():
    """pytorch-metric-learning issue #731; once this fails, the loss can move to the "pairs" rows."""
    loss, y = pml.DynamicSoftMarginLoss(), torch.arange(12) % 4
    loss(torch.randn(12, D, requires_grad=True), y).backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss(torch.randn(12, D, requires_grad=True), y).backward()
