"""Input validation shared by the public entry points, so bad input fails where it enters."""
from __future__ import annotations

import torch
from torch import Tensor


def check_batch_structure(embeddings: Tensor, labels: Tensor) -> None:
    """Types, shapes, dtypes and devices of a batch: nothing that reads the values (no device sync)."""
    if not isinstance(embeddings, Tensor):
        raise TypeError(f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must have shape [B, D], got {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise TypeError(f"embeddings must be floating point, got {embeddings.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"labels must have shape [B], got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"embeddings and labels differ in length: {embeddings.shape[0]} embeddings, {labels.shape[0]} labels")
    if labels.device != embeddings.device:
        raise ValueError(f"embeddings are on {embeddings.device} but labels on {labels.device}")


def check_embeddings_and_labels(embeddings: Tensor, labels: Tensor, *, min_classes: int = 1) -> None:
    """Raise a clear ``TypeError``/``ValueError`` for anything a batch of embeddings cannot be."""
    check_batch_structure(embeddings, labels)
    if embeddings.shape[0] < 2:
        raise ValueError(f"a batch needs at least 2 samples, got {embeddings.shape[0]}")
    if not torch.isfinite(embeddings).all():
        bad = (~torch.isfinite(embeddings)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"embeddings contain NaN or infinite values (rows {bad[:10]}{'...' if len(bad) > 10 else ''})")
    if min_classes > 1:
        num_classes = int(labels.unique().numel())
        if num_classes < min_classes:
            raise ValueError(
                f"the batch holds {num_classes} class(es); hard negative generation needs at least "
                f"{min_classes} classes per batch")


def check_label_range(labels: Tensor, num_classes: int) -> None:
    """Labels index classifier rows, so they must lie in ``[0, num_classes)``."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for a classifier over {num_classes} training classes; "
            f"got min {int(labels.min())}, max {int(labels.max())}")


def check_choice(name: str, value, choices) -> None:
    """``value`` must be one of ``choices`` (names such as ``edges`` or ``mixing``)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")


def check_int(name: str, value, minimum: int = 1) -> None:
    """``value`` must be an ``int`` (not a bool) and at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_dropout(name: str, value) -> None:
    """A dropout probability: a number in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r} ({type(value).__name__})")
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


RECOMPUTE_LEVELS = ("none", "gathers", "all")


def recompute_level(value) -> str:
    """A layer's ``recompute`` setting as one of :data:`RECOMPUTE_LEVELS`: ``False`` is ``"none"``, ``True``
    is ``"all"``."""
    if isinstance(value, bool):
        return "all" if value else "none"
    if value not in RECOMPUTE_LEVELS:
        raise ValueError(f"recompute must be true, false or one of {RECOMPUTE_LEVELS}, got {value!r}")
    return value


def check_heads_divide(channels, heads, channels_name: str = "channels", heads_name: str = "heads") -> None:
    """``channels`` (:math:`D`) and ``heads`` (:math:`H`) are positive integers and :math:`H` divides :math:`D`.

    Multi-head attention splits the :math:`D` channels into :math:`H` heads of :math:`D / H`; the names say
    which argument (or config key) the message points at.
    """
    check_int(channels_name, channels, 1)
    check_int(heads_name, heads, 1)
    if channels % heads != 0:
        raise ValueError(f"{channels_name} ({channels}) must be divisible by {heads_name} ({heads})")


def check_edge_index(edge_index: Tensor, num_nodes: int, device: torch.device) -> None:
    """A ``[2, E]`` integer tensor on ``device``. Shape and dtype only: a range check would cost a device sync."""
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"edge_index must be an integer (int64) tensor, got {edge_index.dtype}")
    if edge_index.device != device:
        raise ValueError(f"edge_index is on {edge_index.device} but the embeddings on {device}")


def check_generator_options(edges: str = "full", k=None, mixing: str = "sequential",
                            negatives_per_class: str = "all") -> None:
    """The graph and synthesis options of :class:`gca.GCAHNG`, checked when the model is built."""
    # imported here: gca.graph and gca.synthesis import this module
    from gca.graph import EDGE_MODES
    from gca.synthesis import MIXING_MODES, NEGATIVES_PER_CLASS
    check_choice("edges", edges, EDGE_MODES)
    if edges == "knn":
        if k is None:
            raise TypeError("edges='knn' needs an integer k (neighbours per node), got None")
        check_int("k", k, 1)
    elif k is not None:
        raise ValueError(f"k ({k!r}) is only used with edges='knn'")
    check_choice("mixing", mixing, MIXING_MODES)
    check_choice("negatives_per_class", negatives_per_class, NEGATIVES_PER_CLASS)
