"""Generator-side losses: label preservation, hardness and diversity."""
import math

import pytest
import torch

from gca.losses import diversity_loss, hardness_loss, label_preservation_loss
from gca.synthesis import Synthetics


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
