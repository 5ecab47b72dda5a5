"""The trainer under torchrun's environment: two gloo processes train as one process on the global batches."""
import json
import os
import uuid

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gca.testing.runs import comparable_records, tiny_run_overrides
from gca.train import Trainer, load_config
from gca.train.checkpoint import load_checkpoint

# no random augmentation and BN statistics frozen: a process's half batch then computes exactly what the
# whole batch computes for those samples, so the runs can be compared number for number
COMMON = ("data.transform=tensor", "model.bn_freeze=true", "solver.epochs=2", "eval.every_epochs=1")


def _worker(rank, world, rendezvous, tmp, overrides):
    # torchrun's environment, but the process group joined at a file before the Trainer looks: no TCP port to
    # pick and release, so no race with another program for it (the Trainer joins only when none is joined)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    torch.set_num_threads(1)
    cfg = load_config("omniglot", tiny_run_overrides(tmp, *overrides))
    result = Trainer(cfg, progress=False).fit()
    with open(os.path.join(tmp, f"result_rank{rank}.json"), "w") as f:
        json.dump(result, f)


METHODS = {
    "baseline": ("gca.enabled=false",),
    # the graph repeated on every process: the processes' random draws are in step, dropout and all
    "gca, graph repeated": ("gca.enabled=true", "gca.shard_edges=false"),
    # sharded by edges (the default): each process draws its own dropout masks and mixing weights for its
    # edges, so the comparison needs a generator without random draws
    "gca, graph sharded": ("gca.enabled=true", "gca.dropout=0", "gca.mixing=mean"),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_processes_train_as_one(tmp_path, method):
    overrides = METHODS[method]
    ddp = [*COMMON, *overrides, "data.classes_per_batch=2", f"output_dir={tmp_path / 'ddp'}", "name=run"]
    tiny_run_overrides(tmp_path)   # writes the data once, before two processes race to write it
    rendezvous = f"file://{tmp_path / f'rendezvous-{uuid.uuid4().hex}'}"
    mp.spawn(_worker, args=(2, rendezvous, str(tmp_path), ddp), nprocs=2, join=True)
    one = [*COMMON, *overrides, "data.classes_per_batch=4", f"output_dir={tmp_path / 'one'}", "name=run"]
    torch.set_num_threads(1)
    expected = Trainer(load_config("omniglot", tiny_run_overrides(tmp_path, *one)), progress=False).fit()

    # every process ends with the one-process run's result; the weights agree to float rounding (sums over
    # processes add in another order), so a retrieval metric may move by a near-tie among the 12 queries
    results = [json.loads((tmp_path / f"result_rank{r}.json").read_text()) for r in range(2)]
    assert expected["processes"] == 1
    for result in results:
        assert result.keys() == expected.keys() and result["processes"] == 2
        for key, value in expected.items():
            if key == "processes":
                continue
            assert result[key] == (pytest.approx(value, abs=0.02) if isinstance(value, float) else value), key
    # one set of files, written once: the same records as the one-process run, no duplicates
    got_records = comparable_records(tmp_path / "ddp" / "run")
    want_records = comparable_records(tmp_path / "one" / "run")
    assert [r["kind"] for r in got_records] == [r["kind"] for r in want_records]
    for got, want in zip(got_records, want_records):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if key == "processes":
                continue
            if key.startswith("diag_") and method == "gca, graph sharded":
                continue        # sharded, the diagnostics are those of rank 0's anchors (documented)
            if got["kind"] in ("val", "test") and isinstance(value, float):
                close = pytest.approx(value, abs=0.02)
            else:
                close = pytest.approx(value, rel=1e-4, abs=1e-5) if isinstance(value, float) else value
            assert got[key] == close, (got["kind"], key)
    got = load_checkpoint(tmp_path / "ddp" / "run" / "last.pt")
    want = load_checkpoint(tmp_path / "one" / "run" / "last.pt")
    for part in ("model", "objective"):
        assert got[part].keys() == want[part].keys()
        for key, value in want[part].items():
            # AdamW turns rounding-level differences of gradients that are zero up to rounding (an edge's two
            # key biases) into steps of up to the learning rate: 1e-4 absolute, far below what a wrong
            # gradient or per-process statistics move (the first loss alone then differs by a factor 4)
            torch.testing.assert_close(got[part][key], value, rtol=1e-3, atol=1e-4, equal_nan=True,
                                       msg=lambda m, key=key: f"{part}.{key}: {m}")
