"""Per-edge normalisations shared by the propagation layers, and a memory-lean feed-forward tail."""
from __future__ import annotations

from typing import Optional

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


#: Rows of the ``[*, F]`` activations handled at once by :func:`norm_act_linear`: about 16 MiB of float32 per
#: temporary, so that its forward and backward never hold a whole ``[E, 4D]`` GELU or LayerNorm output.
NORM_ACT_CHUNK_ELEMENTS = 2 ** 22


class _NormActLinear(torch.autograd.Function):
    """``linear(layer_norm(gelu(hidden)))`` storing only ``hidden`` for the backward pass.

    The GELU and LayerNorm outputs are recomputed there (elementwise work), block of rows by block of rows;
    the matrix product is not, since its weight gradient needs only the recomputed LayerNorm output and its
    input gradient only the weight. Under autocast the backward recomputes under the forward's autocast state
    and does the product's two gradients in the dtype the forward product ran in, as autograd's stored path
    does (the weight gradients are summed over the blocks in the parameters' dtype).
    """

    @staticmethod
    def _normed(hidden, norm_weight, norm_bias, eps):
        return F.layer_norm(F.gelu(hidden), (hidden.shape[-1],), norm_weight, norm_bias, eps)

    @staticmethod
    def forward(ctx, hidden, norm_weight, norm_bias, weight, bias, eps, chunk_rows):
        device_type = hidden.device.type
        ctx.autocast = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        ctx.eps, ctx.chunk_rows, ctx.has_bias = eps, chunk_rows, bias is not None
        rows = hidden.reshape(-1, hidden.shape[-1])
        out = torch.cat([F.linear(_NormActLinear._normed(block, norm_weight, norm_bias, eps), weight, bias)
                         for block in rows.split(chunk_rows)])
        ctx.save_for_backward(hidden, norm_weight, norm_bias, weight)
        return out.reshape(*hidden.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        hidden, norm_weight, norm_bias, weight = ctx.saved_tensors
        need_hidden, need_nw, need_nb, need_w, need_b = ctx.needs_input_grad[:5]
        enabled, dtype = ctx.autocast
        compute = grad_out.dtype
        params = [None if t is None else t.detach().requires_grad_(need) for t, need in
                  ((norm_weight, need_nw), (norm_bias, need_nb))]
        rows = hidden.detach().reshape(-1, hidden.shape[-1])
        grad_rows = grad_out.reshape(-1, grad_out.shape[-1])
        grad_hidden = torch.empty_like(rows) if need_hidden else None
        grad_weight = torch.zeros_like(weight) if need_w else None
        grad_bias = grad_rows.sum(0).to(weight.dtype) if need_b and ctx.has_bias else None
        grad_params = [None if p is None or not p.requires_grad else torch.zeros_like(p) for p in params]
        weight_c = weight.to(compute)
        start = 0
        for block, grad_block in zip(rows.split(ctx.chunk_rows), grad_rows.split(ctx.chunk_rows)):
            leaf = block.requires_grad_(need_hidden)
            with torch.enable_grad(), torch.autocast(hidden.device.type, dtype=dtype, enabled=enabled):
                normed = _NormActLinear._normed(leaf, params[0], params[1], ctx.eps)
            if need_w:
                grad_weight += (grad_block.t() @ normed.detach().to(compute)).to(weight.dtype)
            wanted = [t for t in [leaf] + params if t is not None and t.requires_grad]
            if wanted:
                grads = iter(torch.autograd.grad(normed, wanted, (grad_block @ weight_c).to(normed.dtype)))
                if need_hidden:
                    grad_hidden[start:start + len(block)] = next(grads)
                for i, p in enumerate(params):
                    if grad_params[i] is not None:
                        grad_params[i] += next(grads)
            start += len(block)
        if grad_hidden is not None:
            grad_hidden = grad_hidden.reshape(hidden.shape)
        return grad_hidden, grad_params[0], grad_params[1], grad_weight, grad_bias, None, None


def norm_act_linear(hidden: Tensor, norm: torch.nn.LayerNorm, linear: torch.nn.Linear,
                    chunk_rows: Optional[int] = None) -> Tensor:
    r"""``linear(norm(gelu(hidden)))`` that keeps only ``hidden`` for the backward pass.

    The same values and gradients as the composition (a test checks them), for two ``[*, F]`` activations
    less in memory; the backward pass recomputes the GELU and the LayerNorm (elementwise), not the product.
    Both passes work on blocks of ``chunk_rows`` rows (default: :data:`NORM_ACT_CHUNK_ELEMENTS` elements), so
    their temporaries stay small too.

    Shapes:
        hidden ``[*, F]`` -> ``[*, linear.out_features]``, with ``norm`` over ``F``.
    """
    chunk_rows = max(1, NORM_ACT_CHUNK_ELEMENTS // hidden.shape[-1]) if chunk_rows is None else chunk_rows
    return _NormActLinear.apply(hidden, norm.weight, norm.bias, linear.weight, linear.bias, norm.eps, chunk_rows)
