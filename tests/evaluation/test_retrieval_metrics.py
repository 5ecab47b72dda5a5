"""Tests for gca.evaluation.retrieval_metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gca.evaluation.metrics as metrics_mod
from gca.evaluation import faiss_available, retrieval_metrics

KS = (1, 2, 4, 8)
METRIC_KEYS = [f"R@{k}" for k in KS] + ["MAP@R", "R-Precision"]


# ----------------------------------------------------------------------------- reference


def brute_force(q, ql, g=None, gl=None, ks=KS):
    """Python-loop reference. Ranking by cosine similarity (float64), ties -> lower index."""
    q = np.asarray(q, dtype=np.float64)
    ql = np.asarray(ql)
    loo = g is None
    if loo:
        g, gl = q, ql
    g = np.asarray(g, dtype=np.float64)
    gl = np.asarray(gl)
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    rec = {k: [] for k in ks}
    maps, rps = [], []
    skipped = 0
    for i in range(len(q)):
        cand = [j for j in range(len(g)) if not (loo and j == i)]
        sims = [float(np.dot(qn[i], gn[j])) for j in cand]
        order = sorted(range(len(cand)), key=lambda t: (-sims[t], cand[t]))
        rel = [bool(gl[cand[t]] == ql[i]) for t in order]
        r = sum(rel)
        if r == 0:
            skipped += 1
            continue
        for k in ks:
            rec[k].append(float(any(rel[:k])))
        hits, ap = 0, 0.0
        for pos in range(r):
            if rel[pos]:
                hits += 1
                ap += hits / (pos + 1)
        maps.append(ap / r)
        rps.append(sum(rel[:r]) / r)
    out = {f"R@{k}": float(np.mean(rec[k])) for k in ks}
    out["MAP@R"] = float(np.mean(maps))
    out["R-Precision"] = float(np.mean(rps))
    out["num_queries"] = len(maps)
    out["num_queries_without_positives"] = skipped
    return out


def assert_same(a, b, tol=1e-9, keys=None):
    keys = keys or [k for k in a if k in b]
    for k in keys:
        if isinstance(a[k], int) and isinstance(b[k], int):
            assert a[k] == b[k], (k, a[k], b[k])
        else:
            assert math.isclose(a[k], b[k], rel_tol=0, abs_tol=tol), (k, a[k], b[k])


def random_data(n, dim, n_classes, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n,), generator=gen)
    centers = torch.randn(n_classes, dim, generator=gen, dtype=dtype)
    emb = centers[labels] * 0.7 + torch.randn(n, dim, generator=gen, dtype=dtype)
    return emb, labels


# ----------------------------------------------------------------------------- correctness


@pytest.mark.parametrize("seed,n,dim,n_classes", [(0, 120, 8, 10), (1, 200, 16, 40), (2, 90, 4, 60)])
def test_leave_one_out_matches_brute_force(seed, n, dim, n_classes):
    emb, labels = random_data(n, dim, n_classes, seed)
    got = retrieval_metrics(emb, labels, ks=KS, use_faiss=False)
    ref = brute_force(emb.numpy(), labels.numpy())
    assert_same(got, ref)
    for k in METRIC_KEYS:
        assert isinstance(got[k], float) and 0.0 <= got[k] <= 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_query_gallery_matches_brute_force(seed):
    q, ql = random_data(70, 12, 25, seed)
    g, gl = random_data(150, 12, 20, seed + 100)  # query classes 20..24 have no gallery item
    got = retrieval_metrics(q, ql, g, gl, ks=KS, use_faiss=False)
    ref = brute_force(q.numpy(), ql.numpy(), g.numpy(), gl.numpy())
    assert_same(got, ref)
    assert got["num_queries_without_positives"] == int((ql >= 20).sum())


def test_hand_computed_example():
    # One query along e0; gallery ranked: relevant (0.9), irrelevant (0.5), relevant (0.1).
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[0.9, math.sqrt(1 - 0.81)], [0.5, math.sqrt(0.75)], [0.1, math.sqrt(0.99)]])
    out = retrieval_metrics(q, torch.tensor([3]), g, torch.tensor([3, 4, 3]), ks=(1, 2, 3), use_faiss=False)
    assert out["R@1"] == 1.0 and out["R@2"] == 1.0 and out["R@3"] == 1.0
    assert out["MAP@R"] == pytest.approx(0.5)  # (1/2) * (P@1 * 1 + P@2 * 0)
    assert out["R-Precision"] == pytest.approx(0.5)
    assert out["num_queries"] == 1 and out["num_queries_without_positives"] == 0


def test_lone_queries_are_excluded_and_counted():
    emb, labels = random_data(60, 6, 15, seed=3)
    labels = labels.clone()
    labels[:5] = torch.arange(1000, 1005)  # five singleton classes
    got = retrieval_metrics(emb, labels, use_faiss=False)
    ref = brute_force(emb.numpy(), labels.numpy())
    assert_same(got, ref)
    assert got["num_queries_without_positives"] >= 5
    assert got["num_queries"] + got["num_queries_without_positives"] == 60


def test_duplicate_embeddings_self_excluded_by_index():
    # Every embedding appears twice with the same label: the duplicate (not the item itself)
    # must be the nearest neighbour, so everything is perfect.
    base, _ = random_data(40, 8, 40, seed=4)
    emb = torch.cat([base, base])
    labels = torch.cat([torch.arange(40), torch.arange(40)])
    out = retrieval_metrics(emb, labels, use_faiss=False)
    for k in METRIC_KEYS:
        assert out[k] == pytest.approx(1.0), k


def test_duplicates_with_different_labels():
    # Items i and 20+i share an embedding but not a label; each label also has a noisy
    # partner. The nearest neighbour of a duplicated item is its twin (wrong label), so
    # R@1 on those queries is 0 -- dropping "rank 1" instead of the item itself would
    # wrongly count the item as its own hit.
    gen = torch.Generator().manual_seed(21)
    v = torch.randn(20, 8, generator=gen, dtype=torch.float64)
    partners = torch.cat([v, v]) + 2.0 * torch.randn(40, 8, generator=gen, dtype=torch.float64)
    emb = torch.cat([v, v, partners])
    labels = torch.cat([torch.arange(40), torch.arange(40)])
    got = retrieval_metrics(emb, labels, use_faiss=False)
    ref = brute_force(emb.numpy(), labels.numpy())
    assert_same(got, ref)
    assert got["R@1"] <= 0.5 + 1e-12  # the 40 duplicated queries all miss at rank 1


def test_exact_ties_broken_by_lower_gallery_index():
    # Axis-aligned unit vectors give exactly representable similarities (0 or 1), so many
    # exact ties; the reference breaks them by index as documented.
    gen = torch.Generator().manual_seed(5)
    axes = torch.randint(0, 3, (50,), generator=gen)
    emb = torch.nn.functional.one_hot(axes, 3).to(torch.float32)
    labels = torch.randint(0, 4, (50,), generator=gen)
    got = retrieval_metrics(emb, labels, ks=KS, use_faiss=False)
    assert_same(got, brute_force(emb.numpy(), labels.numpy()), tol=1e-12)
    for cs in (1, 7):
        assert_same(retrieval_metrics(emb, labels, ks=KS, chunk_size=cs, use_faiss=False), got, tol=1e-12)

    q = torch.nn.functional.one_hot(torch.randint(0, 3, (20,), generator=gen), 3).float()
    ql = torch.randint(0, 4, (20,), generator=gen)
    got = retrieval_metrics(q, ql, emb, labels, ks=KS, use_faiss=False)
    assert_same(got, brute_force(q.numpy(), ql.numpy(), emb.numpy(), labels.numpy()), tol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 3, 17, 64, None])
def test_chunking_invariance(chunk_size):
    emb, labels = random_data(150, 10, 12, seed=6)
    full = retrieval_metrics(emb, labels, use_faiss=False, chunk_size=10_000)
    got = retrieval_metrics(emb, labels, use_faiss=False, chunk_size=chunk_size)
    assert_same(got, full, tol=1e-12)
    q, ql = random_data(40, 10, 12, seed=7)
    full = retrieval_metrics(q, ql, emb, labels, use_faiss=False, chunk_size=10_000)
    got = retrieval_metrics(q, ql, emb, labels, use_faiss=False, chunk_size=chunk_size)
    assert_same(got, full, tol=1e-12)


def test_similarity_is_computed_in_chunks(monkeypatch):
    calls = []
    real = metrics_mod._torch_neighbours

    def spy(q, g, k, self_idx):
        calls.append((q.shape[0], g.shape[0], k))
        return real(q, g, k, self_idx)

    monkeypatch.setattr(metrics_mod, "_torch_neighbours", spy)
    emb, labels = random_data(100, 8, 10, seed=8)
    retrieval_metrics(emb, labels, chunk_size=16, use_faiss=False)
    assert len(calls) == math.ceil(100 / 16)
    assert all(rows <= 16 for rows, _, _ in calls)
    # Only max(max(ks), max R in the chunk) neighbours are kept, never the whole gallery.
    counts = torch.bincount(labels)
    assert all(k <= max(max(KS), int(counts.max()) - 1) for _, _, k in calls)


def test_k_larger_than_gallery_and_single_k():
    emb, labels = random_data(12, 4, 3, seed=9)
    out = retrieval_metrics(emb, labels, ks=(1, 50), use_faiss=False)
    assert out["R@50"] == 1.0  # every query has R > 0, all candidates are retrieved
    out1 = retrieval_metrics(emb, labels, ks=4, use_faiss=False)
    assert set(out1) == {"R@4", "MAP@R", "R-Precision", "num_queries", "num_queries_without_positives"}


def test_input_types_numpy_float32_and_integer_embeddings():
    emb, labels = random_data(80, 8, 9, seed=10)
    ref = retrieval_metrics(emb, labels, use_faiss=False)
    assert_same(retrieval_metrics(emb.numpy(), labels.numpy(), use_faiss=False), ref)
    assert_same(retrieval_metrics(emb.numpy(), labels.numpy().astype(np.int32), use_faiss=False), ref)
    # float32 and unnormalised scaling give the same answer on well-separated random data
    assert_same(retrieval_metrics(3.0 * emb.float(), labels, use_faiss=False), ref, tol=1e-6)
    ints = torch.randint(-5, 6, (30, 4), generator=torch.Generator().manual_seed(0))
    out = retrieval_metrics(ints, torch.arange(30) % 5, use_faiss=False)
    assert 0.0 <= out["MAP@R"] <= 1.0
    # labels given as [N, 1] column are accepted
    assert_same(retrieval_metrics(emb, labels[:, None], use_faiss=False), ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    emb, labels = random_data(500, 32, 30, seed=11, dtype=torch.float32)
    cpu = retrieval_metrics(emb, labels, use_faiss=False)
    gpu = retrieval_metrics(emb.cuda(), labels.cuda(), use_faiss="auto", chunk_size=37)
    assert_same(gpu, cpu, tol=1e-6)
    q, ql = random_data(100, 32, 30, seed=12, dtype=torch.float32)
    cpu = retrieval_metrics(q, ql, emb, labels, use_faiss=False)
    gpu = retrieval_metrics(q.cuda(), ql, emb.cuda(), labels.cuda(), use_faiss=False)
    assert_same(gpu, cpu, tol=1e-6)


# ----------------------------------------------------------------------------- PML agreement


def _pml_calculator():
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    # k="max_bin_count" retrieves enough neighbours for MAP@R / R-Precision; avg_of_avgs=False
    # averages over queries (not classes); CustomKNN avoids PML's default faiss dependency.
    return AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
        k="max_bin_count",
        avg_of_avgs=False,
        knn_func=CustomKNN(CosineSimilarity()),
        device=torch.device("cpu"),
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_pml_leave_one_out(seed):
    emb, labels = random_data(300, 16, 30, seed, dtype=torch.float32)
    labels[:3] = torch.tensor([500, 501, 502])  # lone queries, excluded by both
    # Passing only the query set makes PML use it as reference and exclude each query itself.
    pml = _pml_calculator().get_accuracy(emb, labels)
    ours = retrieval_metrics(emb, labels, use_faiss=False)
    assert ours["R@1"] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert ours["MAP@R"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)
    assert ours["R-Precision"] == pytest.approx(pml["r_precision"], abs=1e-6)


def test_agrees_with_pml_query_gallery():
    q, ql = random_data(120, 16, 20, seed=13, dtype=torch.float32)
    g, gl = random_data(260, 16, 20, seed=14, dtype=torch.float32)
    pml = _pml_calculator().get_accuracy(q, ql, g, gl, ref_includes_query=False)
    ours = retrieval_metrics(q, ql, g, gl, use_faiss=False)
    assert ours["R@1"] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert ours["MAP@R"] == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)
    assert ours["R-Precision"] == pytest.approx(pml["r_precision"], abs=1e-6)


# ----------------------------------------------------------------------------- faiss


needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")


@needs_faiss
def test_faiss_matches_torch():
    emb, labels = random_data(300, 16, 25, seed=15, dtype=torch.float32)
    ref = retrieval_metrics(emb, labels, use_faiss=False)
    assert_same(retrieval_metrics(emb, labels, use_faiss=True), ref, tol=1e-6)
    assert_same(retrieval_metrics(emb, labels, use_faiss=True, chunk_size=13), ref, tol=1e-6)
    q, ql = random_data(80, 16, 25, seed=16, dtype=torch.float32)
    ref = retrieval_metrics(q, ql, emb, labels, use_faiss=False)
    assert_same(retrieval_metrics(q, ql, emb, labels, use_faiss=True), ref, tol=1e-6)


@needs_faiss
def test_faiss_duplicates_self_excluded_by_index():
    base, _ = random_data(30, 8, 30, seed=17, dtype=torch.float32)
    emb = torch.cat([base, base, base])
    labels = torch.arange(30).repeat(3)
    out = retrieval_metrics(emb, labels, use_faiss=True)
    for k in METRIC_KEYS:
        assert out[k] == pytest.approx(1.0), k


@pytest.mark.skipif(faiss_available(), reason="faiss is installed")
def test_use_faiss_true_without_faiss_raises():
    emb, labels = random_data(10, 4, 2, seed=0)
    with pytest.raises(ImportError, match="faiss"):
        retrieval_metrics(emb, labels, use_faiss=True)


# ----------------------------------------------------------------------------- errors


def test_error_cases():
    emb, labels = random_data(20, 4, 4, seed=18)
    with pytest.raises(ValueError, match="19 entries"):
        retrieval_metrics(emb, labels[:19])
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(emb[:, 0], labels)
    with pytest.raises(ValueError, match="non-empty"):
        retrieval_metrics(emb[:0], labels[:0])
    bad = emb.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(bad, labels)
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        retrieval_metrics(emb, labels, bad, labels)
    with pytest.raises(TypeError, match="integer dtype"):
        retrieval_metrics(emb, labels.float())
    with pytest.raises(TypeError, match="integer dtype"):
        retrieval_metrics(emb, labels > 1)
    with pytest.raises(TypeError, match="integer dtype"):
        retrieval_metrics(emb.numpy(), labels.numpy().astype(np.float64))
    with pytest.raises(TypeError, match="torch.Tensor or a numpy.ndarray"):
        retrieval_metrics(emb.tolist(), labels)
    with pytest.raises(ValueError, match="both be given"):
        retrieval_metrics(emb, labels, gallery_emb=emb)
    with pytest.raises(ValueError, match="dimension"):
        retrieval_metrics(emb, labels, emb[:, :3], labels)
    with pytest.raises(ValueError, match=">= 1"):
        retrieval_metrics(emb, labels, ks=(0, 1))
    with pytest.raises(ValueError, match="at least one"):
        retrieval_metrics(emb, labels, ks=())
    with pytest.raises(TypeError, match="int"):
        retrieval_metrics(emb, labels, ks=(1.5,))
    with pytest.raises(ValueError, match="chunk_size"):
        retrieval_metrics(emb, labels, chunk_size=0)
    with pytest.raises(ValueError, match="use_faiss"):
        retrieval_metrics(emb, labels, use_faiss="yes")
    with pytest.raises(ValueError, match="R = 0"):
        retrieval_metrics(emb, torch.arange(20))
    with pytest.raises(ValueError, match="R = 0"):
        retrieval_metrics(emb[:1], labels[:1])
