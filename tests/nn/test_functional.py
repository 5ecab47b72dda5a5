"""gca.nn.functional.norm_act_linear against the composition it stands for."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gca.nn.functional import norm_act_linear


def _modules(features=12, out=5, affine=True, bias=True):
    torch.manual_seed(0)
    norm = nn.LayerNorm(features, elementwise_affine=affine).double()
    linear = nn.Linear(features, out, bias=bias).double()
    if affine:
        with torch.no_grad():   # away from the default 1 / 0, so a gradient routed to the wrong one shows
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    return norm, linear


def _grads(fn, hidden, modules):
    hidden = hidden.clone().requires_grad_(True)
    out = fn(hidden)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    params = [p for m in modules for p in m.parameters()]
    grads = torch.autograd.grad((out * weight).sum(), [hidden] + params)
    return out, grads


@pytest.mark.parametrize("affine, bias", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("chunk_rows", [None, 1, 4, 21])
def test_values_and_gradients_equal_the_composition(affine, bias, chunk_rows):
    """In one block and in blocks of rows (4 does not divide the 21 rows)."""
    norm, linear = _modules(affine=affine, bias=bias)
    hidden = torch.randn(3, 7, 12, dtype=torch.double)
    ref_out, ref = _grads(lambda h: linear(norm(F.gelu(h))), hidden, (norm, linear))
    out, got = _grads(lambda h: norm_act_linear(h, norm, linear, chunk_rows=chunk_rows), hidden, (norm, linear))
    torch.testing.assert_close(out, ref_out)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r)


def test_it_passes_gradcheck():
    norm, linear = _modules(features=6, out=3)
    hidden = torch.randn(4, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h: norm_act_linear(h, norm, linear, chunk_rows=3), (hidden,))


def test_it_keeps_only_the_input_for_backward():
    """What it exists for: of the [*, F] activations only the pre-activation is saved (the composition saves
    the GELU and LayerNorm outputs too)."""
    norm, linear = _modules(features=64, out=4)
    hidden = torch.randn(50, 64, dtype=torch.double, requires_grad=True)

    def saved_big(fn):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            fn(hidden).sum()
        return sum(1 for n in sizes if n == hidden.numel())

    assert saved_big(lambda h: norm_act_linear(h, norm, linear)) == 1
    assert saved_big(lambda h: linear(norm(F.gelu(h)))) >= 3


def test_autocast_matches_the_composition_under_autocast():
    norm, linear = _modules(features=16, out=8)
    norm, linear = norm.float(), linear.float()
    hidden = torch.randn(10, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_out, ref = _grads(lambda h: linear(norm(F.gelu(h))), hidden, (norm, linear))
        out, got = _grads(lambda h: norm_act_linear(h, norm, linear, chunk_rows=3), hidden, (norm, linear))
    assert out.dtype == ref_out.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref_out)
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype
        torch.testing.assert_close(g, r, rtol=2e-2, atol=2e-2)
