"""Exact retrieval metrics for deep metric learning (Recall@K, MAP@R, R-Precision).

The computation is exact but memory-bounded: the query set is processed in chunks,
and for every chunk only the ``K`` nearest gallery items are kept, where ``K`` is
``max(max(ks), max R over the chunk)``. The full ``N x N`` similarity matrix is never
materialised, so leave-one-out evaluation of Stanford Online Products (60k x 60k)
fits comfortably in memory on CPU or GPU.

Ranking is by cosine similarity (embeddings are L2-normalised internally). Ties in
similarity are broken deterministically in favour of the lower gallery index (torch
backend).

Definitions (following Musgrave et al., "A Metric Learning Reality Check", 2020):

* ``R`` for a query is the number of gallery items with the same label as the query
  (the query itself is not counted in leave-one-out mode).
* ``Recall@k`` is the fraction of queries with at least one same-label item among
  their ``k`` nearest neighbours.
* ``R-Precision`` is ``(# same-label items among the R nearest neighbours) / R``.
* ``MAP@R`` is ``(1/R) * sum_{r<=R} P@r * 1[neighbour r is relevant]`` where ``P@r``
  is the precision among the ``r`` nearest neighbours.

Queries with ``R = 0`` (no positive in the gallery) are excluded from *all* metrics;
how many there were is reported as ``"num_queries_without_positives"``.
"""

from __future__ import annotations

import numbers
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["retrieval_metrics", "faiss_available"]

ArrayLike = Union[torch.Tensor, np.ndarray]

# Number of similarity entries (query rows x gallery columns) processed at once when
# ``chunk_size`` is not given: 2**24 float32 entries = 64 MiB per chunk.
_DEFAULT_CHUNK_ELEMENTS = 2**24


def faiss_available() -> bool:
    """Return ``True`` if the optional ``faiss`` package can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- validation


def _to_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError(f"{name} must be a numeric array, got a numpy array of dtype object")
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}")


def _check_embeddings(x: Any, name: str) -> torch.Tensor:
    t = _to_tensor(x, name)
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [num_items, dim], got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).any(dim=1).sum())
        raise ValueError(f"{name} contains NaN or infinite values ({n_bad} rows affected)")
    return t


_INT_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}


def _check_labels(y: Any, name: str, n: int, emb_name: str) -> torch.Tensor:
    t = _to_tensor(y, name)
    if t.dtype not in _INT_DTYPES:
        raise TypeError(
            f"{name} must have an integer dtype, got {t.dtype}; "
            "convert class labels to integers (e.g. with numpy.unique(..., return_inverse=True))"
        )
    if t.dim() == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D [num_items], got shape {tuple(t.shape)}")
    if t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} entries but {emb_name} has {n} rows")
    return t.to(torch.int64)


def _check_ks(ks: Any) -> Tuple[int, ...]:
    if isinstance(ks, numbers.Integral) and not isinstance(ks, bool):
        ks = (ks,)
    try:
        ks = tuple(ks)
    except TypeError:
        raise TypeError(f"ks must be an int or a sequence of ints, got {type(ks).__name__}") from None
    if len(ks) == 0:
        raise ValueError("ks must contain at least one value")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"every k in ks must be an int, got {k!r}")
        if k < 1:
            raise ValueError(f"every k in ks must be >= 1, got {k}")
    return tuple(int(k) for k in ks)


# --------------------------------------------------------------------------- neighbours


def _topk_deterministic(sim: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest entries per row of ``sim``, sorted by decreasing value.

    Ties are broken in favour of the lower column index, both for *which* items enter
    the top-k (at the boundary) and for their order, so the result is independent of
    the (unspecified) tie handling of :func:`torch.topk`.
    """
    c = sim.shape[0]
    thresh = torch.topk(sim, k, dim=1, largest=True, sorted=False).values.min(dim=1, keepdim=True).values
    selected = sim >= thresh
    # nonzero() is row-major, so columns come out in increasing index order per row.
    row_of, cols = selected.nonzero(as_tuple=True)
    if cols.numel() != c * k:
        # Some rows have more items tied at their threshold than free slots: keep the
        # lowest-index tied items. (Every row has >= k selected, so the total is c*k
        # exactly when no row is ambiguous.)
        ambiguous = torch.bincount(row_of, minlength=c) > k
        rows = ambiguous.nonzero(as_tuple=True)[0]
        sub, t = sim[rows], thresh[rows]
        greater = sub > t
        equal = sub == t
        need = k - greater.sum(dim=1, keepdim=True)
        keep_equal = equal & (equal.cumsum(dim=1) <= need)
        selected[rows] = greater | keep_equal
        cols = selected.nonzero(as_tuple=True)[1]
    idx = cols.view(c, k)
    vals = sim.gather(1, idx)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return idx.gather(1, order)


