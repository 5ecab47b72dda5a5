import pytest
import torch

from gca.graph import build_batch_graph
from gca.nn import GCAEdgeConv
from gca.testing.dense import dense_correlation, dense_edge_update


def _graph(n=10, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.arange(n) % 3
    return z, y, build_batch_graph(z, y)


def test_shapes():
    z, y, g = _graph()
    out = GCAEdgeConv(16).double().eval()(g.x, g.edge_index, g.edge_attr)
    assert out.shape == g.edge_attr.shape


def test_fast_path_matches_plain_path():
    z, y, g = _graph()
    fast = GCAEdgeConv(16, fast=True).double().eval()
    plain = GCAEdgeConv(16, fast=False).double().eval()
    plain.load_state_dict(fast.state_dict())
    torch.testing.assert_close(fast(g.x, g.edge_index, g.edge_attr), plain(g.x, g.edge_index, g.edge_attr))


def test_sparse_matches_dense():
    z, y, g = _graph()
    conv = GCAEdgeConv(16).double().eval()
    sparse = conv(g.x, g.edge_index, g.edge_attr)
    dense = dense_edge_update(conv, g.x, dense_correlation(z))
    torch.testing.assert_close(sparse, dense[g.edge_index[0], g.edge_index[1]])


def test_symmetric_edges_stay_symmetric():
    z, y, g = _graph()
    out = GCAEdgeConv(16).double().eval()(g.x, g.edge_index, g.edge_attr)
    n = z.shape[0]
    dense = out.view(n, n, -1)                 # full graph is source-major: id = i * n + j
    torch.testing.assert_close(dense, dense.transpose(0, 1))


def test_dropout_only_in_training():
    z, y, g = _graph()
    conv = GCAEdgeConv(16, dropout=0.5).double()
    conv.eval()
    a = conv(g.x, g.edge_index, g.edge_attr)
    b = conv(g.x, g.edge_index, g.edge_attr)
    torch.testing.assert_close(a, b)
    conv.train()
    assert not torch.allclose(conv(g.x, g.edge_index, g.edge_attr), a)


def test_compile_matches_eager():
    z, y, g = _graph()
    x, e = g.x.float(), g.edge_attr.float()
    conv = GCAEdgeConv(16).eval()
    expected = conv(x, g.edge_index, e)
    torch.testing.assert_close(torch.compile(conv)(x, g.edge_index, e), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("level", ["gathers", "all", True])
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_recomputed_edge_update_equals_the_stored_one(fast, dropout, level):
    """recompute=True (gathers and feed-forward activations redone in backward) against the plain path:
    outputs and every gradient, with the same dropout mask."""
    z, y, g = _graph()
    plain = GCAEdgeConv(16, dropout=dropout, fast=fast).double().train()
    lean = GCAEdgeConv(16, dropout=dropout, fast=fast, recompute=level).double().train()
    lean.load_state_dict(plain.state_dict())
    upstream = torch.randn(g.edge_attr.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    results = []
    for conv in (plain, lean):
        torch.manual_seed(7)
        x, e = g.x.clone().requires_grad_(), g.edge_attr.clone().requires_grad_()
        out = conv(x, g.edge_index, e)
        results.append((out, torch.autograd.grad((out * upstream).sum(), [x, e, *conv.parameters()])))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=0)
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b)
    assert f"recompute='{'all' if level is True else level}'" in repr(lean)


def test_recompute_level_is_checked():
    assert GCAEdgeConv(8, recompute=False).recompute == "none"
    with pytest.raises(ValueError, match="recompute must be true, false or one of .*got 'some'"):
        GCAEdgeConv(8, recompute="some")
