"""NPairLoss: the authors' N-pair numbers, computed as a pytorch-metric-learning loss."""
import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import CosineSimilarity, DotProductSimilarity
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.miners import PairMarginMiner, TripletMarginMiner
from pytorch_metric_learning.reducers import SumReducer
from pytorch_metric_learning.regularizers import LpRegularizer

from gca.losses import NPairLoss, is_proxy_loss


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


def _pair_loss(emb, ref, a, p, negs):
    s_p = float(emb[a] @ ref[p])
    return math.log(1 + sum(math.exp(float(emb[a] @ ref[n]) - s_p) for n in negs))


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


def test_npair_is_a_pml_loss_on_raw_dot_products_with_the_authors_regulariser():
    loss = NPairLoss()
    assert isinstance(loss, BaseMetricLossFunction) and not is_proxy_loss(loss)
    assert isinstance(loss.distance, DotProductSimilarity) and not loss.distance.normalize_embeddings
    assert isinstance(loss.embedding_regularizer, LpRegularizer)
    assert (loss.embedding_regularizer.p, loss.embedding_regularizer.power) == (2, 2)
    assert loss.embedding_reg_weight == pytest.approx(0.25 * 3e-3)
    assert set(loss.sub_loss_names()) == {"loss", "embedding_reg_loss", "ref_emb_reg_loss"}
    assert loss.state_dict() == {}              # nothing new in checkpoints
    assert NPairLoss(l2_reg=0).embedding_regularizer is None and NPairLoss(0).sub_loss_names() == ["loss"]
    assert "l2_reg=0.003" in repr(loss)


def test_npair_pairs_tuple_counts_each_positive_pair_once():
    emb = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    pairs = (torch.tensor([0, 0, 2]), torch.tensor([1, 1, 3]), torch.tensor([0, 0, 2, 2]), torch.tensor([2, 4, 0, 5]))
    got = NPairLoss(l2_reg=0)(emb, y, indices_tuple=pairs)
    expected = (_pair_loss(emb, emb, 0, 1, [2, 4]) + _pair_loss(emb, emb, 2, 3, [0, 5])) / 2
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_npair_triplets_keep_negatives_with_their_own_pair():
    emb = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    # anchor 0 has different negatives with positives 1 and 2; a repeated triplet counts twice
    triplets = (torch.tensor([0, 0, 0, 0]), torch.tensor([1, 2, 2, 1]), torch.tensor([3, 4, 5, 3]))
    got = NPairLoss(l2_reg=0)(emb, y, indices_tuple=triplets)
    expected = (_pair_loss(emb, emb, 0, 1, [3, 3]) + _pair_loss(emb, emb, 0, 2, [4, 5])) / 2
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_npair_without_positive_pairs_gives_the_regulariser_and_its_gradient():
    emb = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    got = NPairLoss(l2_reg=0.1)(emb, torch.arange(5))
    assert got.item() == pytest.approx(0.25 * 0.1 * 2 * emb.pow(2).sum(1).mean().item(), rel=1e-12)
    got.backward()
    torch.testing.assert_close(emb.grad, 0.25 * 0.1 * 2 * 2 * emb.detach() / 5)
    empty = tuple(torch.zeros(0, dtype=torch.long) for _ in range(3))
    assert NPairLoss(l2_reg=0)(emb, torch.arange(5) % 2, indices_tuple=empty).item() == 0


def test_npair_single_pair_with_one_negative_is_not_dropped():
    emb, ref = torch.randn(1, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    got = NPairLoss(l2_reg=0)(emb, torch.tensor([0]), ref_emb=ref, ref_labels=torch.tensor([0, 1]))
    assert got.item() == pytest.approx(_pair_loss(emb, ref, 0, 0, [1]), rel=1e-10)


def test_npair_takes_pytorch_metric_learning_options_and_miners():
    emb = torch.randn(12, 8, dtype=torch.float64)
    y = torch.arange(12) % 4
    mean, total = NPairLoss(l2_reg=0)(emb, y), NPairLoss(l2_reg=0, reducer=SumReducer())(emb, y)
    assert total.item() == pytest.approx(mean.item() * 12 * 2, rel=1e-10)        # 4 classes x 3: 24 pairs
    cosine = NPairLoss(l2_reg=0, distance=CosineSimilarity())(emb, y)
    assert cosine.item() == pytest.approx(NPairLoss(l2_reg=0)(F.normalize(emb), y).item(), rel=1e-10)
    for miner in (PairMarginMiner(pos_margin=0.5, neg_margin=0.5), TripletMarginMiner(margin=1.0)):
        leaf = emb.clone().requires_grad_()
        value = NPairLoss()(leaf, y, indices_tuple=miner(leaf, y))
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(leaf.grad).all()


def test_npair_refuses_inconsistent_references():
    emb, y = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="ref_labels was given without ref_emb"):
        NPairLoss()(emb, y, ref_labels=y)
    with pytest.raises(ValueError, match="ref_emb needs ref_labels"):
        NPairLoss()(emb, y, ref_emb=emb)
    with pytest.raises(ValueError, match=r"3 \(triplets\) or 4 \(pairs\)"):
        NPairLoss()(emb, y, indices_tuple=(y, y))
    with pytest.raises(ValueError, match="Number of embeddings must equal number of labels"):
        NPairLoss()(emb, y[:3])