def _torch_neighbours(
    q: torch.Tensor, g: torch.Tensor, k: int, self_idx: Optional[torch.Tensor]
) -> torch.Tensor:
    sim = q @ g.T
    if self_idx is not None:
        sim[torch.arange(q.shape[0], device=sim.device), self_idx] = float("-inf")
    return _topk_deterministic(sim, k)


class _FaissSearcher:
    """Exact inner-product search with ``faiss.IndexFlatIP`` (CPU)."""

    def __init__(self, gallery: torch.Tensor):
        import faiss

        self._faiss = faiss
        data = gallery.detach().to("cpu", torch.float32).contiguous().numpy()
        self.index = faiss.IndexFlatIP(data.shape[1])
        self.index.add(data)
        self.ntotal = data.shape[0]

    def neighbours(self, q: torch.Tensor, k: int, self_idx: Optional[torch.Tensor]) -> torch.Tensor:
        qn = q.detach().to("cpu", torch.float32).contiguous().numpy()
        extra = 1 if self_idx is not None else 0
        kk = min(k + extra, self.ntotal)
        sims, ids = self.index.search(qn, kk)
        sims = torch.from_numpy(sims)
        ids = torch.from_numpy(ids).to(torch.int64)
        if self_idx is not None:
            s = self_idx.to("cpu").view(-1, 1)
            is_self = ids == s
            # If the item itself was not returned (more than k exact duplicates), drop the last.
            no_self = ~is_self.any(dim=1)
            is_self[no_self, -1] = True
            keep = ~is_self
            ids = ids[keep].view(-1, kk - 1)
            sims = sims[keep].view(-1, kk - 1)
        ids, sims = ids[:, :k], sims[:, :k]
        # Deterministic order inside the returned set: decreasing similarity, then index.
        by_index = torch.sort(ids, dim=1, stable=True)
        sims = sims.gather(1, by_index.indices)
        order = torch.sort(sims, dim=1, descending=True, stable=True).indices
        return by_index.values.gather(1, order).to(q.device)


# --------------------------------------------------------------------------- main entry


