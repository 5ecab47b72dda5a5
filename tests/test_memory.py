"""Cross-batch memory (gca.memory): the FIFO store, the memory edges of the batch graph, and what the
generator and the objective do with them."""
import pytest
import torch

import gca
from gca.graph import build_batch_graph, centred_unit, memory_edge_index
from gca.memory import CrossBatchMemory
from gca.model import GCAHNG


def test_memory_is_first_in_first_out_oldest_first():
    memory = CrossBatchMemory(5, 2)
    assert memory.contents() is None
    rows = torch.arange(16, dtype=torch.float32).reshape(8, 2)
    memory.enqueue(rows[:3], torch.tensor([0, 1, 2]))
    entries, labels = memory.contents()
    assert torch.equal(entries, rows[:3]) and labels.tolist() == [0, 1, 2]
    memory.enqueue(rows[3:7], torch.tensor([3, 4, 5, 6]))          # wraps: rows 0 and 1 are gone
    entries, labels = memory.contents()
    assert torch.equal(entries, rows[2:7]) and labels.tolist() == [2, 3, 4, 5, 6]
    memory.enqueue(rows, torch.arange(8))                         # more than fits: the last five
    entries, labels = memory.contents()
    assert torch.equal(entries, rows[3:]) and labels.tolist() == [3, 4, 5, 6, 7]


def test_memory_travels_in_the_state_dict():
    memory = CrossBatchMemory(4, 3)
    memory.enqueue(torch.randn(6, 3), torch.arange(6))
    restored = CrossBatchMemory(4, 3)
    restored.load_state_dict(memory.state_dict())
    for a, b in zip(memory.contents(), restored.contents()):
        assert torch.equal(a, b)
    restored.enqueue(torch.ones(1, 3), torch.tensor([9]))
    memory.enqueue(torch.ones(1, 3), torch.tensor([9]))
    assert torch.equal(memory.contents()[1], restored.contents()[1])


def test_memory_refuses_rows_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"memory entries must be \[N, 3\]"):
        CrossBatchMemory(4, 3).enqueue(torch.randn(2, 5), torch.arange(2))


@pytest.mark.parametrize("max_scores", [2 ** 22, 7, 1])
def test_memory_edges_are_each_nodes_most_correlated_entries_of_other_classes(max_scores):
    gen = torch.Generator().manual_seed(0)
    z, y = torch.randn(9, 6, generator=gen), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    memory, memory_y = torch.randn(20, 6, generator=gen), torch.randint(0, 5, (20,), generator=gen)
    edges = memory_edge_index(z, y, memory, memory_y, k=3, max_scores=max_scores)
    corr = centred_unit(z) @ centred_unit(memory).T
    for node in range(9):
        others = [m for m in range(20) if memory_y[m] != y[node]]
        expected = sorted(others, key=lambda m: -float(corr[node, m]))[:3]
        assert edges[0, edges[1] == node].tolist() == expected


def test_a_node_with_fewer_entries_of_other_classes_than_k_gets_all_of_them():
    z, y = torch.randn(4, 5), torch.tensor([0, 0, 1, 1])
    memory_y = torch.tensor([0, 0, 0, 1, 2])
    edges = memory_edge_index(z, y, torch.randn(5, 5), memory_y, k=4)
    assert sorted(edges[0, edges[1] == 0].tolist()) == [3, 4]        # class 0: the entries of classes 1, 2
    assert sorted(edges[0, edges[1] == 2].tolist()) == [0, 1, 2, 4]  # class 1: all but its own


