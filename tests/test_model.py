import pytest
import torch

import gca


def _batch(classes=6, per_class=3, dim=16, seed=0, sample_major=False):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat(per_class) if sample_major else torch.arange(classes).repeat_interleave(per_class)
    return torch.randn(classes * per_class, dim, generator=gen), y


def _model(**kw):
    args = dict(num_layers=2, heads=4, dropout=0.0, mixing="mean")
    args.update(kw)
    return gca.GCAHNG(16, 10, **args).eval()


def _rows(s, index_map=None):
    anchors = s.anchor_index.tolist() if index_map is None else [index_map[a] for a in s.anchor_index.tolist()]
    return {(a, int(c)): s.embeddings[i] for i, (a, c) in enumerate(zip(anchors, s.labels))}


def test_permuting_the_batch_permutes_everything():
    z, y = _batch()
    model = _model()
    perm = torch.randperm(len(y))
    out = model(z, y)
    out_p = model(z[perm], y[perm])
    torch.testing.assert_close(out_p.node_states, out.node_states[perm], rtol=1e-4, atol=1e-5)
    n = len(y)
    # edge (i -> j) of the permuted batch is edge (perm[i] -> perm[j]) of the original
    src, dst = out_p.graph.edge_index
    orig_ids = perm[src] * n + perm[dst]
    torch.testing.assert_close(out_p.graph.edge_attr, out.graph.edge_attr[orig_ids])
    torch.testing.assert_close(out_p.lam, out.lam[orig_ids], rtol=1e-4, atol=1e-5)
    assert torch.equal(out_p.graph.same_class, out.graph.same_class[orig_ids])
    rows, rows_p = _rows(out.synthetics), _rows(out_p.synthetics, perm.tolist())
    assert rows.keys() == rows_p.keys()
    for key in rows:
        torch.testing.assert_close(rows_p[key], rows[key], rtol=1e-4, atol=1e-5)


def test_class_major_and_sample_major_layouts_give_the_same_synthetics():
    zc, yc = _batch()
    # the same samples in sample-major order: chunk k holds the k-th sample of every class
    order = torch.arange(18).view(6, 3).T.reshape(-1)
    zs, ys = zc[order], yc[order]
    assert torch.equal(ys, torch.arange(6).repeat(3))
    model = _model(num_layers=1)
    rows_c = _rows(model(zc, yc).synthetics)
    rows_s = _rows(model(zs, ys).synthetics, order.tolist())
    assert rows_c.keys() == rows_s.keys()
    for key in rows_c:
        torch.testing.assert_close(rows_s[key], rows_c[key], rtol=1e-4, atol=1e-5)


def test_phase_gradients_go_where_method_2_6_says():
    z, y = _batch()
    model = gca.GCAHNG(16, 10, num_layers=1, node_loss_weight=0.0)
    zz = z.clone().requires_grad_(True)
    model.metric_losses(zz, y)["total"].backward()
    assert zz.grad.abs().sum() > 0
    # lambda is detached in phase A: with J_gce off, the GNN gets no gradient
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.generator_parameters())
    model.zero_grad()
    zz.grad = None
    model.generator_losses(zz, y)["total"].backward()
    assert zz.grad is None                                     # phase C works on sg(z)
    assert model.classifier.weight.grad is None
    assert sum(p.grad.abs().sum() for p in model.generator_parameters() if p.grad is not None) > 0
    model.zero_grad()
    model.classifier_loss(zz, y).backward()
    assert zz.grad is None and model.classifier.weight.grad.abs().sum() > 0


def test_node_loss_reaches_gnn_and_embeddings():
    z, y = _batch()
    model = gca.GCAHNG(16, 10, num_layers=1)
    zz = z.clone().requires_grad_(True)
    out = model.metric_losses(zz, y)
    out["node"].backward()
    assert zz.grad.abs().sum() > 0
    assert model.generator.propagation.layers[0].node.query.weight.grad.abs().sum() > 0


def test_schedules_record_only_in_training():
    z, y = _batch()
    model = gca.GCAHNG(16, 10, num_layers=1)
    model.eval()
    model.metric_losses(z, y)
    assert int(model.hardness.running_count) == 0
    model.train()
    j_m = model.metric_losses(z, y)["metric"]
    j_gen = model.generator_losses(z, y)["total"]
    model.end_epoch()
    assert model.hardness.previous_mean.item() == pytest.approx(j_m.item(), rel=1e-5)
    assert model.synthetic_weight.previous_mean.item() == pytest.approx(j_gen.item(), rel=1e-5)


