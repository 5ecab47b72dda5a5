"""gca.distributed with two gloo processes on CPU, against one process on the concatenated batch."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gca.distributed import ProcessGroupInfo, all_gather_with_grad

WORLD = 2
ROWS, DIM = 3, 5


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(WORLD * ROWS, DIM, generator=g, dtype=torch.double)
    weights = torch.randn(WORLD, WORLD * ROWS, DIM, generator=g, dtype=torch.double)
    return x, weights


def _loss(gathered, weight):
    # rank-specific and non-linear in every gathered row, so a wrong routing or sum shows
    return ((gathered * weight).sum(-1).tanh() ** 2).sum() + gathered.pow(3).mean()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, out_dir, mismatched):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
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
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), mismatched), nprocs=WORLD, join=True)
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
