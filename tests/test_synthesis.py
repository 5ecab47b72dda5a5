import numpy as np
import pytest
import torch

import gca
from gca.synthesis import mixing_weights, synthesize_negatives


def _hdml(anchor, negative, d_pos, gamma):
    """HDML (Zheng et al. 2019): z^- <- z + [d+ + (d- - d+) e^{-alpha/J}] / d- (z^- - z) when d- > d+."""
    d_neg = np.linalg.norm(anchor - negative)
    if d_neg <= d_pos:
        return negative
    return anchor + (d_pos + (d_neg - d_pos) * gamma) / d_neg * (negative - anchor)


def test_constant_lambda_one_sample_per_class_is_hdml():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(8, 6, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])            # class 0 has a positive; the rest one sample each
    g = gca.build_batch_graph(z, y)
    lam = torch.ones(g.edge_index.shape[1], 6, dtype=torch.float64)
    s = synthesize_negatives(z, y, g.edge_index, lam, gamma=0.3)
    assert set(s.anchor_index.tolist()) == {0, 1}
    zn = z.numpy()
    for row in range(len(s)):
        a, c = int(s.anchor_index[row]), int(s.labels[row])
        n = int((y == c).nonzero()[0, 0])
        d_pos = np.linalg.norm(zn[0] - zn[1])
        np.testing.assert_allclose(s.embeddings[row].numpy(), _hdml(zn[a], zn[n], d_pos, 0.3), rtol=1e-9)


def test_no_synthetic_carries_its_anchors_class_and_one_row_per_negative_class():
    z = torch.randn(12, 5)
    y = torch.tensor([3, 3, 3, 1, 1, 8, 8, 8, 8, 4, 6, 6])   # class 4 has no positive
    g = gca.build_batch_graph(z, y)
    s = synthesize_negatives(z, y, g.edge_index, torch.rand(g.edge_index.shape[1], 5))
    assert torch.all(s.labels != y[s.anchor_index])
    assert 9 not in s.anchor_index.tolist()                   # no positive -> no synthetic
    for a in range(12):
        if a == 9:
            continue
        got = sorted(s.labels[s.anchor_index == a].tolist())
        assert got == sorted(set(y.tolist()) - {int(y[a])})


def test_knn_anchor_uses_only_its_neighbours():
    z = torch.randn(16, 6)
    y = torch.arange(16) % 4
    g = gca.build_batch_graph(z, y, edges="knn", k=3)
    s = synthesize_negatives(z, y, g.edge_index, torch.rand(g.edge_index.shape[1], 6))
    for a in range(16):
        neighbours = g.edge_index[0, g.edge_index[1] == a]
        allowed = set(y[neighbours].tolist()) - {int(y[a])}
        assert set(s.labels[s.anchor_index == a].tolist()) == allowed


def _reference_synthesis(z, y, edge_index, lam, gamma):
    """Plain loop: for each anchor and negative class, the mean of the interpolated candidates."""
    rows = {}
    for e in range(edge_index.shape[1]):
        n, a = int(edge_index[0, e]), int(edge_index[1, e])
        positives = [p for p in range(len(y)) if y[p] == y[a] and p != a]
        if y[n] == y[a] or not positives:
            continue
        d_pos = np.mean([np.linalg.norm(z[a] - z[p]) for p in positives])
        d_neg = np.linalg.norm(z[a] - z[n])
        if d_neg > d_pos:
            zeta = z[a] + (d_pos + (d_neg - d_pos) * gamma * lam[e]) / d_neg * (z[n] - z[a])
        else:
            zeta = z[n]
        rows.setdefault((a, int(y[n])), []).append(zeta)
    return {key: np.mean(v, axis=0) for key, v in rows.items()}


@pytest.mark.parametrize("edges, k", [("full", None), ("knn", 5)])
def test_fast_path_matches_plain_loop(edges, k):
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(14, 4, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 5, 5])
    g = gca.build_batch_graph(z, y, edges=edges, k=k)
    lam = torch.rand(g.edge_index.shape[1], 4, generator=gen, dtype=torch.float64)
    s = synthesize_negatives(z, y, g.edge_index, lam, gamma=0.7, mixing="mean")
    ref = _reference_synthesis(z.numpy(), y.numpy(), g.edge_index.numpy(), lam.numpy(), 0.7)
    assert len(s) == len(ref)
    for row in range(len(s)):
        key = (int(s.anchor_index[row]), int(s.labels[row]))
        np.testing.assert_allclose(s.embeddings[row].numpy(), ref[key], rtol=1e-9)


