import pytest
import torch

from gca.graph import build_batch_graph
from gca.nn import GCANodeConv
from gca.nn.dense import dense_correlation, dense_node_update


def _graph(n=12, d=16, classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    y[:classes] = torch.arange(classes)
    return z, y, build_batch_graph(z, y)


def test_shapes_and_attention_mask():
    z, y, g = _graph()
    conv = GCANodeConv(16, heads=4).double()
    out, alpha = conv(g.x, g.edge_index, g.edge_attr, g.same_class, return_attention_weights=True)
    assert out.shape == (12, 16)
    assert alpha.shape == (g.edge_index.shape[1], 4)
    assert torch.all(alpha[g.same_class] == 0)        # self-loops and same-class pairs get nothing
    assert torch.all(alpha[~g.same_class] > 0)
    sums = torch.zeros(12, 4, dtype=alpha.dtype).index_add_(0, g.edge_index[1], alpha)
    assert torch.all(sums < 1)                          # the implicit zero logit keeps some mass


def test_plain_softmax_sums_to_one():
    z, y, g = _graph()
    conv = GCANodeConv(16, heads=2, zero_logit=False).double()
    _, alpha = conv(g.x, g.edge_index, g.edge_attr, g.same_class, return_attention_weights=True)
    sums = torch.zeros(12, 2, dtype=alpha.dtype).index_add_(0, g.edge_index[1], alpha)
    assert torch.allclose(sums, torch.ones_like(sums))


@pytest.mark.parametrize("zero_logit", [True, False])
@pytest.mark.parametrize("edge_aggr", ["sum", "mean"])
def test_sparse_matches_dense(zero_logit, edge_aggr):
    z, y, g = _graph()
    conv = GCANodeConv(16, heads=4, zero_logit=zero_logit, edge_aggr=edge_aggr).double()
    sparse = conv(g.x, g.edge_index, g.edge_attr, g.same_class)
    adjacency = torch.ones(12, 12, dtype=torch.bool)
    dense = dense_node_update(conv, g.x, dense_correlation(z), adjacency, y[:, None] == y[None, :])
    torch.testing.assert_close(sparse, dense)


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match="divisible"):
        GCANodeConv(10, heads=4)


def test_reset_parameters_changes_output():
    z, y, g = _graph()
    conv = GCANodeConv(16, heads=4).double()
    before = conv(g.x, g.edge_index, g.edge_attr, g.same_class)
    conv.reset_parameters()
    after = conv(g.x, g.edge_index, g.edge_attr, g.same_class)
    assert not torch.allclose(before, after)
    assert "GCANodeConv(16, heads=4" in repr(conv)


def test_compile_matches_eager():
    z, y, g = _graph()
    z, g.x, g.edge_attr = z.float(), g.x.float(), g.edge_attr.float()
    conv = GCANodeConv(16, heads=4).eval()
    expected = conv(g.x, g.edge_index, g.edge_attr, g.same_class)
    compiled = torch.compile(conv)
    torch.testing.assert_close(compiled(g.x, g.edge_index, g.edge_attr, g.same_class), expected,
                               rtol=1e-4, atol=1e-4)
