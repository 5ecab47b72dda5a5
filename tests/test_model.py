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
    assert model.propagation.layers[0].node.query.weight.grad.abs().sum() > 0


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


@pytest.mark.parametrize("kwargs", [dict(num_layers=0), dict(per_channel=False), dict(negatives_per_class="one"),
                                    dict(edges="knn", k=5), dict(mixing="sequential"), dict(mixing="dirichlet")])
def test_variants_run(kwargs):
    z, y = _batch()
    model = gca.GCAHNG(16, 10, **kwargs).train()
    zz = z.clone().requires_grad_(True)
    model.metric_losses(zz, y)["total"].backward()
    model.generator_losses(zz, y)["total"].backward()


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
    model = gca.GCAHNG(16, 10, num_layers=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = model.metric_losses(z, y)["total"]
        c = model.generator_losses(z, y)["total"]
    assert torch.isfinite(a) and torch.isfinite(c)
    (a + c).backward()


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
