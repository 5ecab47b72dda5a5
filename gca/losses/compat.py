"""Which metric losses can see GCA-HNG's synthetic negatives, and how (checked against pytorch-metric-learning 2.9).

``"pairs"``: ``loss(z, y, indices_tuple=(anchor, positive, B + s), ref_emb=cat(z, S), ref_labels=...)``, so
each anchor meets its own synthetics; only losses that honour both ``indices_tuple`` and ``ref_emb``.
``"embeddings"``: ``loss(cat(z, S), cat(y, synthetic labels))``, the synthetics as extra samples of their
negative class; any loss that takes labels. ``"anchor_proxy"`` (Proxy-Anchor only): each synthetic is a
negative of its *anchor's* class proxy, in Proxy-Anchor's own negative term (see
:func:`gca.losses.synthetic.anchor_proxy_loss`). Losses that fit none are refused with the reason.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

SYNTHETIC_LOSS_MODES = ("auto", "pairs", "embeddings", "anchor_proxy")
# losses whose proxies can take the synthetics as negatives of the anchor's own class (mode "anchor_proxy")
_ANCHOR_PROXY = frozenset({"ProxyAnchorLoss"})

# Honour indices_tuple and ref_emb: "pairs" by default, "embeddings" on request.
_PAIRS = frozenset({
    "AngularLoss", "CircleLoss", "ContrastiveLoss", "GeneralizedLiftedStructureLoss", "GenericPairLoss",
    "IntraPairVarianceLoss", "LiftedStructureLoss", "MarginLoss", "MultiSimilarityLoss", "NTXentLoss",
    "SignalToNoiseRatioContrastiveLoss", "SupConLoss", "TripletMarginLoss", "TupletMarginLoss"})

#: The attribute a loss declares itself a proxy/classification loss with (see :func:`is_proxy_loss`).
PROXY_LOSS_ATTR = "is_proxy_loss"
# The proxy and classification losses: they learn class weights (``proxies``, ``W`` or ``weight``).
_PROXY_LOSSES = frozenset({"ArcFaceLoss", "CosFaceLoss", "LargeMarginSoftmaxLoss", "NormalizedSoftmaxLoss",
                           "P2SGradLoss", "ProxyAnchorLoss", "ProxyNCALoss", "SoftTripleLoss", "SphereFaceLoss",
                           "SubCenterArcFaceLoss"})

_NO_REF = "it takes no ref_emb"
# Only "embeddings"; the value says why "pairs" cannot work.
_EMBEDDINGS_ONLY = {
    **dict.fromkeys(sorted(_PROXY_LOSSES) + ["FastAPLoss", "HistogramLoss", "InstanceLoss", "PNPLoss",
                                             "RankedListLoss"], _NO_REF),
    # NCA accepts ref_emb but not the triplets, and only masks self-matches when ref_emb is embeddings
    "NCALoss": "it ignores indices_tuple and would count each anchor as its own neighbour in ref_emb",
    "ThresholdConsistentMarginLoss": "it ignores ref_emb and indexes the embeddings with reference indices",
}

_USE_NPAIR = "use gca.losses.NPairLoss (metric_loss='npair') instead"
_REFUSED = {
    "NPairsLoss": "cannot see per-anchor synthetic negatives (it takes no ref_emb and its negatives are the "
                  f"positives of other real pairs); {_USE_NPAIR}",
    "SmoothAPLoss": "cannot take synthetic negatives (no ref_emb/indices_tuple, and as appended samples they break "
                    "its equal-samples-per-class rule and its O(N^3) memory); use FastAPLoss or gca.losses.NPairLoss "
                    "(metric_loss='npair') instead",
    "DynamicSoftMarginLoss": "fails on the second training step (its histogram keeps autograd history, "
                             "pytorch-metric-learning issue #731); use TripletMarginLoss or MarginLoss instead",
    "VICRegLoss": "is self-supervised (no labels), so it has neither J_m nor negatives for J_syn; use SupConLoss "
                  "or NTXentLoss instead",
    "ManifoldLoss": "takes no labels, so it has neither J_m nor negatives for J_syn; use a labelled loss such as "
                    "MultiSimilarityLoss instead",
    "SelfSupervisedLoss": "compares two augmented views without labels; pass a labelled loss (e.g. its .loss) "
                          "as metric_loss instead",
}


def _pml_name(obj) -> Optional[str]:
    """Name of the nearest pytorch-metric-learning class in ``obj``'s MRO (so user subclasses inherit its row)."""
    for cls in type(obj).__mro__:
        if cls.__module__.startswith("pytorch_metric_learning."):
            return cls.__name__
    return None


def is_proxy_loss(loss_fn: Callable) -> bool:
    """Whether ``loss_fn`` is a proxy or classification loss: it learns one weight vector (or several) per
    class and takes no ``ref_emb``, so synthetics can only join it as samples of their class.

    Declared, never guessed from attributes, in this order:

    1. the loss's own ``is_proxy_loss`` attribute, a ``bool`` (class or instance). gca's losses declare it
       (:class:`gca.losses.NPairLoss` says ``False``); a user loss says so in its class body::

           class MyProxyLoss(torch.nn.Module):
               is_proxy_loss = True

    2. pytorch-metric-learning's losses, by the nearest of its classes in the loss's MRO (so subclasses
       inherit their row): the table ``_PROXY_LOSSES``, and for a class of a newer release missing from
       it, pytorch-metric-learning's own mark of a loss holding class weights, ``WeightRegularizerMixin``;
    3. anything else is not a proxy loss.
    """
    declared = getattr(loss_fn, PROXY_LOSS_ATTR, None)
    if isinstance(declared, bool):
        return declared
    name = _pml_name(loss_fn)
    if name is None:
        return False
    if name in _PROXY_LOSSES:
        return True
    from pytorch_metric_learning.losses.mixins import WeightRegularizerMixin
    return isinstance(loss_fn, WeightRegularizerMixin)


