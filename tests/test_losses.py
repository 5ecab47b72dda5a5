import math

import pytest
import torch
from pytorch_metric_learning.losses import MultiSimilarityLoss, ProxyAnchorLoss

import gca
from gca.losses import (HardnessSchedule, NPairLoss, SyntheticWeightSchedule, diversity_loss, hardness_loss,
                        label_preservation_loss, synthetic_indices, synthetic_metric_loss)
from gca.synthesis import Synthetics


def _npair_loop(emb, labels, ref, ref_labels, self_ref, l2_reg, negatives_of=None):
    losses = []
    for a in range(len(emb)):
        for p in range(len(ref)):
            if ref_labels[p] != labels[a] or (self_ref and p == a):
                continue
            negs = negatives_of(a, p) if negatives_of else [n for n in range(len(ref)) if ref_labels[n] != labels[a]]
            s_p = float(emb[a] @ ref[p])
            losses.append(math.log(1 + sum(math.exp(float(emb[a] @ ref[n]) - s_p) for n in negs)))
    reg = 0.25 * l2_reg * (float(emb.pow(2).sum(1).mean()) + float(ref.pow(2).sum(1).mean()))
    return sum(losses) / len(losses) + reg


def test_npair_matches_brute_force():
    emb = torch.randn(9, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4])
    got = NPairLoss()(emb, y)
    assert got.item() == pytest.approx(_npair_loop(emb, y, emb, y, True, 3e-3), rel=1e-10)


def test_npair_with_ref_emb_and_triplets_matches_brute_force():
    emb = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    ref = torch.randn(5, 4, dtype=torch.float64)
    ref_y = torch.tensor([0, 1, 2, 1, 0])
    got = NPairLoss()(emb, y, ref_emb=ref, ref_labels=ref_y)
    assert got.item() == pytest.approx(_npair_loop(emb, y, ref, ref_y, False, 3e-3), rel=1e-10)
    triplets = (torch.tensor([0, 0, 2]), torch.tensor([0, 0, 1]), torch.tensor([1, 2, 4]))
    got = NPairLoss(l2_reg=0)(emb, y, indices_tuple=triplets, ref_emb=ref, ref_labels=ref_y)
    expected = (math.log(1 + math.exp(emb[0] @ ref[1] - emb[0] @ ref[0]) + math.exp(emb[0] @ ref[2] - emb[0] @ ref[0]))
                + math.log(1 + math.exp(emb[2] @ ref[4] - emb[2] @ ref[1]))) / 2
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_synthetic_indices_tie_each_synthetic_to_its_anchor():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    s = Synthetics(torch.randn(4, 3), torch.tensor([1, 2, 0, 0]), torch.tensor([0, 1, 3, 4]))
    a, p, n = synthetic_indices(y, s)
    assert torch.all(y[a] == y[p]) and torch.all(a != p)
    assert torch.equal(s.anchor_index[n - 6], a)
    assert len(a) == 2 + 2 + 1 + 1          # anchors 0 and 1 have two positives, 3 and 4 one each


def test_hardness_and_diversity_match_loops():
    z = torch.randn(5, 3, dtype=torch.float64)
    s = Synthetics(torch.randn(4, 3, dtype=torch.float64), torch.tensor([1, 2, 0, 0]), torch.tensor([0, 0, 3, 4]))
    expected = sum(1 - torch.nn.functional.cosine_similarity(z[a], s.embeddings[i], dim=0)
                   for i, a in enumerate(s.anchor_index.tolist())) / 4
    assert hardness_loss(z, s).item() == pytest.approx(expected.item())
    lam = torch.rand(6, 3, dtype=torch.float64)
    anchor = torch.tensor([0, 0, 0, 1, 1, 2])
    total = 0.0
    for e in range(6):
        mean = lam[anchor == anchor[e]].mean(0)
        total += float((lam[e] - mean).pow(2).sum())
    assert diversity_loss(lam, anchor, 3).item() == pytest.approx(0.01 * (1 - math.sqrt(total / 6)))


def test_label_preservation_trains_the_generator_not_the_classifier():
    clf = torch.nn.Linear(3, 4)
    emb = torch.randn(5, 3, requires_grad=True)
    loss = label_preservation_loss(clf, Synthetics(emb * 2, torch.tensor([0, 1, 2, 3, 0]), torch.arange(5)))
    loss.backward()
    assert emb.grad is not None and clf.weight.grad is None


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


def test_metric_loss_by_name():
    from gca.losses import create_metric_loss, list_metric_losses
    assert {"npair", "proxy_anchor", "multi_similarity"} <= set(list_metric_losses())
    loss = create_metric_loss("proxy_anchor", num_classes=6, embedding_dim=16)
    model = gca.GCAHNG(16, 6, num_layers=1, metric_loss=loss)
    assert len(list(model.metric_loss_parameters())) == 1
    with pytest.raises(ValueError, match="unknown metric loss"):
        create_metric_loss("arcface2", 6, 16)
