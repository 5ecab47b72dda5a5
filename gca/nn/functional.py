"""Per-edge normalisations shared by the propagation layers, and a memory-lean feed-forward tail."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import scatter


def masked_edge_softmax(scores: Tensor, index: Tensor, mask: Tensor, num_nodes: int,
                        zero_logit: bool = True) -> Tensor:
    r"""Softmax of edge ``scores`` over the incoming edges of each target, restricted to ``mask``.

    With ``zero_logit`` the normaliser holds one extra logit fixed at zero (METHOD 2.3),

    .. math::
        a_{ij} = \frac{M_{ij} \exp s_{ij}}{1 + \sum_{i'} M_{i'j} \exp s_{i'j}},

    so the weights of a target sum to less than one and a target can attend to nothing. Without it,
    the weights of a target with at least one unmasked edge sum to one, and a target whose edges are
    all masked gets zeros (not NaN).

    Shapes:
        scores ``[E, H]``, index ``[E]`` (the target of each edge), mask ``[E]`` bool -> ``[E, H]``.
    """
    neg_inf = torch.finfo(scores.dtype).min
    masked = scores.masked_fill(~mask.unsqueeze(-1), neg_inf)
    # The shift only stabilises exp(); it cancels out, so it carries no gradient.
    shift = scatter(masked.detach(), index, dim=0, dim_size=num_nodes, reduce="max")
    shift = shift.clamp_min(0.0) if zero_logit else shift.masked_fill(shift <= neg_inf, 0.0)
    weights = (masked - shift[index]).exp() * mask.unsqueeze(-1)
    denom = scatter(weights, index, dim=0, dim_size=num_nodes, reduce="sum")
    if zero_logit:
        denom = denom + (-shift).exp()
    return weights / denom.clamp_min(torch.finfo(scores.dtype).tiny)[index]


class _NormActLinear(torch.autograd.Function):
    """``linear(layer_norm(gelu(hidden)))`` storing only ``hidden`` for the backward pass.

    The GELU and LayerNorm outputs are recomputed there (elementwise work); the matrix product is not, since
    its weight gradient needs only the recomputed LayerNorm output and its input gradient only the weight.
    Under autocast the backward recomputes under the forward's autocast state and does the product's two
    gradients in the dtype the forward product ran in, as autograd's stored path does.
    """

    @staticmethod
    def forward(ctx, hidden, norm_weight, norm_bias, weight, bias, eps):
        device_type = hidden.device.type
        ctx.autocast = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        ctx.eps = eps
        normed = F.layer_norm(F.gelu(hidden), (hidden.shape[-1],), norm_weight, norm_bias, eps)
        out = F.linear(normed, weight, bias)
        ctx.save_for_backward(hidden, norm_weight, norm_bias, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, norm_weight, norm_bias, weight = ctx.saved_tensors
        need_hidden, need_nw, need_nb, need_w, need_b, _ = ctx.needs_input_grad
        leaves = [None if t is None else t.detach().requires_grad_(need) for t, need in
                  ((hidden, need_hidden), (norm_weight, need_nw), (norm_bias, need_nb))]
        enabled, dtype = ctx.autocast
        with torch.enable_grad(), torch.autocast(hidden.device.type, dtype=dtype, enabled=enabled):
            normed = F.layer_norm(F.gelu(leaves[0]), (hidden.shape[-1],), leaves[1], leaves[2], ctx.eps)
        compute = grad_out.dtype
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        grad_weight = grad_bias = None
        if need_w:
            grad_weight = (flat_grad.t() @ normed.detach().reshape(-1, normed.shape[-1]).to(compute)).to(weight.dtype)
        if need_b and ctx.has_bias:
            grad_bias = flat_grad.sum(0).to(weight.dtype)
        wanted = [leaf for leaf in leaves if leaf is not None and leaf.requires_grad]
        grads = iter(())
        if wanted:
            grad_normed = (grad_out @ weight.to(compute)).to(normed.dtype)
            grads = iter(torch.autograd.grad(normed, wanted, grad_normed))
        grad_hidden, grad_nw, grad_nb = (next(grads) if leaf is not None and leaf.requires_grad else None
                                         for leaf in leaves)
        return grad_hidden, grad_nw, grad_nb, grad_weight, grad_bias, None


def norm_act_linear(hidden: Tensor, norm: torch.nn.LayerNorm, linear: torch.nn.Linear) -> Tensor:
    r"""``linear(norm(gelu(hidden)))`` that keeps only ``hidden`` for the backward pass.

    The same values and gradients as the composition (a test checks them), for two ``[*, F]`` activations
    less in memory; the backward pass recomputes the GELU and the LayerNorm (elementwise), not the product.

    Shapes:
        hidden ``[*, F]`` -> ``[*, linear.out_features]``, with ``norm`` over ``F``.
    """
    return _NormActLinear.apply(hidden, norm.weight, norm.bias, linear.weight, linear.bias, norm.eps)