def test_mixing_weights_are_convex_per_group():
    group = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 3])
    for mode in ("sequential", "dirichlet", "mean"):
        w = mixing_weights(group, 4, mode, torch.Generator().manual_seed(0))
        assert torch.all(w >= 0)
        torch.testing.assert_close(torch.zeros(4).index_add_(0, group, w), torch.ones(4))


def test_sequential_mixing_has_the_authors_distribution_drawn_per_group():
    groups = 20000
    group = torch.arange(groups).repeat_interleave(3)
    w = mixing_weights(group, groups, "sequential", torch.Generator().manual_seed(0)).view(groups, 3)
    # drawn per group: rows differ (the authors shared one draw across the whole batch)
    assert w[:, 0].std() > 0.1
    # the authors' scheme: weights (u1 u2, (1 - u1) u2, 1 - u2) for the members in (random) order
    rng = np.random.default_rng(0)
    u1, u2 = rng.random(groups), rng.random(groups)
    ref = np.sort(np.stack([u1 * u2, (1 - u1) * u2, 1 - u2], 1), axis=1).mean(0)
    np.testing.assert_allclose(np.sort(w.numpy(), axis=1).mean(0), ref, atol=0.01)
    # no position is favoured
    np.testing.assert_allclose(w.numpy().mean(0), [1 / 3] * 3, atol=0.01)


def test_one_negative_per_class_picks_a_real_candidate():
    z = torch.randn(9, 4)
    y = torch.arange(9) % 3
    g = gca.build_batch_graph(z, y)
    lam = torch.ones(g.edge_index.shape[1], 1)
    s = synthesize_negatives(z, y, g.edge_index, lam, gamma=1.0, negatives_per_class="one")
    # gamma = lambda = 1 leaves every negative where it is, so each synthetic is one real sample
    for row in range(len(s)):
        members = z[y == s.labels[row]]
        assert torch.isclose(members, s.embeddings[row]).all(1).any()


@pytest.mark.parametrize("anchor_gradient", [True, False])
@pytest.mark.parametrize("mixing, negatives", [("sequential", "all"), ("dirichlet", "one"), ("mean", "all")])
def test_recomputed_synthesis_equals_the_stored_one(anchor_gradient, mixing, negatives):
    """The memory-saving path (interpolation recomputed in backward) against the plain one: same synthetics,
    same gradients into the embeddings and lambda, the same random draws."""
    gen = torch.Generator().manual_seed(4)
    z0 = torch.randn(14, 6, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 5, 5])
    g = gca.build_batch_graph(z0, y)
    lam0 = torch.rand(g.edge_index.shape[1], 6, generator=gen, dtype=torch.float64)
    upstream = None
    results = []
    for recompute in (True, False):
        z, lam = z0.clone().requires_grad_(), lam0.clone().requires_grad_()
        s = synthesize_negatives(z, y, g.edge_index, lam, gamma=torch.tensor(0.6, dtype=torch.float64), mixing=mixing,
                                 negatives_per_class=negatives, generator=torch.Generator().manual_seed(9),
                                 anchor_gradient=anchor_gradient, recompute=recompute)
        if upstream is None:
            upstream = torch.randn(s.embeddings.shape, generator=gen, dtype=torch.float64)
        grads = torch.autograd.grad((s.embeddings * upstream).sum() + s.embeddings.norm(dim=1).sum(), [z, lam],
                                    allow_unused=True)
        results.append((s, grads))
    (fast, fast_grads), (plain, plain_grads) = results
    torch.testing.assert_close(fast.embeddings, plain.embeddings, rtol=0, atol=0)
    assert torch.equal(fast.edge_ids, plain.edge_ids) and torch.equal(fast.anchor_index, plain.anchor_index)
    # routed (anchor_gradient=False), the ratio is detached: lambda gets no gradient on either path
    assert (plain_grads[1] is None) == (fast_grads[1] is None) == (not anchor_gradient)
    for a, b in zip(fast_grads, plain_grads):
        if b is not None:
            assert b.abs().sum() > 0
            torch.testing.assert_close(a, b)


