import pytest
import torch

from gca.graph import build_batch_graph
from gca.nn import GCANodeConv
from gca.testing.dense import dense_correlation, dense_node_update


def _graph(n=12, d=16, classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    y[:classes] = torch.arange(classes)
    return z, y, build_batch_graph(z, y)


def test_shapes_and_attention_mask():
    z, y, g = _graph()
    conv = GCANodeConv(16, heads=4).double()
    out, (edge_index, alpha) = conv(g.x, g.edge_index, g.edge_attr, g.same_class, return_attention_weights=True)
    assert out.shape == (12, 16)
    assert edge_index is g.edge_index
    assert alpha.shape == (g.edge_index.shape[1], 4)
    assert torch.all(alpha[g.same_class] == 0)        # self-loops and same-class pairs get nothing
    assert torch.all(alpha[~g.same_class] > 0)
    sums = torch.zeros(12, 4, dtype=alpha.dtype).index_add_(0, g.edge_index[1], alpha)
    assert torch.all(sums < 1)                          # the implicit zero logit keeps some mass


def test_plain_softmax_sums_to_one():
    z, y, g = _graph()
    conv = GCANodeConv(16, heads=2, zero_logit=False).double()
    _, (_, alpha) = conv(g.x, g.edge_index, g.edge_attr, g.same_class, return_attention_weights=True)
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


@pytest.mark.parametrize("edge_aggr", ["sum", "mean"])
def test_sparse_matches_dense_on_a_knn_graph(edge_aggr):
    """Unequal in-degrees: the mean of the edge-to-node message divides by each node's own in-degree."""
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(12, 16, generator=gen, dtype=torch.float64)
    y = torch.arange(12) % 4
    g = build_batch_graph(z, y, edges="knn", k=3)
    edge_index = g.edge_index.flip(0)           # reversed, so that the in-degrees differ
    assert torch.bincount(edge_index[1]).unique().numel() > 1
    conv = GCANodeConv(16, heads=4, edge_aggr=edge_aggr).double()
    sparse = conv(g.x, edge_index, g.edge_attr, g.same_class)
    src, dst = edge_index
    adjacency = torch.zeros(12, 12, dtype=torch.bool)
    adjacency[src, dst] = True
    edges = torch.zeros(12, 12, 16, dtype=torch.float64)
    edges[src, dst] = g.edge_attr
    dense = dense_node_update(conv, g.x, edges, adjacency, y[:, None] == y[None, :])
    torch.testing.assert_close(sparse, dense)


def test_attention_and_edge_messages_go_through_propagate():
    z, y, g = _graph()
    conv = GCANodeConv(16, heads=4, edge_aggr="mean").double()
    seen = []
    for module in (conv, conv.edge_messages):
        module.register_propagate_forward_hook(lambda mod, inputs, out: seen.append((type(mod).__name__, out.shape)))
    conv(g.x, g.edge_index, g.edge_attr, g.same_class)
    assert seen == [("GCANodeConv", (12, 4, 4)), ("EdgeMessageAggregation", (12, 16))]
    assert conv.edge_messages.aggr == "mean" and list(conv.edge_messages.parameters()) == []


def test_attention_weights_are_returned_before_dropout():
    z, y, g = _graph()
    conv = GCANodeConv(16, heads=4, dropout=0.5).double().train()
    torch.manual_seed(0)
    out, (_, alpha) = conv(g.x, g.edge_index, g.edge_attr, g.same_class, return_attention_weights=True)
    _, (_, alpha_eval) = conv.eval()(g.x, g.edge_index, g.edge_attr, g.same_class, return_attention_weights=True)
    torch.testing.assert_close(alpha, alpha_eval)
    assert not torch.allclose(out, conv(g.x, g.edge_index, g.edge_attr, g.same_class))


@pytest.mark.parametrize("edge_aggr", ["sum", "mean"])
def test_pair_messages_equal_the_directed_edge_messages(edge_aggr):
    """With one state per unordered pair, the edge-to-node message runs per pair: same output and gradients."""
    from gca.nn.propagation import symmetric_pairs
    z, y, g = _graph()
    conv = GCANodeConv(16, heads=4, edge_aggr=edge_aggr).double()
    pair_edge, edge_to_pair = symmetric_pairs(g.edge_index, 12)
    pair_states = torch.randn(pair_edge.shape[0], 16, dtype=torch.float64, requires_grad=True)
    directed = conv(g.x, g.edge_index, pair_states[edge_to_pair], g.same_class)
    grad_directed = torch.autograd.grad(directed.square().sum(), [pair_states, *conv.parameters()])
    paired = conv(g.x, g.edge_index, pair_states, g.same_class, pairs=(g.edge_index[:, pair_edge], edge_to_pair))
    grad_paired = torch.autograd.grad(paired.square().sum(), [pair_states, *conv.parameters()])
    torch.testing.assert_close(paired, directed)
    for a, b in zip(grad_paired, grad_directed):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("level", ["gathers", True])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_recomputed_attention_equals_the_stored_one(dropout, level):
    """recompute=True (per-edge gathers redone in backward) against the plain path, dropout masks included."""
    z, y, g = _graph()
    plain = GCANodeConv(16, heads=4, dropout=dropout).double().train()
    lean = GCANodeConv(16, heads=4, dropout=dropout, recompute=level).double().train()
    lean.load_state_dict(plain.state_dict())
    results = []
    for conv in (plain, lean):
        torch.manual_seed(7)
        x, e = g.x.clone().requires_grad_(), g.edge_attr.clone().requires_grad_()
        out = conv(x, g.edge_index, e, g.same_class)
        results.append((out, torch.autograd.grad(out.square().sum(), [x, e, *conv.parameters()])))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=0)
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b)