def _mixing_weights_of(model, z, y, out):
    """For every synthetic of ``out``: the weights that write it as an affine combination of its
    candidates (the interpolations of its anchor with each source of class c on an incoming edge, with
    that edge's lambda), solved by least squares; returns ``(weights per synthetic, max residual)``."""
    from gca.synthesis import hardness_interpolation, positive_distance
    edge_id = {(s, d): e for e, (s, d) in enumerate(out.graph.edge_index.T.tolist())}
    d_pos, _ = positive_distance(z, y)
    weights, residual = [], 0.0
    for s in range(len(out.synthetics)):
        a, c = int(out.synthetics.anchor_index[s]), int(out.synthetics.labels[s])
        sources = [n for n in range(len(y)) if int(y[n]) == c and (n, a) in edge_id]
        lam = out.lam[[edge_id[(n, a)] for n in sources]]
        cand = hardness_interpolation(z[a].expand(len(sources), -1), z[sources], d_pos[a].expand(len(sources)),
                                      out.gamma, lam)
        # rows: the D channels, plus one row forcing the weights to sum to 1
        A = torch.cat([cand.T.double(), torch.ones(1, len(sources), dtype=torch.float64)])
        b = torch.cat([out.synthetics.embeddings[s].double(), torch.ones(1, dtype=torch.float64)])
        w = torch.linalg.lstsq(A, b.unsqueeze(1)).solution.squeeze(1)
        residual = max(residual, (A @ w - b).abs().max().item())
        weights.append(w)
    return weights, residual


_VARIANTS = [dict(), dict(num_layers=0), dict(per_channel=False), dict(negatives_per_class="one"),
             dict(edges="knn", k=5), dict(mixing="sequential"), dict(mixing="dirichlet"), dict(mixing="mean")]


