import re
import weakref

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gca import build_batch_graph
from gca.graph import KNN_MAX_SCORES, centred_unit, knn_chunk_rows, knn_edge_index


def _batch(n=10, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.tensor([5, 5, 5, 2, 2, 9, 9, 9, 9, 7])[:n]      # uneven classes, arbitrary ids
    return z, y


def test_edge_features_match_independent_per_pair_computation():
    z, y = _batch()
    g = build_batch_graph(z, y)
    zn = z.numpy()
    for e, (i, j) in enumerate(g.edge_index.T.tolist()):
        a, b = zn[i] - zn[i].mean(), zn[j] - zn[j].mean()
        expected = a * b / (np.linalg.norm(a) * np.linalg.norm(b))
        np.testing.assert_allclose(g.edge_attr[e].numpy(), expected, rtol=1e-10, atol=1e-12)
        # the channels of an edge sum to the Pearson correlation of its two embeddings
        np.testing.assert_allclose(g.edge_attr[e].sum().item(), np.corrcoef(zn[i], zn[j])[0, 1], atol=1e-10)


def test_same_class_follows_labels_and_layout():
    z, y = _batch()
    g = build_batch_graph(z, y)
    src, dst = g.edge_index
    assert g.same_class.dtype == torch.bool
    assert torch.equal(g.same_class, y[src] == y[dst])
    assert g.edge_index.shape == (2, 100)
    assert torch.equal(src, torch.arange(10).repeat_interleave(10))      # source-major: id = i * B + j
    assert torch.equal(g.y, y) and g.x is z


def test_without_self_loops():
    z, y = _batch()
    g = build_batch_graph(z, y, self_loops=False)
    assert g.edge_index.shape[1] == 90
    assert not torch.any(g.edge_index[0] == g.edge_index[1])


def test_knn_with_all_neighbours_equals_full():
    z, y = _batch()
    for loops in (True, False):
        full = build_batch_graph(z, y, self_loops=loops)
        knn = build_batch_graph(z, y, edges="knn", k=9, self_loops=loops)
        assert torch.equal(full.edge_index, knn.edge_index)
        torch.testing.assert_close(full.edge_attr, knn.edge_attr)
        assert torch.equal(full.same_class, knn.same_class)


def test_knn_keeps_the_most_correlated_sources():
    z, y = _batch()
    g = build_batch_graph(z, y, edges="knn", k=3, self_loops=False)
    assert g.edge_index.shape[1] == 10 * 3                     # grows with B*k
    corr = np.corrcoef(z.numpy())
    for j in range(10):
        sources = set(g.edge_index[0, g.edge_index[1] == j].tolist())
        others = [i for i in range(10) if i != j]
        expected = set(sorted(others, key=lambda i: -corr[i, j])[:3])
        assert sources == expected


def test_gradients_reach_embeddings():
    z, y = _batch()
    z.requires_grad_(True)
    g = build_batch_graph(z, y, edges="knn", k=4)
    (g.edge_attr.pow(2).sum() + g.x.sum()).backward()
    assert z.grad is not None and torch.all(torch.isfinite(z.grad)) and z.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(labels=torch.arange(9)), ValueError, "differ in length"),
    (dict(labels=torch.arange(10).float()), TypeError, "integer"),
    (dict(edges="ring"), ValueError, "edges must be"),
    (dict(edges="knn", k=0), ValueError, "k must be in"),
    (dict(edges="knn", k=10), ValueError, "k must be in"),
    (dict(edges="knn"), TypeError, "integer k"),
])
def test_bad_input(kwargs, exc, match):
    z, y = _batch()
    args = dict(embeddings=z, labels=y)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        build_batch_graph(**args)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_embeddings_rejected(value):
    z, y = _batch()
    z[3, 1] = value
    with pytest.raises(ValueError, match="NaN or infinite.*rows \\[3\\]"):
        build_batch_graph(z, y)


