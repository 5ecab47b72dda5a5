"""Generator diagnostics against brute-force loops."""
import torch
import torch.nn.functional as F

import gca
from gca.diagnostics import generator_diagnostics
from gca.graph import full_edge_index
from gca.synthesis import synthesize_negatives


def _batch(b=12, d=8, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.arange(classes).repeat(b // classes)


def test_values_match_a_loop():
    z, y = _batch()
    edge_index = full_edge_index(len(y), self_loops=True)
    lam = torch.rand(edge_index.shape[1], z.shape[1], generator=torch.Generator().manual_seed(1))
    syn = synthesize_negatives(z, y, edge_index, lam, 0.5, generator=torch.Generator().manual_seed(2))
    classifier = torch.nn.Linear(8, 4)
    diag = generator_diagnostics(z, y, edge_index, lam, syn, classifier)

    cand, unchanged, per_anchor = [], [], {}
    for e in range(edge_index.shape[1]):
        n, a = edge_index[:, e].tolist()
        if y[n] == y[a]:
            continue
        cand.append(lam[e])
        per_anchor.setdefault(a, []).append(lam[e])
        positives = [p for p in range(len(y)) if p != a and y[p] == y[a]]
        d_pos = sum((z[a] - z[p]).norm() for p in positives) / len(positives)
        unchanged.append(float((z[a] - z[n]).norm() <= d_pos))
    cand = torch.stack(cand)
    assert abs(diag["diag_lambda_mean"] - cand.mean().item()) < 1e-6
    assert abs(diag["diag_lambda_channel_std"] - cand.std(1, unbiased=False).mean().item()) < 1e-6
    neg_std = torch.stack([torch.stack(v).std(0, unbiased=False).mean() for v in per_anchor.values()]).mean()
    assert abs(diag["diag_lambda_negative_std"] - neg_std.item()) < 1e-6
    assert abs(diag["diag_unchanged"] - sum(unchanged) / len(unchanged)) < 1e-6

    cos_syn, hardest, harder = [], [], []
    for s in range(len(syn)):
        a = int(syn.anchor_index[s])
        c = F.cosine_similarity(syn.embeddings[s], z[a], dim=0).item()
        h = max(F.cosine_similarity(z[n], z[a], dim=0).item() for n in range(len(y)) if y[n] != y[a])
        cos_syn.append(c)
        hardest.append(h)
        harder.append(float(c > h + 1e-5))
    assert abs(diag["diag_cos_synthetic"] - sum(cos_syn) / len(cos_syn)) < 1e-5
    assert abs(diag["diag_cos_hardest_real"] - sum(hardest) / len(hardest)) < 1e-5
    assert abs(diag["diag_harder_than_real"] - sum(harder) / len(harder)) < 1e-6
    accuracy = (classifier(syn.embeddings).argmax(1) == syn.labels).float().mean().item()
    assert abs(diag["diag_label_accuracy"] - accuracy) < 1e-6


def test_a_collapsed_generator_shows_zero_spread_and_harder_synthetics_at_small_gamma():
    z, y = _batch()
    z = 0.2 * z + 3 * torch.eye(8)[y]          # tight classes: d+ is far below d-
    edge_index = full_edge_index(len(y), self_loops=True)
    lam = torch.full((edge_index.shape[1], z.shape[1]), 0.3)
    hard = synthesize_negatives(z, y, edge_index, lam, 0.01, negatives_per_class="one")
    easy = synthesize_negatives(z, y, edge_index, torch.ones_like(lam), 1.0, negatives_per_class="one")  # = real
    d_hard = generator_diagnostics(z, y, edge_index, lam, hard)
    d_easy = generator_diagnostics(z, y, edge_index, lam, easy)
    assert d_hard["diag_lambda_channel_std"] == 0.0 and d_hard["diag_lambda_negative_std"] < 1e-7
    assert d_hard["diag_cos_synthetic"] > d_easy["diag_cos_synthetic"]
    assert d_hard["diag_harder_than_real"] == 1.0 and d_easy["diag_harder_than_real"] == 0.0
    assert d_hard["diag_unchanged"] == 0.0
    assert "diag_label_accuracy" not in d_hard          # no classifier given


def test_model_reports_diagnostics_in_training_only():
    z, y = _batch(24, 16, 8)
    model = gca.GCAHNG(16, 8, num_layers=1)
    assert "diag_harder_than_real" in model.generator_losses(z, y)
    model.eval()
    assert not any(k.startswith("diag_") for k in model.generator_losses(z, y))
    model.train()
    model.diagnostics = False
    assert not any(k.startswith("diag_") for k in model.generator_losses(z, y))