def synthetic_loss_terms(loss_fn: Callable, mode: str = "auto") -> List[Tuple[float, Callable, str]]:
    """How J_syn is computed for ``loss_fn``: a list of ``(weight, loss, mode)`` terms to sum.

    Wrappers are opened: ``MultipleLosses`` gives one term per sub-loss (each in its own mode);
    ``CrossBatchMemory`` gives its inner loss on the batch, because its memory would otherwise enqueue the
    batch a second time and the synthetics with it; ``DistributedLossWrapper`` is called as itself (it passes
    ``ref_emb`` on) in its inner loss's mode. Other losses get ``"embeddings"`` if they are proxy losses
    (:func:`is_proxy_loss`: declared by the loss or by the table of pytorch-metric-learning's losses),
    ``"pairs"`` otherwise.

    Raises:
        ValueError: ``mode`` is not one of ``SYNTHETIC_LOSS_MODES``, or the loss (or a wrapped one) cannot
            take part; the one-line message names the loss class and what to use instead.
    """
    if mode not in SYNTHETIC_LOSS_MODES:
        raise ValueError(f"synthetic loss mode must be one of {SYNTHETIC_LOSS_MODES}, got {mode!r}")
    name = _pml_name(loss_fn)
    if name in _REFUSED:
        raise ValueError(f"{name} {_REFUSED[name]}")
    if name == "MultipleLosses":
        items = loss_fn.losses.items() if loss_fn.is_dict else enumerate(loss_fn.losses)
        return [(w * loss_fn.weights[k], f, m) for k, sub in items for w, f, m in synthetic_loss_terms(sub, mode)]
    if name == "CrossBatchMemory":
        return synthetic_loss_terms(loss_fn.loss, mode)
    if name == "DistributedLossWrapper":
        if _pml_name(loss_fn.loss) == "CrossBatchMemory":  # it refuses ref_emb with a memory inside
            return synthetic_loss_terms(loss_fn.loss, mode)
        return [(w, loss_fn, m) for w, _, m in synthetic_loss_terms(loss_fn.loss, mode)]
    if mode == "anchor_proxy":
        if name not in _ANCHOR_PROXY:
            raise ValueError(f"{type(loss_fn).__name__} cannot use synthetic_loss_mode='anchor_proxy' "
                             f"(only {', '.join(sorted(_ANCHOR_PROXY))}); use 'embeddings' or 'auto' instead")
        return [(1.0, loss_fn, "anchor_proxy")]
    if name in _EMBEDDINGS_ONLY:
        if mode == "pairs":
            raise ValueError(f"{name} cannot use synthetic_loss_mode='pairs' ({_EMBEDDINGS_ONLY[name]}); "
                             "use synthetic_loss_mode='embeddings' or 'auto' instead")
        return [(1.0, loss_fn, "embeddings")]
    if mode == "auto":
        mode = "pairs" if name in _PAIRS or not is_proxy_loss(loss_fn) else "embeddings"
    return [(1.0, loss_fn, mode)]


def synthetic_mode_for(loss_fn: Callable, mode: str = "auto") -> str:
    """The mode J_syn uses for ``loss_fn``: ``"pairs"``, ``"embeddings"``, or ``"mixed"`` for a
    ``MultipleLosses`` whose sub-losses differ. Raises like :func:`synthetic_loss_terms`."""
    modes = {m for _, _, m in synthetic_loss_terms(loss_fn, mode)}
    return modes.pop() if len(modes) == 1 else "mixed"


def check_metric_loss(loss_fn: Callable, mode: str = "auto") -> None:
    """Refuse, at construction, a metric loss (or mode) that cannot compute J_m and J_syn.

    Raises:
        ValueError: see :func:`synthetic_loss_terms`.
    """
    synthetic_loss_terms(loss_fn, mode)


SYNTHETIC_GRADIENTS = ("auto", "full", "negatives")


def resolve_synthetic_gradient(loss_fn: Callable, mode: str = "auto", gradient: str = "auto") -> str:
    """Check ``loss_fn`` and ``mode`` (:func:`check_metric_loss`) and resolve where J_syn's gradient goes.

    ``"auto"`` gives ``"negatives"`` when every term sees the synthetics as samples of a class or as negatives
    of a proxy (``"embeddings"``, ``"anchor_proxy"``): there the anchor, which makes up most of a hard
    synthetic, would be pulled towards another class's proxy (or pushed from its own). Pair losses keep
    ``"full"``, the authors' routing, where the anchor's own term dominates.
    """
    if gradient not in SYNTHETIC_GRADIENTS:
        raise ValueError(f"synthetic_gradient must be one of {SYNTHETIC_GRADIENTS}, got {gradient!r}")
    modes = {m for _, _, m in synthetic_loss_terms(loss_fn, mode)}
    if gradient != "auto":
        return gradient
    return "negatives" if modes <= {"embeddings", "anchor_proxy"} else "full"