# ---------------------------------------------------------------------------- the knn search in blocks
class _ScoreBlocks(TorchDispatchMode):
    """Watches the ``[rows, B]`` float blocks an operation forms: the largest one, and the most scores alive at
    once (a block stays alive until nothing refers to it)."""

    def __init__(self, num_nodes):
        super().__init__()
        self.num_nodes = num_nodes
        self.blocks = []
        self.largest = 0
        self.most_alive = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:        # a view of the embeddings (unit.T) is not a new block of scores
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if (isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() == 2
                        and t.shape[1] == self.num_nodes and not any(b() is t for b in self.blocks)):
                    self.blocks.append(weakref.ref(t))
                    self.largest = max(self.largest, t.numel())
        self.most_alive = max(self.most_alive, sum(b().numel() for b in self.blocks if b() is not None))
        return out


def _reference_knn(z, k, self_loops):
    """The plain search: the whole B x B score matrix, topk per row, edges listed pair by pair and sorted."""
    unit = centred_unit(z.float())
    scores = unit @ unit.T
    scores.fill_diagonal_(float("-inf"))
    top = scores.topk(k + 1, dim=1)
    # the test data must have no near-tie at any row's k-th place, or rounding could pick either candidate
    assert (top.values[:, k - 1] - top.values[:, k]).min() > 1e-5
    pairs = [(i, j) for j in range(z.shape[0]) for i in top.indices[j, :k].tolist()]
    pairs += [(i, i) for i in range(z.shape[0])] if self_loops else []
    return torch.tensor(sorted(pairs)).T


