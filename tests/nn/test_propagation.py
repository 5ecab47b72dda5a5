"""GraphPropagation: the stack of blocks against the dense reference, and symmetric pair propagation."""
import pytest
import torch

import gca
from gca.nn import GraphPropagation, list_layers
from gca.nn.propagation import symmetric_pairs
from gca.testing.dense import dense_propagation


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_stack_matches_dense_reference(layers):
    torch.manual_seed(1)
    z = torch.randn(9, 16, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])
    prop = GraphPropagation(16, num_layers=layers, heads=4).double().eval()
    g = gca.build_batch_graph(z, y)
    h, e = prop(g.x, g.edge_index, g.edge_attr, g.same_class)
    h_ref, e_ref = dense_propagation(prop, z, y)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(e, e_ref[g.edge_index[0], g.edge_index[1]])


@pytest.mark.parametrize("name", list_layers())
def test_symmetric_pair_propagation_equals_directed(name):
    torch.manual_seed(2)
    z = torch.randn(10, 16, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3])
    prop = GraphPropagation(16, num_layers=2, heads=4, layer=name).double().eval()
    if not prop.supports_pairs:
        pytest.skip(f"{name} has no pair mode")
    for loops in (True, False):
        g = gca.build_batch_graph(z, y, self_loops=loops)
        h, e = prop(g.x, g.edge_index, g.edge_attr, g.same_class)
        h_sym, e_sym = prop(g.x, g.edge_index, g.edge_attr, g.same_class, symmetric=True)
        torch.testing.assert_close(h_sym, h)
        torch.testing.assert_close(e_sym, e)


def test_symmetric_propagation_rejects_one_way_edges():
    z, y = torch.randn(8, 16), torch.arange(8) % 3
    g = gca.build_batch_graph(z, y, edges="knn", k=2)
    prop = GraphPropagation(16, num_layers=1, heads=4)
    with pytest.raises(ValueError, match="reverse of every edge"):
        prop(g.x, g.edge_index, g.edge_attr, g.same_class, symmetric=True)
    with pytest.raises(ValueError, match="symmetric_edges needs edges='full'"):
        gca.GCAHNG(16, 5, edges="knn", k=3, symmetric_edges=True)


def test_heads_must_divide_channels_even_without_layers():
    for layers in (0, 2):
        with pytest.raises(ValueError, match=r"channels \(18\) must be divisible by heads \(4\)"):
            GraphPropagation(18, num_layers=layers, heads=4)


def test_symmetric_pairs_keep_one_edge_per_unordered_pair():
    g = gca.build_batch_graph(torch.randn(5, 16), torch.arange(5) % 2)
    pair_edge, edge_to_pair = symmetric_pairs(g.edge_index, 5)
    src, dst = g.edge_index[:, pair_edge]
    assert len(pair_edge) == 5 * 6 // 2 and torch.all(src <= dst)
    lo, hi = g.edge_index.min(0).values, g.edge_index.max(0).values
    torch.testing.assert_close(g.edge_index[:, pair_edge][:, edge_to_pair], torch.stack([lo, hi]))