def _interpolation_inputs(lam_width, dtype=torch.float64):
    gen = torch.Generator().manual_seed(11)
    z = torch.randn(12, 5, generator=gen, dtype=dtype)
    z[7] = z[2]                                   # a negative equal to its anchor: d- = 0 <= d+ (left as it is)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 5])
    edge_index = gca.build_batch_graph(z, y).edge_index
    lam = None if lam_width is None else torch.rand(edge_index.shape[1], lam_width, generator=gen, dtype=dtype)
    return z, y, edge_index, lam


@pytest.mark.parametrize("lam_width", [5, 1, None])
@pytest.mark.parametrize("grad_of", ["both", "embeddings", "lam"])
@pytest.mark.parametrize("anchor_gradient", [True, False])
def test_written_out_synthesis_gradient_equals_autograd(lam_width, grad_of, anchor_gradient):
    """The fast backward of the synthesis (:class:`gca.synthesis._InterpolateAndMix`) against autograd's
    composition, for per-channel, per-pair and no lambda, with the gradient wanted by phase A (embeddings),
    phase C (lambda) or both, and a candidate with ``d- <= d+`` (an exact duplicate of its anchor)."""
    z0, y, edge_index, lam0 = _interpolation_inputs(lam_width)
    if lam0 is None and grad_of == "lam":
        pytest.skip("no lambda to differentiate")
    upstream = None
    results, values = [], []
    for recompute in (True, False):
        z = z0.clone().requires_grad_(grad_of in ("both", "embeddings"))
        lam = None if lam0 is None else lam0.clone().requires_grad_(grad_of in ("both", "lam"))
        s = synthesize_negatives(z, y, edge_index, lam, gamma=0.4, generator=torch.Generator().manual_seed(3),
                                 anchor_gradient=anchor_gradient, recompute=recompute)
        if upstream is None:
            upstream = torch.randn(s.embeddings.shape, generator=torch.Generator().manual_seed(5), dtype=z.dtype)
        wanted = [t for t in (z, lam) if t is not None and t.requires_grad]
        values.append(s.embeddings.detach())
        if not s.embeddings.requires_grad:       # routed with only lambda asking: nothing reaches it
            results.append(None)
            continue
        results.append(torch.autograd.grad((s.embeddings * upstream).sum(), wanted, allow_unused=True))
    torch.testing.assert_close(values[0], values[1], rtol=0, atol=0)
    fast, plain = results
    if plain is None:
        assert fast is None
        return
    for a, b in zip(fast, plain):
        assert (a is None) == (b is None)
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lam_width", [5, 1])
def test_written_out_synthesis_gradient_passes_gradcheck(lam_width):
    z0, y, edge_index, lam0 = _interpolation_inputs(lam_width)
    z0[7] += 0.5                                  # gradcheck's finite differences need d- away from d+

    def synthetics(z, lam):
        return synthesize_negatives(z, y, edge_index, lam, gamma=torch.tensor(0.7, dtype=torch.float64),
                                    generator=torch.Generator().manual_seed(3), recompute=True).embeddings

    assert torch.autograd.gradcheck(synthetics, (z0.requires_grad_(), lam0.requires_grad_()))


def test_synthesis_with_a_gamma_that_needs_a_gradient_keeps_it():
    """A gamma with a gradient takes the checkpointed plain path: its gradient is autograd's."""
    z, y, edge_index, lam = _interpolation_inputs(5)
    grads = []
    for recompute in (True, False):
        gamma = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        s = synthesize_negatives(z, y, edge_index, lam, gamma=gamma, generator=torch.Generator().manual_seed(3),
                                 recompute=recompute)
        grads.append(torch.autograd.grad(s.embeddings.sum(), gamma)[0])
    assert grads[0] != 0
    torch.testing.assert_close(grads[0], grads[1])