def retrieval_metrics(
    query_emb: ArrayLike,
    query_labels: ArrayLike,
    gallery_emb: Optional[ArrayLike] = None,
    gallery_labels: Optional[ArrayLike] = None,
    ks: Union[int, Sequence[int]] = (1, 2, 4, 8),
    chunk_size: Optional[int] = None,
    use_faiss: Union[bool, str] = "auto",
) -> Dict[str, Union[float, int]]:
    """Compute Recall@K, MAP@R and R-Precision with cosine similarity, exactly.

    Args:
        query_emb: ``[Nq, D]`` query embeddings (torch tensor on any device, or numpy
            array). They are L2-normalised internally; float64 inputs are kept in float64,
            every other real dtype is computed in float32.
        query_labels: ``[Nq]`` integer class labels (torch or numpy integer dtype).
        gallery_emb: ``[Ng, D]`` gallery embeddings, or ``None`` for leave-one-out
            evaluation over the query set (each query is excluded from its own
            neighbours *by index*, so duplicate embeddings are handled correctly).
        gallery_labels: ``[Ng]`` integer labels; must be given iff ``gallery_emb`` is.
        ks: the ``k`` values for Recall@k. A ``k`` larger than the number of candidate
            neighbours is evaluated over all candidates.
        chunk_size: number of queries per chunk. ``None`` picks it so that a chunk of
            the similarity matrix holds about 2**24 entries. Results do not depend on it.
        use_faiss: ``"auto"`` uses faiss (``IndexFlatIP``, exact) when it is importable
            and the embeddings are on the CPU; ``True`` requires faiss; ``False`` always
            uses torch. With the torch backend ties in similarity are broken in favour of
            the lower gallery index; the faiss backend is deterministic for a given input
            but its choice among items tied exactly at the top-k boundary is faiss's own,
            and it always computes in float32.

    Returns:
        A dict with ``"R@k"`` for every ``k`` in ``ks``, ``"MAP@R"`` and
        ``"R-Precision"`` (python floats in ``[0, 1]``), plus ``"num_queries"`` (queries
        that entered the metrics) and ``"num_queries_without_positives"`` (queries with
        ``R = 0``, excluded from all metrics).

    Raises:
        TypeError: non-tensor inputs, non-integer labels, non-integer ``ks``.
        ValueError: shape mismatches, NaN/Inf embeddings, invalid ``ks``/``chunk_size``/
            ``use_faiss``, or no query having any positive in the gallery.
        ImportError: ``use_faiss=True`` but faiss is not installed.
    """
    ks = _check_ks(ks)
    q = _check_embeddings(query_emb, "query_emb")
    ql = _check_labels(query_labels, "query_labels", q.shape[0], "query_emb")
    device = q.device

    if (gallery_emb is None) != (gallery_labels is None):
        raise ValueError("gallery_emb and gallery_labels must both be given or both be None")
    leave_one_out = gallery_emb is None
    if leave_one_out:
        g, gl = q, ql
    else:
        g = _check_embeddings(gallery_emb, "gallery_emb")
        gl = _check_labels(gallery_labels, "gallery_labels", g.shape[0], "gallery_emb")
        if g.shape[1] != q.shape[1]:
            raise ValueError(
                f"query_emb has dimension {q.shape[1]} but gallery_emb has dimension {g.shape[1]}"
            )
        if g.dtype != q.dtype:  # one is float64: compute both in float64
            q, g = q.to(torch.float64), g.to(torch.float64)
        g = g.to(device)
    gl = gl.to(device)
    ql = ql.to(device)

    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
            raise TypeError(f"chunk_size must be an int or None, got {chunk_size!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    if use_faiss == "auto":
        use_faiss_now = faiss_available() and device.type == "cpu"
    elif use_faiss is True:
        if not faiss_available():
            raise ImportError("use_faiss=True but faiss is not installed (pip install faiss-cpu)")
        use_faiss_now = True
    elif use_faiss is False:
        use_faiss_now = False
    else:
        raise ValueError(f"use_faiss must be 'auto', True or False, got {use_faiss!r}")

    q = F.normalize(q, p=2, dim=1)
    g = q if leave_one_out else F.normalize(g, p=2, dim=1)

    # R: number of same-label gallery items for each query.
    uniq, counts = torch.unique(gl, return_counts=True)
    pos = torch.searchsorted(uniq, ql).clamp_(max=uniq.numel() - 1)
    r_all = torch.where(uniq[pos] == ql, counts[pos], torch.zeros_like(counts[pos]))
    if leave_one_out:
        r_all = r_all - 1
    n_candidates = g.shape[0] - (1 if leave_one_out else 0)

    valid = (r_all > 0).nonzero(as_tuple=True)[0]
    n_without = int(q.shape[0] - valid.numel())
    if valid.numel() == 0:
        raise ValueError(
            "no query has a same-label item in the gallery (R = 0 for every query); "
            "retrieval metrics are undefined"
        )
    # Group queries with similar R together so per-chunk K stays small.
    valid = valid[torch.argsort(r_all[valid], stable=True)]

    if chunk_size is None:
        chunk_size = max(1, _DEFAULT_CHUNK_ELEMENTS // max(1, g.shape[0]))

    searcher = _FaissSearcher(g) if use_faiss_now else None
    max_k = max(ks)
    hits = {k: torch.zeros((), dtype=torch.float64, device=device) for k in ks}
    map_sum = torch.zeros((), dtype=torch.float64, device=device)
    rprec_sum = torch.zeros((), dtype=torch.float64, device=device)

    for start in range(0, valid.numel(), chunk_size):
        rows = valid[start : start + chunk_size]
        r = r_all[rows]
        k_chunk = min(max(max_k, int(r.max())), n_candidates)
        self_idx = rows if leave_one_out else None
        if searcher is not None:
            nn_idx = searcher.neighbours(q[rows], k_chunk, self_idx)
        else:
            nn_idx = _torch_neighbours(q[rows], g, k_chunk, self_idx)
        rel = gl[nn_idx] == ql[rows].unsqueeze(1)  # [c, k_chunk] bool

        for k in ks:
            hits[k] += rel[:, : min(k, k_chunk)].any(dim=1).sum()

        ranks = torch.arange(1, k_chunk + 1, device=device)
        within_r = ranks.unsqueeze(0) <= r.unsqueeze(1)
        rel_r = (rel & within_r).to(torch.float64)
        prec_at = rel_r.cumsum(dim=1) / ranks.to(torch.float64)
        rf = r.to(torch.float64)
        map_sum += ((prec_at * rel_r).sum(dim=1) / rf).sum()
        rprec_sum += (rel_r.sum(dim=1) / rf).sum()

    n = float(valid.numel())
    out: Dict[str, Union[float, int]] = {f"R@{k}": float(hits[k]) / n for k in ks}
    out["MAP@R"] = float(map_sum) / n
    out["R-Precision"] = float(rprec_sum) / n
    out["num_queries"] = int(valid.numel())
    out["num_queries_without_positives"] = n_without
    return out
