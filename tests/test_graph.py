import numpy as np
import pytest
import torch

from gca import build_batch_graph


def _batch(n=10, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.tensor([5, 5, 5, 2, 2, 9, 9, 9, 9, 7])[:n]      # uneven classes, arbitrary ids
    return z, y


def test_edge_features_match_independent_per_pair_computation():
    z, y = _batch()
    g = build_batch_graph(z, y)
    zn = z.numpy()
    for e, (i, j) in enumerate(g.edge_index.T.tolist()):
        a, b = zn[i] - zn[i].mean(), zn[j] - zn[j].mean()
        expected = a * b / (np.linalg.norm(a) * np.linalg.norm(b))
        np.testing.assert_allclose(g.edge_attr[e].numpy(), expected, rtol=1e-10, atol=1e-12)
        # the channels of an edge sum to the Pearson correlation of its two embeddings
        np.testing.assert_allclose(g.edge_attr[e].sum().item(), np.corrcoef(zn[i], zn[j])[0, 1], atol=1e-10)


def test_same_class_follows_labels_and_layout():
    z, y = _batch()
    g = build_batch_graph(z, y)
    src, dst = g.edge_index
    assert g.same_class.dtype == torch.bool
    assert torch.equal(g.same_class, y[src] == y[dst])
    assert g.edge_index.shape == (2, 100)
    assert torch.equal(src, torch.arange(10).repeat_interleave(10))      # source-major: id = i * B + j
    assert torch.equal(g.y, y) and g.x is z


def test_without_self_loops():
    z, y = _batch()
    g = build_batch_graph(z, y, self_loops=False)
    assert g.edge_index.shape[1] == 90
    assert not torch.any(g.edge_index[0] == g.edge_index[1])


def test_knn_with_all_neighbours_equals_full():
    z, y = _batch()
    for loops in (True, False):
        full = build_batch_graph(z, y, self_loops=loops)
        knn = build_batch_graph(z, y, edges="knn", k=9, self_loops=loops)
        assert torch.equal(full.edge_index, knn.edge_index)
        torch.testing.assert_close(full.edge_attr, knn.edge_attr)
        assert torch.equal(full.same_class, knn.same_class)


def test_knn_keeps_the_most_correlated_sources():
    z, y = _batch()
    g = build_batch_graph(z, y, edges="knn", k=3, self_loops=False)
    assert g.edge_index.shape[1] == 10 * 3                     # grows with B*k
    corr = np.corrcoef(z.numpy())
    for j in range(10):
        sources = set(g.edge_index[0, g.edge_index[1] == j].tolist())
        others = [i for i in range(10) if i != j]
        expected = set(sorted(others, key=lambda i: -corr[i, j])[:3])
        assert sources == expected


def test_gradients_reach_embeddings():
    z, y = _batch()
    z.requires_grad_(True)
    g = build_batch_graph(z, y, edges="knn", k=4)
    (g.edge_attr.pow(2).sum() + g.x.sum()).backward()
    assert z.grad is not None and torch.all(torch.isfinite(z.grad)) and z.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(labels=torch.arange(9)), ValueError, "differ in length"),
    (dict(labels=torch.arange(10).float()), TypeError, "integer"),
    (dict(edges="ring"), ValueError, "edges must be"),
    (dict(edges="knn", k=0), ValueError, "k must be in"),
    (dict(edges="knn", k=10), ValueError, "k must be in"),
    (dict(edges="knn"), TypeError, "integer k"),
])
def test_bad_input(kwargs, exc, match):
    z, y = _batch()
    args = dict(embeddings=z, labels=y)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        build_batch_graph(**args)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_embeddings_rejected(value):
    z, y = _batch()
    z[3, 1] = value
    with pytest.raises(ValueError, match="NaN or infinite.*rows \\[3\\]"):
        build_batch_graph(z, y)
