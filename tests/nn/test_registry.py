import pytest
import torch

import gca
from gca.nn import PyGConvBlock, create_layer, list_layers, register_layer


def _graph(n=12, d=16):
    z = torch.randn(n, d)
    y = torch.arange(n) % 4
    return gca.build_batch_graph(z, y)


def test_at_least_three_pyg_layers_besides_gca():
    names = list_layers()
    assert "gca" in names
    assert len({"gatv2", "transformer", "gine", "gen"} & set(names)) >= 3


@pytest.mark.parametrize("name", list_layers())
def test_every_layer_runs_forward_backward_and_depends_on_its_parameters(name):
    g = _graph()
    block = create_layer(name, 16, heads=4, dropout=0.0).eval()
    x = g.x.clone().requires_grad_(True)
    h, e = block(x, g.edge_index, g.edge_attr, g.same_class)
    assert h.shape == (12, 16) and e.shape == g.edge_attr.shape
    (h.sum() + e.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    h2, e2 = block(g.x, g.edge_index, g.edge_attr, g.same_class)
    assert not torch.allclose(h, h2) and not torch.allclose(e, e2)


def test_register_a_custom_layer():
    from torch_geometric.nn import GATConv

    @register_layer("test_gat", overwrite=True)
    def _gat(channels, heads, dropout, **kwargs):
        conv = GATConv(channels, channels // heads, heads=heads, edge_dim=channels, add_self_loops=False)
        return PyGConvBlock(conv, channels, dropout, **kwargs)

    assert "test_gat" in list_layers()
    model = gca.GCAHNG(16, 5, num_layers=1, layer="test_gat")
    z, y = torch.randn(10, 16), torch.arange(10) % 5
    model.generator_losses(z, y)["total"].backward()
    with pytest.raises(ValueError, match="already registered"):
        register_layer("test_gat", _gat)


def test_unknown_layer_and_bad_heads():
    with pytest.raises(ValueError, match="unknown layer type 'nope'"):
        create_layer("nope", 16)
    with pytest.raises(ValueError, match="divisible"):
        create_layer("gatv2", 18, heads=4)
