r"""Channel-adaptive, hardness-adaptive synthesis of negatives (METHOD 2.4, "CACAI").

For an anchor :math:`a` with mean distance :math:`d^+` to its positives, and a candidate negative
:math:`n` of another class at distance :math:`d^- = \lVert z_a - z_n\rVert`:

.. math::
    \zeta = \begin{cases}
        z_a + \dfrac{d^+ + (d^- - d^+)\,\gamma\,\lambda_{n\to a}}{d^-} \odot (z_n - z_a) & d^- > d^+ \\
        z_n & \text{otherwise (already harder than the positive)}
    \end{cases}

with :math:`\gamma = \exp(-\alpha/\bar J_m)` and :math:`\lambda \in (0,1)^D` the per-channel weights the
generator reads from the edge :math:`(n \to a)`. The candidates of one negative class are then mixed
with random convex weights drawn **per (anchor, class)**, giving one synthetic negative per anchor and
negative class. With :math:`\lambda \equiv 1`, one sample per class and no mixing this is HDML's
interpolation (Zheng et al., CVPR 2019).

Differences from the authors' code, on purpose:

* positives come from the labels, never from the position in the batch: :math:`d^+` is the mean distance
  to every other sample of the anchor's class (for K = 2 this is exactly the authors' positive);
* the mixing weights are drawn per (anchor, class), not one scalar shared by the whole batch (D5); the
  ``"sequential"`` scheme has the authors' distribution of weights, with the samples taken in random
  order so that no position is favoured;
* no same-class "synthetic" is made: every synthetic carries the class of the negative it came from,
  which is never its anchor's class;
* an anchor whose class has no other sample in the batch has no positive and gets no synthetic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint
from torch_geometric.utils import scatter

from gca._checks import check_batch_structure, check_choice, check_edge_index

MIXING_MODES = ("sequential", "dirichlet", "mean")
NEGATIVES_PER_CLASS = ("all", "one")


@dataclass
class Synthetics:
    """Synthetic negatives: one row per (anchor, negative class), sorted by anchor then class.

    Attributes:
        embeddings: ``[S, D]`` synthetic negatives.
        labels: ``[S]`` class of the negatives each row was made from (never its anchor's class).
        anchor_index: ``[S]`` index in the batch of the anchor each row belongs to.
        edge_ids: ``[M]`` the edges whose candidates were mixed into the rows (ids into the graph's
            ``edge_index``; with ``negatives_per_class="one"`` only the chosen ones), for losses that read the
            generator's output on exactly those edges, as a miner hands its tuples to a loss; ``None`` when
            the rows were not made by :func:`synthesize_negatives`.
    """

    embeddings: Tensor
    labels: Tensor
    anchor_index: Tensor
    edge_ids: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.embeddings.shape[0]


def _distance(a: Tensor, b: Tensor) -> Tensor:
    # smooth at zero (duplicate samples get a zero gradient, not NaN) and exact to ~1e-12 elsewhere
    return ((a - b).pow(2).sum(-1) + 1e-12).sqrt()


def positive_distance(embeddings: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
    """Mean Euclidean distance of each sample to the other samples of its class.

    Returns ``(distance [B], has_positive [B])``; the distance is 0 where there is no positive.
    """
    (anchor, positive), has_positive = _positive_pairs(labels)
    dist = _distance(embeddings[anchor], embeddings[positive])
    count = torch.bincount(anchor, minlength=labels.shape[0])
    total = scatter(dist, anchor, dim=0, dim_size=embeddings.shape[0], reduce="sum")
    return total / count.clamp_min(1), has_positive


def _positive_pairs(labels: Tensor) -> Tuple[Tuple[Tensor, Tensor], Tensor]:
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    same.fill_diagonal_(False)
    return same.nonzero(as_tuple=True), same.any(1)


def hardness_interpolation(anchors: Tensor, negatives: Tensor, d_pos: Tensor,
                           gamma: Union[float, Tensor], lam: Optional[Tensor] = None,
                           anchor_gradient: bool = True) -> Tensor:
    """Move each negative towards its anchor per channel; negatives already harder stay put.

    With ``anchor_gradient=False`` the result is ``sg(a) + sg(r) * (n - sg(a))``: the same values, but a loss
    on it sends gradient only to the negatives ``n`` (``r`` per channel), none to the anchors (see
    :func:`synthesize_negatives`).

    Shapes:
        anchors, negatives ``[M, D]``, d_pos ``[M]``, lam ``[M, D]``, ``[M, 1]`` or ``None`` (= 1)
        -> ``[M, D]``
    """
    d_neg = _distance(anchors, negatives)
    scale = gamma if lam is None else gamma * lam
    ratio = (d_pos.unsqueeze(-1) + (d_neg - d_pos).unsqueeze(-1) * scale) / d_neg.unsqueeze(-1)
    if not anchor_gradient:
        anchors, ratio = anchors.detach(), ratio.detach()
    moved = anchors + ratio * (negatives - anchors)
    return torch.where((d_neg > d_pos).unsqueeze(-1), moved, negatives)


def mixing_weights(group: Tensor, num_groups: int, mode: str = "sequential",
                   generator: Optional[torch.Generator] = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Random convex weights over the members of each group (members of one group sum to 1).

    ``"sequential"``: the authors' scheme ``n <- zeta_t + u_t (n - zeta_t)`` with ``u_t ~ U(0, 1)``,
    over the members in random order (member ``t`` gets ``(1 - u_t) prod_{s > t} u_s``, the first one
    ``prod_{s > 0} u_s``); ``"dirichlet"``: a flat Dirichlet; ``"mean"``: equal weights.

    Shapes:
        group ``[M]`` (group id of each member, in ``[0, num_groups)``) -> ``[M]`` of ``dtype``
    """
    if mode not in MIXING_MODES:
        raise ValueError(f"mixing must be one of {MIXING_MODES}, got {mode!r}")
    m, device = group.shape[0], group.device
    if mode == "mean":
        counts = torch.bincount(group, minlength=num_groups).to(dtype)
        return 1.0 / counts[group]
    u = torch.rand(m, generator=generator, device=device, dtype=dtype).clamp(1e-12, 1 - 1e-7)
    if mode == "dirichlet":
        e = -torch.log(u)
        return e / scatter(e, group, dim=0, dim_size=num_groups, reduce="sum")[group]
    order_key = torch.rand(m, generator=generator, device=device)
    order = torch.argsort(order_key)
    order = order[torch.argsort(group[order], stable=True)]        # by group, random within a group
    g, u_sorted = group[order], u[order]
    first = torch.ones_like(g, dtype=torch.bool)
    first[1:] = g[1:] != g[:-1]
    log_u = torch.log(u_sorted).double()                         # float64: the cumsum spans the batch
    inclusive = torch.cumsum(log_u, 0)
    group_offset = torch.zeros(num_groups, dtype=log_u.dtype, device=device)
    group_offset[g[first]] = (inclusive - log_u)[first]
    group_total = scatter(log_u, g, dim=0, dim_size=num_groups, reduce="sum")
    suffix = group_total[g] - (inclusive - group_offset[g])      # sum of log u over later members
    w_sorted = torch.where(first, torch.ones_like(u_sorted), 1 - u_sorted) * suffix.exp().to(dtype)
    weights = torch.empty_like(w_sorted)
    weights[order] = w_sorted
    return weights


def pick_one_per_group(group: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Indices of one uniformly chosen member of every group (sorted by group)."""
    order = torch.argsort(torch.rand(group.shape[0], generator=generator, device=group.device))
    order = order[torch.argsort(group[order], stable=True)]
    g = group[order]
    first = torch.ones_like(g, dtype=torch.bool)
    first[1:] = g[1:] != g[:-1]
    return order[first]


def candidate_edges(labels: Tensor, edge_index: Tensor, num_anchors: Optional[int] = None) -> Tensor:
    """Boolean ``[E]`` mask of the edges that feed synthesis: source and target (the anchor) differ in
    class, and the anchor has a positive in the batch.

    With ``num_anchors``, only the first ``num_anchors`` nodes (the batch) are anchors and positives; the
    others (cross-batch memory, :mod:`gca.memory`) are candidate negatives only.
    """
    batch = labels.shape[0] if num_anchors is None else num_anchors
    _, has_positive = _positive_pairs(labels[:batch])
    if batch < labels.shape[0]:
        has_positive = torch.cat([has_positive, has_positive.new_zeros(labels.shape[0] - batch)])
    return (labels[edge_index[0]] != labels[edge_index[1]]) & has_positive[edge_index[1]]


def batch_positive_distance(embeddings: Tensor, labels: Tensor, num_anchors: Optional[int] = None) -> Tensor:
    """:func:`positive_distance` of the first ``num_anchors`` rows (the batch) among themselves, 0 for the
    rest (cross-batch memory entries, which are never anchors)."""
    batch = labels.shape[0] if num_anchors is None else num_anchors
    d_pos, _ = positive_distance(embeddings[:batch], labels[:batch])
    if batch < labels.shape[0]:
        d_pos = torch.cat([d_pos, d_pos.new_zeros(labels.shape[0] - batch)])
    return d_pos


def _check_synthesis_inputs(embeddings: Tensor, labels: Tensor, edge_index: Tensor, lam: Optional[Tensor],
                            gamma: Union[float, Tensor]) -> None:
    # shapes, dtypes and devices only: the callers already checked the values (NaN, label range), and a
    # data-dependent check here would cost a device sync every step
    check_batch_structure(embeddings, labels)
    check_edge_index(edge_index, embeddings.shape[0], embeddings.device)
    if lam is not None:
        if not isinstance(lam, Tensor):
            raise TypeError(f"lam must be a torch.Tensor or None, got {type(lam).__name__}")
        dim = embeddings.shape[1]
        if lam.dim() != 2 or lam.shape[0] != edge_index.shape[1] or lam.shape[1] not in (1, dim):
            raise ValueError(f"lam must have shape [E, D] = [{edge_index.shape[1]}, {dim}] or [E, 1], "
                             f"got {tuple(lam.shape)}")
    if isinstance(gamma, Tensor):
        if gamma.numel() != 1:
            raise ValueError(f"gamma must be a number or a 0-dim tensor, got shape {tuple(gamma.shape)}")
    elif isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise TypeError(f"gamma must be a number in [0, 1], got {gamma!r}")
    elif not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")


def _interpolate_and_mix(work: Tensor, lam: Optional[Tensor], d_pos: Tensor, gamma: Union[float, Tensor],
                         anchor: Tensor, negative: Tensor, cand_edges: Tensor, group: Tensor, weights: Tensor,
                         num_groups: int, anchor_gradient: bool) -> Tensor:
    """The plain path: interpolation and mixing as autograd composes them (the reference of
    :class:`_InterpolateAndMix`)."""
    lam_c = None if lam is None else lam[cand_edges].to(work.dtype)
    candidates = hardness_interpolation(work[anchor], work[negative], d_pos[anchor], gamma, lam_c, anchor_gradient)
    return scatter(weights.unsqueeze(-1) * candidates, group, dim=0, dim_size=num_groups, reduce="sum")


class _InterpolateAndMix(torch.autograd.Function):
    r""":func:`_interpolate_and_mix` with its gradient written out: the forward stores only its inputs, the
    backward rebuilds ``d-`` and the ratio ``r`` and applies the chain rule in a few ``[M, D]`` passes, where
    autograd would store (or, checkpointed, recompute and then store) about ten ``[M, D]`` intermediates and
    run twenty-odd backward kernels.

    With ``x = a - n``, ``d- = sqrt(|x|^2 + eps)``, ``s = gamma lambda`` and
    ``r = (d+ + (d- - d+) s) / d-``, an active candidate (``d- > d+``) is ``a - r x`` and, for the upstream
    gradient ``g`` of its row (times its mixing weight),

    .. math::
        \partial_n = g r - c\,x,\quad \partial_a = g (1 - r) + c\,x,\quad
        \partial_{\lambda} = -\gamma (1 - d^+/d^-)\, g x,\quad
        \partial_{d^+} = t / d^-,\quad c = -t\,d^+ / (d^-)^3,\quad t = -\textstyle\sum_c g_c x_c (1 - s_c);

    an inactive one is ``n`` (``\partial_n = g``). Routed (``anchor_gradient=False``) only ``g r`` (active) or
    ``g`` reaches the negatives. Not twice differentiable; ``gamma`` carries no gradient (the callers fall back
    to the plain path when it does).
    """

    @staticmethod
    def forward(ctx, work, lam, d_pos, gamma, anchor, negative, cand_edges, group, weights, num_groups,
                anchor_gradient):
        # the plain path's operations in its order, in place where autograd would keep a copy: the same
        # values, bit for bit, with four [M, D] buffers alive instead of about eight
        a, n = work[anchor], work[negative]
        x = a - n
        d_neg = (x.pow(2).sum(-1) + 1e-12).sqrt()
        d_p = d_pos[anchor]
        if lam is None:
            ratio = ((d_p + (d_neg - d_p) * gamma) / d_neg).unsqueeze(-1)
        else:
            ratio = lam[cand_edges].to(work.dtype).mul_(gamma)
            ratio.mul_((d_neg - d_p).unsqueeze(-1)).add_(d_p.unsqueeze(-1)).div_(d_neg.unsqueeze(-1))
        moved = x.neg_().mul_(ratio).add_(a)
        del a, ratio
        inactive = d_neg <= d_p
        moved[inactive] = n[inactive]
        del n
        out = scatter(moved.mul_(weights.unsqueeze(-1)), group, dim=0, dim_size=num_groups, reduce="sum")
        ctx.save_for_backward(work, lam, d_pos, anchor, negative, cand_edges, group, weights)
        ctx.gamma = gamma.detach() if isinstance(gamma, Tensor) else gamma
        ctx.anchor_gradient = anchor_gradient
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        # in place wherever a buffer is not needed again: at most five [M, D] buffers at once
        work, lam, d_pos, anchor, negative, cand_edges, group, weights = ctx.saved_tensors
        gamma = ctx.gamma
        g = grad_out.to(work.dtype)[group].mul_(weights.unsqueeze(-1))
        x = work[anchor].sub_(work[negative])
        d_neg = ((x * x).sum(-1) + 1e-12).sqrt()
        d_p = d_pos[anchor]
        inactive = d_neg <= d_p
        scale = gamma if lam is None else lam[cand_edges].to(work.dtype).mul_(gamma)
        t = grad_lam = None
        if ctx.anchor_gradient:
            gx = (g * x).masked_fill_(inactive.unsqueeze(-1), 0.0)   # g x: minus the gradient of r per channel
            t = (gx * scale).sum(-1) - gx.sum(-1) if isinstance(scale, Tensor) and scale.dim() else \
                -(1 - scale) * gx.sum(-1)
            if lam is not None and ctx.needs_input_grad[1]:
                rows = gx.mul_((-gamma * (1 - d_p / d_neg)).unsqueeze(-1))
                if lam.shape[1] == 1:
                    rows = rows.sum(-1, keepdim=True)
                grad_lam = torch.zeros(lam.shape, dtype=work.dtype, device=lam.device)
                grad_lam = grad_lam.index_add_(0, cand_edges, rows).to(lam.dtype)
                del rows
            del gx
        if isinstance(scale, Tensor) and scale.dim():
            ratio = scale.mul_((d_neg - d_p).unsqueeze(-1)).add_(d_p.unsqueeze(-1)).div_(d_neg.unsqueeze(-1))
        else:
            ratio = ((d_p + (d_neg - d_p) * scale) / d_neg).unsqueeze(-1)
        grad_negative = g * ratio
        grad_negative[inactive] = g[inactive]
        del ratio, scale
        grad_work = torch.zeros_like(work)
        if not ctx.anchor_gradient:
            return (grad_work.index_add_(0, negative, grad_negative),) + (None,) * 10
        grad_anchor = g.sub_(grad_negative)                      # g (1 - r); 0 where inactive
        coef = x.mul_((-t * d_p / d_neg.pow(3)).unsqueeze(-1))    # 0 where inactive (t is)
        grad_anchor.add_(coef)
        grad_negative.sub_(coef)
        grad_work.index_add_(0, anchor, grad_anchor).index_add_(0, negative, grad_negative)
        grad_d_pos = torch.zeros_like(d_pos).index_add_(0, anchor, t / d_neg) if ctx.needs_input_grad[2] else None
        return (grad_work, grad_lam, grad_d_pos) + (None,) * 8


def synthesize_negatives(
    embeddings: Tensor,
    labels: Tensor,
    edge_index: Tensor,
    lam: Optional[Tensor] = None,
    gamma: Union[float, Tensor] = 1.0,
    mixing: str = "sequential",
    negatives_per_class: str = "all",
    generator: Optional[torch.Generator] = None,
    anchor_gradient: bool = True,
    recompute: bool = True,
    num_anchors: Optional[int] = None,
) -> Synthetics:
    """One synthetic negative per (anchor, negative class) from the anchor's graph neighbours.

    The anchor of an edge is its target: the candidates of anchor ``a`` are the sources ``n`` of its
    incoming edges ``(n -> a)`` whose class differs from ``a``'s, each with that edge's ``lam`` row. On
    a "knn" graph an anchor therefore only mixes the negatives it is connected to.

    Args:
        embeddings: ``[B, D]`` embeddings (attached or detached, as the caller's phase needs).
        labels: ``[B]`` integer labels.
        edge_index: ``[2, E]`` graph edges.
        lam: ``[E, D]`` or ``[E, 1]`` interpolation weights per edge; ``None`` means 1 everywhere.
        gamma: hardness factor in ``[0, 1]`` (float or 0-dim tensor).
        mixing: ``"sequential"``, ``"dirichlet"`` or ``"mean"`` (see :func:`mixing_weights`).
        negatives_per_class: ``"all"`` mixes every sample of a negative class; ``"one"`` uses one random
            sample per class (the HDML setting and an ablation).
        generator: optional ``torch.Generator`` for the random draws.
        anchor_gradient: ``True`` (the authors'): gradients of a loss on the synthetics reach the anchor
            (through its share of the mixture, ``d+`` and ``d-``) and the negatives. ``False``: only the
            negatives, through their share (``r`` per channel). A proxy loss that takes a synthetic as a sample
            of its negative class would otherwise pull the anchor, which makes up most of a hard synthetic,
            towards that class's proxy; routed, the same loss pushes the negatives away from the anchor's
            class, which is what a hard negative is for.
        recompute: keep only the inputs of the interpolation and mixing for the backward pass, which rebuilds
            ``d-`` and the ratio there and applies the written-out gradient (:class:`_InterpolateAndMix`; with a
            ``gamma`` that needs a gradient, :func:`torch.utils.checkpoint.checkpoint` of the plain path): about
            ten ``[M, D]`` tensors per call (``M`` candidate edges) are not stored, the same values and
            gradients (``False``: the plain path, autograd's composition).
        num_anchors: only the first ``num_anchors`` rows are the batch (anchors, and positives for ``d+``); the
            rest are cross-batch memory entries (:mod:`gca.memory`), candidate negatives only. ``None``: all.
    """
    check_choice("mixing", mixing, MIXING_MODES)
    check_choice("negatives_per_class", negatives_per_class, NEGATIVES_PER_CLASS)
    _check_synthesis_inputs(embeddings, labels, edge_index, lam, gamma)
    work = embeddings if embeddings.dtype in (torch.float32, torch.float64) else embeddings.float()
    d_pos = batch_positive_distance(work, labels, num_anchors)
    cand_edges = candidate_edges(labels, edge_index, num_anchors).nonzero(as_tuple=True)[0]
    anchor, negative = edge_index[1, cand_edges], edge_index[0, cand_edges]
    class_ids, class_of = labels.unique(return_inverse=True)
    num_cls = class_ids.numel()
    keys, group = (anchor * num_cls + class_of[negative]).unique(return_inverse=True)
    if negatives_per_class == "one":
        keep = pick_one_per_group(group, generator)
        cand_edges, anchor, negative, group = cand_edges[keep], anchor[keep], negative[keep], group[keep]
    # the random draws stay outside the recomputed part: a recomputation must not draw again
    weights = mixing_weights(group, keys.numel(), mixing, generator, work.dtype)
    if not anchor_gradient and lam is not None:
        lam = lam.detach()                        # routed, the ratio is constant: lambda gets no gradient
    args = (work, lam, d_pos, gamma, anchor, negative, cand_edges, group, weights, keys.numel(), anchor_gradient)
    needs_grad = work.requires_grad or (lam is not None and lam.requires_grad)
    if recompute and needs_grad and torch.is_grad_enabled():
        if isinstance(gamma, Tensor) and gamma.requires_grad:
            synthetic = checkpoint(_interpolate_and_mix, *args, use_reentrant=False)
        else:
            synthetic = _InterpolateAndMix.apply(*args)
    else:
        synthetic = _interpolate_and_mix(*args)
    return Synthetics(embeddings=synthetic, labels=class_ids[keys % num_cls], anchor_index=keys // num_cls,
                      edge_ids=cand_edges)