@pytest.mark.parametrize("k", [1, 5, 36])
@pytest.mark.parametrize("self_loops", [True, False])
@pytest.mark.parametrize("blocks", [
    dict(max_scores=1),             # less than one row: one row at a time
    dict(max_scores=36),            # B - 1 scores: still one row
    dict(max_scores=2 * 37 + 1),    # 2 rows: 18 blocks of 2 and one of 1
    dict(max_scores=5 * 37 + 36),   # 5 rows: 7 blocks of 5 and one of 2
    dict(max_scores=36 * 37),       # 36 rows and 1
    dict(max_scores=37 * 37),       # the whole matrix
    dict(),                         # the default budget
    dict(chunk_size=3),
    dict(chunk_size=100),
])
def test_knn_in_blocks_matches_the_whole_score_matrix(k, self_loops, blocks):
    z = torch.randn(37, 24, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    assert torch.equal(knn_edge_index(z, k, self_loops, **blocks), _reference_knn(z, k, self_loops))


@pytest.mark.parametrize("num_nodes, max_scores, rows", [
    (37, 1, 1), (37, 36, 1), (37, 37, 1), (37, 75, 2), (37, 221, 5), (37, 37 * 37, 37), (37, 10 ** 9, 37),
    (4096, 2 ** 22, 1024), (2048, 2 ** 22, 2048), (2 ** 23, 2 ** 22, 1),
])
def test_knn_block_height_is_the_most_rows_within_the_budget(num_nodes, max_scores, rows):
    assert knn_chunk_rows(num_nodes, max_scores) == rows


@pytest.mark.parametrize("max_scores", [1, 49, 50, 149, 400, 2499, 2500, 10 ** 6])
def test_knn_holds_at_most_the_budget_of_scores(max_scores):
    n = 50
    z = torch.randn(n, 8, generator=torch.Generator().manual_seed(1))
    with _ScoreBlocks(n) as seen:
        knn_edge_index(z, 4, max_scores=max_scores)
    rows = min(n, max(1, max_scores // n))
    assert seen.largest == rows * n                 # blocks as tall as the budget allows, no taller
    assert seen.most_alive == rows * n              # one block at a time: each is freed before the next
    assert seen.most_alive <= max(max_scores, n)


def test_knn_default_budget_never_forms_the_whole_matrix():
    n = 3000                                        # n * n = 9e6 scores > the default budget of 2**22
    z = torch.randn(n, 4, generator=torch.Generator().manual_seed(2))
    with _ScoreBlocks(n) as seen:
        edges = knn_edge_index(z, 2, self_loops=False)
    assert seen.largest == (KNN_MAX_SCORES // n) * n and seen.most_alive <= KNN_MAX_SCORES
    assert edges.shape == (2, 2 * n) and torch.equal(torch.bincount(edges[1], minlength=n), torch.full((n,), 2))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(max_scores=0), ValueError, "max_scores must be >= 1, got 0"),
    (dict(max_scores=-4), ValueError, "max_scores must be >= 1, got -4"),
    (dict(max_scores=2.5), TypeError, "max_scores must be an integer, got 2.5"),
    (dict(max_scores=True), TypeError, "max_scores must be an integer, got True"),
    (dict(chunk_size=0), ValueError, "chunk_size must be >= 1, got 0"),
    (dict(chunk_size=2.0), TypeError, "chunk_size must be an integer, got 2.0"),
])
def test_knn_bad_budget(kwargs, exc, match):
    z, _ = _batch()
    with pytest.raises(exc, match=re.escape(match)):
        knn_edge_index(z, 3, **kwargs)


# ------------------------------------------------------------------------------- sharded by edges
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("edges,k,self_loops", [("full", None, True), ("full", None, False), ("knn", 3, True),
                                                ("knn", 4, False)])
def test_shards_partition_the_graph_and_match_their_counts(world, edges, k, self_loops):
    """The processes' shares of the batch graph are disjoint, together the one-process graph (edges and edge
    features), each holding exactly the edges into its own nodes, as many as shard_edge_counts says."""
    from gca.distributed import EdgeShard, shard_edge_counts, shard_range
    from gca.nn.propagation import symmetric_pairs

    g = torch.Generator().manual_seed(3)
    z = torch.randn(11, 6, generator=g)
    y = torch.arange(11) % 4
    whole = build_batch_graph(z, y, edges, k, self_loops)
    seen = {}
    for rank in range(world):
        part = build_batch_graph(z, y, edges, k, self_loops, shard=EdgeShard(rank, world))
        owned = part.owned
        assert owned.nonzero().squeeze(1).tolist() == list(shard_range(11, rank, world))
        assert owned[part.edge_index[1]].all()
        counts = shard_edge_counts(11, world, rank, edges, k, self_loops, symmetric=edges == "full")
        assert part.edge_index.shape[1] == counts["directed"]
        if edges == "full":
            pair_edge, edge_to_pair = symmetric_pairs(part.edge_index, 11, owned)
            assert pair_edge.numel() == counts["rows"]
            # a row is shared by two edges exactly when both end nodes are this process's
            shared = torch.bincount(edge_to_pair)[edge_to_pair] == 2
            src, dst = part.edge_index
            assert torch.equal(shared, owned[src] & owned[dst] & (src != dst))
        for e, (s, t) in enumerate(part.edge_index.T.tolist()):
            assert (s, t) not in seen
            seen[(s, t)] = part.edge_attr[e]
    assert sorted(seen) == sorted(map(tuple, whole.edge_index.T.tolist()))
    for e, (s, t) in enumerate(whole.edge_index.T.tolist()):
        assert torch.equal(seen[(s, t)], whole.edge_attr[e])


def test_memory_nodes_are_the_same_on_every_shard_and_their_edges_split():
    from gca.distributed import EdgeShard

    g = torch.Generator().manual_seed(4)
    z, y = torch.randn(8, 5, generator=g), torch.arange(8) % 4
    memory = (torch.randn(20, 5, generator=g), torch.arange(20) % 6)
    whole = build_batch_graph(z, y, memory=memory, memory_k=3)
    parts = [build_batch_graph(z, y, memory=memory, memory_k=3, shard=EdgeShard(r, 2)) for r in range(2)]
    for part in parts:
        assert torch.equal(part.memory_index, whole.memory_index) and torch.equal(part.x, whole.x)
    joined = sorted(map(tuple, torch.cat([p.edge_index for p in parts], 1).T.tolist()))
    assert joined == sorted(map(tuple, whole.edge_index.T.tolist()))
    # each memory node's self-loop lives with the process that owns the node
    assert (parts[0].owned & parts[1].owned).sum() == 0 and (parts[0].owned | parts[1].owned).all()
