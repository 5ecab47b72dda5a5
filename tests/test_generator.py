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
