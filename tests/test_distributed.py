"""gca.distributed with two gloo processes on CPU, against one process on the concatenated batch."""
import os
import uuid

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gca.distributed import (
    GatheredObjective,
    ProcessGroupInfo,
    all_gather_rows,
    all_gather_with_grad,
    shard_range,
    use_global_batchnorm,
)

WORLD = 2
ROWS, DIM = 3, 5


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(WORLD * ROWS, DIM, generator=g)
    weights = torch.randn(WORLD, WORLD * ROWS, DIM, generator=g)
    return x, weights


def _loss(gathered, weight):
    # rank-specific and non-linear in every gathered row, so a wrong routing or sum shows
    return ((gathered * weight).sum(-1).tanh() ** 2).sum() + gathered.pow(3).mean()


def _rendezvous(tmp_path) -> str:
    """A file for the processes to meet at: no TCP port to pick, so no race for one with other programs."""
    return f"file://{tmp_path / f'rendezvous-{uuid.uuid4().hex}'}"


def _join(rank, rendezvous):
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=WORLD)


def _worker(rank, rendezvous, out_dir, mismatched):
    _join(rank, rendezvous)
    try:
        x, weights = _inputs()
        own = x[rank * ROWS:(rank + 1) * ROWS].clone().requires_grad_(True)
        if mismatched and rank == 1:
            own = own[:-1].detach().requires_grad_(True)
        try:
            gathered = all_gather_with_grad(own)
        except ValueError as exc:
            torch.save({"error": str(exc)}, os.path.join(out_dir, f"r{rank}.pt"))
            return
        _loss(gathered, weights[rank]).backward()
        torch.save({"gathered": gathered.detach(), "grad": own.grad}, os.path.join(out_dir, f"r{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _run(tmp_path, mismatched=False):
    mp.spawn(_worker, args=(_rendezvous(tmp_path), str(tmp_path), mismatched), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in range(WORLD)]


def test_gathered_gradient_is_the_sum_of_every_process_loss(tmp_path):
    results = _run(tmp_path)
    x, weights = _inputs()
    whole = x.clone().requires_grad_(True)
    # one process on the concatenated batch, with the loss summed over the processes' losses
    sum(_loss(whole, weights[r]) for r in range(WORLD)).backward()
    for rank, res in enumerate(results):
        torch.testing.assert_close(res["gathered"], x)
        torch.testing.assert_close(res["grad"], whole.grad[rank * ROWS:(rank + 1) * ROWS])


def test_different_shapes_are_refused_on_every_process(tmp_path):
    results = _run(tmp_path, mismatched=True)
    for res in results:
        assert "needs the same shape on every process, got [(3, 5), (2, 5)]" in res["error"]


def test_process_group_info_from_env():
    assert ProcessGroupInfo.from_env({}) == ProcessGroupInfo(0, 1, 0)
    info = ProcessGroupInfo.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (1, 2, 1, False)
    with pytest.raises(ValueError, match=r"RANK=2 is not in \[0, WORLD_SIZE=2\)"):
        ProcessGroupInfo.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match=r"environment variable WORLD_SIZE='two' is not an integer"):
        ProcessGroupInfo.from_env({"WORLD_SIZE": "two"})


# ------------------------------------------------------------------ a training step over the gathered batch
CASES = {
    "npair": dict(gca=False),
    "proxy_anchor": dict(gca=False, loss="proxy_anchor"),
    "gca_full_two_pass": dict(gca=True),
    "gca_full_fused": dict(gca=True, fused=True),
    "gca_knn": dict(gca=True, edges="knn"),
    "gca_proxy_anchor": dict(gca=True, loss="proxy_anchor"),
    # the second step's graph holds the first step's global batch as memory nodes
    "gca_memory": dict(gca=True, memory=True),
    "gca_memory_fused": dict(gca=True, memory=True, fused=True),
    # the graph sharded by edges (each process the edges into its own samples); no random draws in the
    # generator (dropout 0, equal mixing weights), since each process draws its own for its edges
    "sharded_full_pairs": dict(gca=True, shard=True),
    "sharded_full_directed": dict(gca=True, shard=True, symmetric_edges=False),
    "sharded_full_fused": dict(gca=True, shard=True, fused=True),
    "sharded_knn": dict(gca=True, shard=True, edges="knn"),
    "sharded_proxy_anchor": dict(gca=True, shard=True, loss="proxy_anchor"),
    "sharded_memory": dict(gca=True, shard=True, memory=True),
    "sharded_memory_fused": dict(gca=True, shard=True, memory=True, fused=True),
    "sharded_gatv2": dict(gca=True, shard=True, layer="gatv2"),
    "sharded_no_layers": dict(gca=True, shard=True, num_layers=0),
}
IN_DIM, EMB, CLASSES, PER_CLASS = 7, 8, 6, 2


def _setup(case):
    """The embedding network, objective and optimisers of a case, the same on every process (seed 0)."""
    from gca.losses import create_metric_loss
    from gca.model import GCAHNG
    from gca.objective import MetricLossObjective
    from gca.train.step import Optimisers

    torch.manual_seed(0)
    spec = CASES[case]
    net = torch.nn.Sequential(torch.nn.Linear(IN_DIM, 12), torch.nn.GELU(), torch.nn.Linear(12, EMB))
    loss = create_metric_loss(spec.get("loss", "npair"), CLASSES, EMB)
    if spec["gca"]:
        graph = {"edges": "knn", "k": 3} if spec.get("edges") == "knn" else {}
        if spec.get("memory"):
            graph.update(memory_size=16, memory_k=2)
        if spec.get("shard"):
            graph.update(dropout=0.0, mixing="mean", layer=spec.get("layer", "gca"),
                         symmetric_edges=spec.get("symmetric_edges", "auto"))
        # two layers when sharded, so that an edge update reads node states another process computed
        layers = spec.get("num_layers", 2 if spec.get("shard") else 1)
        objective = GCAHNG(EMB, CLASSES, num_layers=layers, heads=2, metric_loss=loss, **graph).train()
    else:
        objective = MetricLossObjective(loss)
    metric_params = list(net.parameters()) + list(loss.parameters())
    # SGD, not AdamW: some gradients are zero up to rounding (the edge attention's key bias shifts both of an
    # edge's scores alike), and Adam's normalisation would turn their rounding noise into whole steps
    optimisers = Optimisers(metric=torch.optim.SGD(metric_params, lr=0.1),
                            generator=torch.optim.SGD(objective.generator_parameters(), lr=0.1)
                            if spec["gca"] else None,
                            classifier=torch.optim.SGD(objective.classifier_parameters(), lr=0.1)
                            if spec["gca"] else None)
    return net, objective, optimisers


def _batches():
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        images = torch.randn(CLASSES * PER_CLASS, IN_DIM, generator=g)
        labels = torch.randperm(CLASSES, generator=g).repeat_interleave(PER_CLASS)
        yield images, labels


def _train(case, rank=None):
    """Two steps: on the whole batch (rank None) or, under DDP, on this process's half of it."""
    from torch.nn.parallel import DistributedDataParallel

    from gca.train.step import train_step

    net, objective, optimisers = _setup(case)
    model, wrapped = net, objective
    if rank is not None:
        model = DistributedDataParallel(net)
        wrapped = GatheredObjective(objective, shard_edges=CASES[case].get("shard", False))
    losses = []
    for images, labels in _batches():
        if rank is not None:
            share = slice(rank * len(labels) // WORLD, (rank + 1) * len(labels) // WORLD)
            images, labels = images[share], labels[share]
        losses.append(train_step(model, wrapped, images, labels, optimisers, clip_value=10.0,
                                 fused=CASES[case].get("fused", False)))
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state.update({f"objective.{k}": v for k, v in objective.state_dict().items()})
    return state, losses


def _loss_table(case, losses):
    # sharded, the diagnostics describe one process's anchors (documented): every other logged value must agree
    keep = [k for k in sorted(losses[0]) if not (CASES[case].get("shard") and k.startswith("diag_"))]
    return torch.tensor([[s[k] for k in keep] for s in losses])


def _train_worker(rank, rendezvous, out_dir, case):
    _join(rank, rendezvous)
    try:
        state, losses = _train(case, rank)
        torch.save({"state": state, "losses": _loss_table(case, losses)}, os.path.join(out_dir, f"r{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_train_as_one_on_the_concatenated_batch(tmp_path, case):
    """Under DDP with GatheredObjective, two processes holding half a batch each end two training steps with the
    parameters (embedding network, metric loss's proxies, GNN, classifier), schedules and logged losses of one
    process trained on the whole batches."""
    mp.spawn(_train_worker, args=(_rendezvous(tmp_path), str(tmp_path), case), nprocs=WORLD, join=True)
    state, losses = _train(case)
    expected_losses = _loss_table(case, losses)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"r{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["losses"], expected_losses)
        assert set(got["state"]) == set(state)
        for key, value in state.items():
            # float rounding only: sums over processes (and over a process's pairs) add in another order, and two
            # SGD steps carry it into the BatchNorm running statistics at up to 1.3e-5 absolute (seen in CI)
            torch.testing.assert_close(got["state"][key], value, rtol=1e-4, atol=5e-5, equal_nan=True,
                                       msg=lambda m, key=key: f"{case}: {key} differs on rank {rank}: {m}")


# ------------------------------------------------------------------------------------- global BatchNorm
def _bn_inputs():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(WORLD * 4, 3, 5, 5, generator=g, dtype=torch.double) * 2 + 1
    upstream = torch.randn(WORLD * 4, 3, 5, 5, generator=g, dtype=torch.double)
    return x, upstream


def _bn_layer():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    return bn


def _bn_worker(rank, rendezvous, out_dir):
    _join(rank, rendezvous)
    try:
        x, upstream = _bn_inputs()
        own = slice(rank * 4, (rank + 1) * 4)
        bn = use_global_batchnorm(_bn_layer())
        xr = x[own].clone().requires_grad_(True)
        out = bn(xr)
        # every process's loss reads only its own outputs here: the sum over processes is the global loss
        (out * upstream[own]).sum().backward()
        torch.save({"out": out.detach(), "grad": xr.grad, "weight_grad": bn.weight.grad, "bias_grad": bn.bias.grad,
                    "running_mean": bn.running_mean, "running_var": bn.running_var},
                   os.path.join(out_dir, f"bn{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_global_batchnorm_is_batchnorm_of_the_concatenated_batch(tmp_path):
    mp.spawn(_bn_worker, args=(_rendezvous(tmp_path), str(tmp_path)), nprocs=WORLD, join=True)
    x, upstream = _bn_inputs()
    bn = _bn_layer()
    whole = x.clone().requires_grad_(True)
    out = bn(whole)
    (out * upstream).sum().backward()
    weight_grad, bias_grad = 0, 0
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"bn{rank}.pt", weights_only=True)
        own = slice(rank * 4, (rank + 1) * 4)
        torch.testing.assert_close(got["out"], out[own].detach())
        torch.testing.assert_close(got["grad"], whole.grad[own])
        torch.testing.assert_close(got["running_mean"], bn.running_mean)
        torch.testing.assert_close(got["running_var"], bn.running_var)
        weight_grad, bias_grad = weight_grad + got["weight_grad"], bias_grad + got["bias_grad"]
    # the affine parameters' gradients: each process holds its samples' share (DDP sums and averages them)
    torch.testing.assert_close(weight_grad, bn.weight.grad)
    torch.testing.assert_close(bias_grad, bn.bias.grad)


# ------------------------------------------------------------------------------- evaluation in blocks
@pytest.mark.parametrize("length, world", [(0, 2), (1, 2), (7, 2), (7, 3), (12, 5)])
def test_shard_ranges_cover_in_order(length, world):
    blocks = [shard_range(length, r, world) for r in range(world)]
    assert [i for b in blocks for i in b] == list(range(length))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def _rows_worker(rank, rendezvous, out_dir):
    _join(rank, rendezvous)
    try:
        block = shard_range(7, rank, WORLD)
        rows = torch.arange(7 * 3, dtype=torch.float).view(7, 3)[block.start:block.stop]
        labels = torch.arange(7)[block.start:block.stop] * 10
        torch.save({"rows": all_gather_rows(rows), "labels": all_gather_rows(labels)},
                   os.path.join(out_dir, f"rows{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_uneven_blocks_gather_back_in_order(tmp_path):
    mp.spawn(_rows_worker, args=(_rendezvous(tmp_path), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rows{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["rows"], torch.arange(21, dtype=torch.float).view(7, 3))
        assert got["labels"].tolist() == [0, 10, 20, 30, 40, 50, 60]


@pytest.mark.parametrize("layer,shardable", [("gca", True), ("gatv2", True), ("transformer", True), ("gine", True),
                                             ("gen", False)])
def test_layers_that_normalise_over_nodes_are_not_sharded(layer, shardable):
    """GENConv's BatchNorm over the nodes would see the other processes' nodes, which have no incoming edges on this
    process: such a layer says it cannot be sharded, and the objective falls back to the repeated graph, saying so."""
    import warnings

    from gca.model import GCAHNG
    objective = GCAHNG(8, 4, num_layers=1, heads=2, layer=layer)
    assert objective.generator.propagation.supports_sharding is shardable
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = GatheredObjective(objective, shard_edges=True)
    assert wrapped.shards_edges is shardable
    assert [str(w.message) for w in caught] == ([] if shardable else [
        "layer 'gen' cannot be sharded by edges (its blocks lack supports_sharding); every process repeats the "
        "whole graph"])
    assert GatheredObjective(objective, shard_edges=False).shards_edges is False
