"""Metric losses on synthetic negatives: pytorch-metric-learning losses (see :mod:`gca.losses.compat`) or N-pair."""
from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor

from gca.losses.compat import SYNTHETIC_LOSS_MODES, is_proxy_loss, synthetic_loss_terms  # noqa: F401 (re-exported)
from gca.synthesis import Synthetics


def synthetic_indices(labels: Tensor, synthetics: Synthetics) -> Tuple[Tensor, Tensor, Tensor]:
    """Triplets ``(anchor, positive, B + s)`` tying each synthetic row ``s`` to its own anchor.

    The references are ``cat([embeddings, synthetics.embeddings])``: positives are real samples of the
    anchor's class (self excluded), negatives are that anchor's synthetics only.
    """
    b = labels.shape[0]
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    same.fill_diagonal_(False)
    rows = torch.arange(len(synthetics), device=labels.device)
    # every (synthetic row, positive of its anchor) combination
    s_idx, pos = same[synthetics.anchor_index].nonzero(as_tuple=True)
    return synthetics.anchor_index[s_idx], pos, b + rows[s_idx]


def anchor_proxy_loss(loss_fn: Callable, labels: Tensor, synthetics: Synthetics) -> Tensor:
    r"""Proxy-Anchor's negative term with each synthetic as a negative of its anchor's class proxy.

    .. math::
        J_{syn} = \frac{1}{|P|} \sum_{c} \log\Big(1 + \sum_{s:\, y_{a(s)} = c}
                  e^{\alpha\,(s(\tilde n_s, p_c) + \delta)}\Big)

    with the loss's own similarity ``s``, ``alpha``, margin ``delta`` and its ``|P|`` proxies, the sum over the
    proxies of the anchors' classes. A synthetic lies near its anchor but is not of its class: the anchor's
    proxy is pushed away from it (and, through the synthetic, the negatives it was made from), and no proxy
    is pulled towards it. ``loss_fn`` is a pytorch-metric-learning ``ProxyAnchorLoss``.
    """
    from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

    synth = synthetics.embeddings
    cos = loss_fn.get_logits(synth.to(loss_fn.proxies.dtype))                       # [S, P]
    anchor_class = labels[synthetics.anchor_index]
    keep = torch.nn.functional.one_hot(anchor_class, loss_fn.num_classes).bool()
    neg_exp = loss_fn.distance.margin(-loss_fn.margin, cos)
    per_proxy = lmu.logsumexp(loss_fn.alpha * neg_exp, keep_mask=keep, add_one=True, dim=0)
    return per_proxy.sum() / loss_fn.num_classes


def synthetic_metric_loss(loss_fn: Callable, embeddings: Tensor, labels: Tensor, synthetics: Synthetics,
                          mode: str = "auto") -> Tensor:
    """Apply a metric loss to the synthetic negatives of a batch.

    ``mode="pairs"`` calls ``loss_fn(embeddings, labels, indices_tuple=triplets, ref_emb=..., ref_labels=...)``
    with the triplets of :func:`synthetic_indices`, so each anchor meets its positives and its own
    synthetic negatives (N-pair, triplet, multi-similarity, contrastive...). ``mode="embeddings"`` treats
    the synthetics as extra samples labelled with their negative class,
    ``loss_fn(cat(embeddings, synthetics), cat(labels, synthetic labels))``, which is what proxy and
    classification losses (Proxy-Anchor, ArcFace, SoftTriple, ...) support. ``"auto"`` picks per loss from
    the table in :mod:`gca.losses.compat`, which also opens wrappers and refuses losses that cannot work.
    """
    terms = synthetic_loss_terms(loss_fn, mode)
    if len(synthetics) == 0:
        return 0.0 * embeddings.sum()
    synth = synthetics.embeddings.to(embeddings.dtype)
    ref_emb, ref_labels = torch.cat([embeddings, synth]), torch.cat([labels, synthetics.labels])
    triplets = synthetic_indices(labels, synthetics) if any(m == "pairs" for _, _, m in terms) else None
    total = 0.0
    for weight, fn, term_mode in terms:
        if term_mode == "anchor_proxy":
            value = anchor_proxy_loss(fn, labels, synthetics)
        elif term_mode == "embeddings":
            value = fn(ref_emb, ref_labels)
        else:
            value = fn(embeddings, labels, indices_tuple=triplets, ref_emb=ref_emb, ref_labels=ref_labels)
        total = total + weight * value
    return total
