"""GCAGenerator: the swappable part of GCA-HNG, and the edges its synthetics carry."""
import pytest
import torch

import gca
from gca.losses import diversity_loss
from gca.synthesis import candidate_edges


def _batch(b=24, d=16, classes=8):
    torch.manual_seed(0)
    return torch.randn(b, d), torch.arange(classes).repeat(b // classes)


def test_objective_uses_the_generator_it_is_given():
    generator = gca.GCAGenerator(16, 8, num_layers=1, heads=2, layer="gatv2", edges="knn", k=5)
    model = gca.GCAHNG(16, 8, generator=generator)
    assert model.generator is generator
    assert list(model.generator_parameters()) == [p for p in generator.parameters() if p.requires_grad]
    z, y = _batch()
    assert model(z, y).graph.edge_index.shape[1] == 24 * 5 + 24          # knn edges plus self-loops
    with pytest.raises(ValueError, match="the generator was built for D=16 and 8 classes"):
        gca.GCAHNG(32, 8, generator=generator)


@pytest.mark.parametrize("negatives", ["all", "one"])
def test_synthetics_carry_exactly_the_edges_they_mixed(negatives):
    z, y = _batch()
    generator = gca.GCAGenerator(16, 8, num_layers=1, negatives_per_class=negatives)
    out = generator(z, y, 0.5, generator=torch.Generator().manual_seed(0))
    edge_index, used = out.graph.edge_index, out.synthetics.edge_ids
    candidates = candidate_edges(y, edge_index).nonzero().flatten()
    if negatives == "all":
        assert torch.equal(used.sort().values, candidates)
    else:
        # one edge per (anchor, negative class), so as many edges as synthetics, each a candidate
        pairs = {(int(edge_index[1, e]), int(y[edge_index[0, e]])) for e in used}
        assert len(used) == len(out.synthetics) == len(pairs)
        assert set(used.tolist()) <= set(candidates.tolist())


def test_diversity_loss_reads_the_edges_that_fed_synthesis():
    z, y = _batch()
    model = gca.GCAHNG(16, 8, num_layers=1, negatives_per_class="one", dropout=0.0)
    model.eval()                                   # no schedule updates, no diagnostics
    rng = torch.Generator().manual_seed(3)
    j_div = model.generator_losses(z, y, generator=rng)["diversity"]
    out = model(z, y, generator=torch.Generator().manual_seed(3))
    used = out.synthetics.edge_ids
    expected = diversity_loss(out.lam[used], out.graph.edge_index[1, used], len(y))
    every_candidate = candidate_edges(y, out.graph.edge_index)
    over_all = diversity_loss(out.lam[every_candidate], out.graph.edge_index[1, every_candidate], len(y))
    assert torch.allclose(j_div, expected) and not torch.allclose(j_div, over_all)


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("num_layers", [0, 2])
def test_symmetric_generator_equals_the_directed_one(per_channel, num_layers):
    """One edge state, lambda and edge-to-node message per unordered pair (the fast path) against every
    directed edge (the plain path): lambda, logits, synthetics, BN statistics and gradients."""
    z, y = _batch()
    torch.manual_seed(5)
    fast = gca.GCAGenerator(16, 8, num_layers=num_layers, heads=2, dropout=0.0, per_channel=per_channel,
                            symmetric_edges=True).double()
    plain = gca.GCAGenerator(16, 8, num_layers=num_layers, heads=2, dropout=0.0, per_channel=per_channel,
                             symmetric_edges=False).double()
    plain.load_state_dict(fast.state_dict())
    outs, grads = [], []
    for model in (fast, plain):
        x = z.double().requires_grad_()
        out = model(x, y, 0.5, generator=torch.Generator().manual_seed(0))
        loss = out.synthetics.embeddings.square().sum() + out.node_logits.square().sum() + out.lam.sum()
        grads.append(torch.autograd.grad(loss, [x, *model.parameters_to_train()]))
        outs.append(out)
    torch.testing.assert_close(outs[0].lam, outs[1].lam)
    torch.testing.assert_close(outs[0].edge_states, outs[1].edge_states)
    torch.testing.assert_close(outs[0].node_logits, outs[1].node_logits)
    torch.testing.assert_close(outs[0].synthetics.embeddings, outs[1].synthetics.embeddings)
    assert outs[0].edge_rows.shape[0] == 24 * 25 // 2 and outs[1].edge_rows.shape[0] == 24 * 24
    for a, b in zip(*grads):      # lambda and the synthesis run in float32 (gca.GCAGenerator.propagate)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.lambda_head.norm.running_var, plain.lambda_head.norm.running_var)