@pytest.mark.parametrize("kwargs", _VARIANTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_variants_synthesise_what_they_say(kwargs):
    z, y = _batch()
    model = gca.GCAHNG(16, 10, **kwargs).eval()
    out = model.generate(z, y, generator=torch.Generator().manual_seed(0))
    n, num_edges = len(y), out.graph.edge_index.shape[1]
    src, dst = out.graph.edge_index.tolist()
    knn = kwargs.get("edges") == "knn"
    # the graph: every ordered pair, or each node's k sources plus its self-loop
    assert num_edges == (n * (kwargs["k"] + 1) if knn else n * n)
    if knn:
        assert torch.equal(torch.bincount(out.graph.edge_index[1], minlength=n), torch.full((n,), kwargs["k"] + 1))
    # one synthetic per (anchor, class of a source on one of its incoming edges, other than its own class)
    expected = {(a, int(y[s])) for s, a in zip(src, dst) if y[s] != y[a]}
    got = list(zip(out.synthetics.anchor_index.tolist(), out.synthetics.labels.tolist()))
    assert len(got) == len(set(got)) and set(got) == expected
    assert (len(got) < n * 5) if knn else (len(got) == n * 5)           # 6 classes: 5 negative classes each
    # lambda: one weight per channel, or one per edge
    assert out.lam.shape == (num_edges, 1 if kwargs.get("per_channel") is False else 16)
    # num_layers=0: the node states are the projected inputs and the edge states the raw correlations
    projected = model.generator.propagation.input_proj(z)
    if kwargs.get("num_layers") == 0:
        assert len(model.generator.propagation.layers) == 0
        torch.testing.assert_close(out.edge_states, out.graph.edge_attr)
        torch.testing.assert_close(out.node_states, projected)
    else:
        assert not torch.allclose(out.edge_states, out.graph.edge_attr, atol=1e-3)
        assert not torch.allclose(out.node_states, projected, atol=1e-3)
    # every synthetic is a convex combination of its anchor's candidates of that class
    weights, residual = _mixing_weights_of(model, z, y, out)
    assert residual < 1e-5
    assert all(w.min() > -1e-5 for w in weights)
    one_hot = [bool(torch.isclose(w.max(), torch.ones((), dtype=w.dtype), atol=1e-5)) for w in weights]
    uniform = [torch.allclose(w, torch.full_like(w, 1 / len(w)), atol=1e-5) for w in weights]
    several = [len(w) > 1 for w in weights]
    assert any(several)
    again = model.generate(z, y, generator=torch.Generator().manual_seed(1)).synthetics.embeddings
    if kwargs.get("negatives_per_class") == "one":
        assert all(one_hot)                                              # a single sample of the class
        assert not torch.allclose(again, out.synthetics.embeddings)     # which one is drawn at random
    elif kwargs.get("mixing") == "mean":
        assert all(uniform)
        torch.testing.assert_close(again, out.synthetics.embeddings)   # nothing random
    else:                                                                # sequential (default), dirichlet
        assert not any(o for o, s in zip(one_hot, several) if s)
        assert not any(u for u, s in zip(uniform, several) if s)
        assert not torch.allclose(again, out.synthetics.embeddings)
    # gradients: phase A reaches the embeddings and (through J_gce) the GNN, never lambda's head;
    # phase C trains lambda's head, and the propagation only when there is a layer between it and lambda
    model.train()
    zz = z.clone().requires_grad_(True)
    model.metric_losses(zz, y)["total"].backward()
    assert zz.grad.abs().sum() > 0
    assert model.generator.lambda_head.linear.weight.grad is None
    assert model.generator.node_head.linear.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    model.generator_losses(zz, y)["total"].backward()
    assert model.generator.lambda_head.linear.weight.grad.abs().sum() > 0
    prop_grads = [p.grad for p in model.generator.propagation.parameters()]
    if kwargs.get("num_layers") == 0:
        assert all(g is None for g in prop_grads)
    else:
        assert sum(g.abs().sum() for g in prop_grads if g is not None) > 0


def test_seeded_runs_are_deterministic_on_cpu():
    z, y = _batch()
    results = []
    for _ in range(2):
        torch.manual_seed(5)
        model = gca.GCAHNG(16, 10, num_layers=1).train()
        gen = torch.Generator().manual_seed(1)
        results.append(model.generator_losses(z, y, generator=gen)["total"].item())
    assert results[0] == results[1]


def test_bfloat16_autocast_on_cpu():
    z, y = _batch()
    model = gca.GCAHNG(16, 10, num_layers=1, dropout=0.0)
    seen = {}
    model.generator.propagation.input_proj.register_forward_hook(lambda m, i, o: seen.update(gnn=o.dtype))
    model.generator.lambda_head.register_forward_hook(lambda m, i, o: seen.update(lam=o.dtype))
    runs = {}
    for amp in (False, True):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            a = model.metric_losses(z, y, generator=torch.Generator().manual_seed(1))["total"]
            c = model.generator_losses(z, y, generator=torch.Generator().manual_seed(1))["total"]
        (a + c).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        runs[amp] = (a.detach(), c.detach(), grads, dict(seen))
    (a32, c32, g32, seen32), (a16, c16, g16, seen16) = runs[False], runs[True]
    # the GNN really ran in bfloat16 under autocast (and in float32 without it) ...
    assert seen32 == {"gnn": torch.float32, "lam": torch.float32}
    assert seen16 == {"gnn": torch.bfloat16, "lam": torch.bfloat16}
    # ... while the losses and the parameter gradients are float32
    assert a16.dtype == c16.dtype == g16.dtype == torch.float32
    # and the results are the float32 ones up to bfloat16 rounding, not bit-identical
    assert a16.item() != a32.item() and c16.item() != c32.item()
    torch.testing.assert_close(a16, a32, rtol=1e-2, atol=0.0)
    torch.testing.assert_close(c16, c32, rtol=1e-2, atol=0.0)
    assert not torch.equal(g16, g32)
    assert ((g16 - g32).norm() / g32.norm()).item() < 0.1


@pytest.mark.parametrize("z, y, exc, match", [
    (torch.randn(6, 16), torch.zeros(6, dtype=torch.long), ValueError, "1 class"),
    (torch.randn(6, 16), torch.arange(6).float(), TypeError, "integer"),
    (torch.randn(6, 16), torch.arange(5), ValueError, "differ in length"),
    (torch.randn(6, 12), torch.arange(6), ValueError, "D=12"),
    (torch.randn(6, 16), torch.arange(6) + 8, ValueError, r"lie in \[0, 10\)"),
    (torch.full((6, 16), float("nan")), torch.arange(6), ValueError, "NaN"),
])
def test_bad_input_is_named(z, y, exc, match):
    with pytest.raises(exc, match=match):
        gca.GCAHNG(16, 10, num_layers=1).metric_losses(z, y)


def test_heads_must_divide_dimension():
    with pytest.raises(ValueError, match="divisible by heads"):
        gca.GCAHNG(18, 10, heads=4)