def test_memory_nodes_join_the_batch_graph_as_sources_only():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(6, 4, generator=gen, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    memory, memory_y = torch.randn(10, 4, generator=gen), torch.tensor([0, 1, 2, 3, 4, 5, 3, 4, 5, 6])
    plain = build_batch_graph(z, y)
    graph = build_batch_graph(z, y, memory=(memory, memory_y), memory_k=2)
    batch_edges = plain.edge_index.shape[1]
    assert graph.num_batch == 6 and graph.num_nodes == 6 + graph.memory_index.numel()
    assert torch.equal(graph.edge_index[:, :batch_edges], plain.edge_index)          # the batch's edges first
    extra = graph.edge_index[:, batch_edges:]
    loops = extra[0] == extra[1]
    assert (extra[0] >= 6).all() and (extra[1, ~loops] < 6).all()                       # memory -> batch
    assert loops.sum() == graph.memory_index.numel()                                   # and their self-loops
    assert torch.equal(graph.x[6:], memory[graph.memory_index])
    assert torch.equal(graph.y[6:], memory_y[graph.memory_index])
    assert not graph.same_class[batch_edges:][~loops].any()
    graph.edge_attr.sum().backward()                  # gradients reach the batch, never the memory
    assert z.grad is not None and not memory.requires_grad


def _objective(memory_size, seed=0, **kwargs):
    torch.manual_seed(seed)
    return GCAHNG(8, 30, num_layers=2, heads=2, memory_size=memory_size, memory_k=3, dropout=0.0,
                  symmetric_edges=False, **kwargs).train()


def test_an_empty_memory_changes_nothing():
    z, y = torch.randn(12, 8), torch.arange(4).repeat(3)
    with_memory, without = _objective(50), _objective(0)
    without.load_state_dict(with_memory.state_dict(), strict=False)
    a = with_memory.generate(z, y, generator=torch.Generator().manual_seed(2))
    b = without.generate(z, y, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.lam, b.lam) and torch.equal(a.synthetics.embeddings, b.synthetics.embeddings)


def test_synthetics_reach_classes_that_only_the_memory_holds():
    """An anchor gets one synthetic per negative class among its batch neighbours and its memory picks; a
    class held only by memory is mixed from memory entries alone, and the memory never gets a gradient."""
    gen = torch.Generator().manual_seed(3)
    objective = _objective(40)
    memory_y = torch.arange(10, 30).repeat(2)                   # 20 classes the batch does not have
    objective.end_step(torch.randn(40, 8, generator=gen), memory_y)
    y = torch.arange(4).repeat(3)
    # tight classes (d+ small), so that every candidate is moved towards its anchor
    z = (torch.randn(4, 8, generator=gen)[y] + 0.01 * torch.randn(12, 8, generator=gen)).requires_grad_()
    out = objective.generate(z, y, detach_lambda=True, generator=torch.Generator().manual_seed(4))
    graph = out.graph
    synthetics = out.synthetics
    assert (synthetics.anchor_index < 12).all()
    for anchor in range(12):
        mine = synthetics.anchor_index == anchor
        picks = graph.edge_index[0, (graph.edge_index[1] == anchor) & (graph.edge_index[0] >= 12)]
        expected = {c for c in range(4) if c != int(y[anchor])} | set(graph.y[picks].tolist())
        assert set(synthetics.labels[mine].tolist()) == expected
    # with lambda detached (phase A), a synthetic of a memory-only class moves with its anchor alone
    row = int(((synthetics.labels >= 10) & (synthetics.anchor_index == 0)).nonzero()[0, 0])
    (grad,) = torch.autograd.grad(synthetics.embeddings[row].sum(), z)
    others = torch.ones(12, dtype=torch.bool)
    others[[0, 4, 8]] = False                                        # anchor 0 and its positives (d+)
    assert grad[others].abs().sum() == 0 and grad[0].abs().sum() > 0
    assert objective.generator.memory.embeddings.grad is None


def test_memory_rows_are_never_positives_or_anchors():
    """Memory rows of the batch's classes, far from everything and joined by no edge, change nothing: d+ is
    the distance to positives in the batch, and no memory row is an anchor."""
    gen = torch.Generator().manual_seed(5)
    y = torch.arange(4).repeat(3)
    z = torch.randn(12, 8, generator=gen)
    edge_index = build_batch_graph(z, y).edge_index
    far = 100 + torch.randn(6, 8, generator=gen)
    nodes, node_labels = torch.cat([z, far]), torch.cat([y, torch.tensor([0, 1, 2, 3, 0, 1])])
    loops = torch.arange(12, 18).repeat(2, 1)               # their self-loops: edges into memory rows
    with_memory = gca.synthesize_negatives(nodes, node_labels, torch.cat([edge_index, loops], 1), None, 0.5,
                                           generator=torch.Generator().manual_seed(1), num_anchors=12)
    batch_only = gca.synthesize_negatives(z, y, edge_index, None, 0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(with_memory.embeddings, batch_only.embeddings)
    assert torch.equal(with_memory.anchor_index, batch_only.anchor_index)
    counted_as_batch = gca.synthesize_negatives(nodes, node_labels, edge_index, None, 0.5,
                                                generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(counted_as_batch.embeddings, batch_only.embeddings)   # d+ would include them


def test_train_step_refreshes_the_memory_with_the_steps_batch():
    from gca.train.step import Optimisers, train_step
    objective = _objective(30)
    net = torch.nn.Linear(5, 8)
    opts = Optimisers(metric=torch.optim.SGD(net.parameters(), lr=0.1),
                      generator=torch.optim.SGD(objective.generator_parameters(), lr=0.1),
                      classifier=torch.optim.SGD(objective.classifier_parameters(), lr=0.1))
    images, labels = torch.randn(12, 5), torch.arange(4).repeat(3)
    for fused in (False, True):
        before = net(images).detach()
        train_step(net, objective, images, labels, opts, fused=fused)
        entries, entry_labels = objective.generator.memory.contents()
        assert torch.equal(entries[-12:], before) and torch.equal(entry_labels[-12:], labels)
    assert int(objective.generator.memory.filled) == 24


@pytest.mark.parametrize("override, message", [
    (["gca.memory_size=-1"], "gca.memory_size"),
    (["gca.memory_size=8", "gca.generator=hdml"], "gca.memory_size"),
])
def test_bad_memory_settings_are_named(override, message):
    from gca.train.config import load_config
    with pytest.raises(ValueError, match=message):
        load_config("omniglot", override)


def test_pair_states_with_a_memory_equal_directed_edges():
    """With a memory, the batch's pairs keep one state and every memory edge (memory -> batch, the memory's
    self-loops) one of its own: the same node states, lambda and synthetics as one state per directed edge, with
    fewer edge states."""
    z, y = torch.randn(12, 8), torch.arange(4).repeat(3)
    generations = {}
    for symmetric in (True, False):
        torch.manual_seed(0)
        objective = GCAHNG(8, 30, num_layers=2, heads=2, memory_size=40, memory_k=3, dropout=0.0,
                           symmetric_edges=symmetric).train()
        assert objective.generator.symmetric_edges is symmetric
        objective.generator.remember(torch.randn(40, 8, generator=torch.Generator().manual_seed(5)),
                                     torch.arange(40) % 10 + 4)
        generations[symmetric] = objective.generate(z, y, generator=torch.Generator().manual_seed(1))
    assert GCAHNG(8, 30, memory_size=10).generator.symmetric_edges          # "auto" keeps pairs with a memory
    pairs, directed = generations[True], generations[False]
    src, dst = pairs.graph.edge_index
    batch_edges = int(((src < 12) & (dst < 12)).sum())
    assert pairs.graph.num_nodes > 12 and batch_edges < src.numel()
    assert pairs.edge_rows.shape[0] == 12 * 13 // 2 + src.numel() - batch_edges
    torch.testing.assert_close(pairs.node_states, directed.node_states)
    torch.testing.assert_close(pairs.edge_states, directed.edge_states)
    torch.testing.assert_close(pairs.lam, directed.lam)
    torch.testing.assert_close(pairs.synthetics.embeddings, directed.synthetics.embeddings)


def test_a_loss_on_raw_dot_products_is_named_unsuited_to_the_memory():
    from gca.losses import create_metric_loss
    from gca.memory import memory_loss_problem
    npair = create_metric_loss("npair", 30, 8)
    assert "NPairLoss compares raw (unnormalised) embeddings" in memory_loss_problem(npair)
    assert memory_loss_problem(npair, embeddings_normalised=True) is None
    for name in ("multi_similarity", "proxy_anchor"):
        assert memory_loss_problem(create_metric_loss(name, 30, 8)) is None, name
    assert memory_loss_problem(torch.nn.Module()) is None          # no distance: not judged


@pytest.mark.parametrize("metric, warns", [("npair", True), ("multi_similarity", False)])
def test_the_trainer_warns_of_a_memory_with_a_loss_on_raw_dot_products(tmp_path, metric, warns):
    import warnings

    from gca.testing.runs import tiny_run_overrides
    from gca.train import Trainer, load_config
    cfg = load_config(None, tiny_run_overrides(tmp_path, f"loss.metric={metric}", "gca.memory_size=40",
                                               "gca.memory_k=3", "plots=false"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(cfg, progress=False)
    messages = [str(w.message) for w in caught if "gca.memory_size=40" in str(w.message)]
    assert len(messages) == int(warns)
    if warns:
        assert "loss.metric=npair" in messages[0] and "drifts along its mean direction" in messages[0]
