"""Checkpoints: data-only loading, atomic writes, and resuming that finishes exactly what one run would."""
import copy
import dataclasses
import json
import os
import pickle

import numpy as np
import pytest
import torch

from gca.cli import main as cli_main
from gca.testing.runs import comparable_records, tiny_run_overrides
from gca.train import Trainer, load_config
from gca.train.checkpoint import CheckpointError, load_checkpoint
from gca.train.step import NonFiniteLossError


def _config(tmp_path, *extra, name="run"):
    return load_config(None, tiny_run_overrides(tmp_path, "log_every_steps=1", "deterministic=true",
                                                "checkpoint_every_steps=1", f"name={name}", *extra))


class _Crafted:
    """Unpickling this runs ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _assert_same_run(a_dir, b_dir):
    result_a, result_b = (json.loads((d / "result.json").read_text()) for d in (a_dir, b_dir))
    assert result_a.pop("name") != result_b.pop("name") and result_a == result_b
    assert comparable_records(a_dir) == comparable_records(b_dir)
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(a_dir / name, required=("model",)), load_checkpoint(b_dir / name, required=("model",))
        assert a["epoch"] == b["epoch"]
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (name, key)


def test_crafted_checkpoint_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.pt"
    torch.save({"config": {}, "model": {}, "payload": _Crafted(marker)}, bad)
    # what the old code did: unpickling with weights_only=False runs the payload
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=rf"checkpoint {bad} holds a (posix|nt|os)\.system object.*refusing"):
        load_checkpoint(bad)
    assert cli_main(["eval", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and "refusing" in err and len(err.splitlines()) == 1
    trainer = Trainer(_config(tmp_path), progress=False)
    with pytest.raises(CheckpointError, match="refusing"):
        trainer.resume(bad)
    assert not marker.exists()


def test_training_state_loads_as_data_only(tmp_path):
    trainer = Trainer(_config(tmp_path, "solver.max_steps=2"), progress=False)
    trainer.fit()
    state = torch.load(trainer.run_dir / "last.pt", weights_only=True)     # raises if anything is not data
    assert state["step"] == 2 and isinstance(state["config"], dict)
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    trainer = Trainer(_config(tmp_path, "solver.max_steps=1"), progress=False)
    trainer.fit()
    other = Trainer(_config(tmp_path, "model.embedding_dim=32"), progress=False)
    with pytest.raises(CheckpointError, match=r"different config \(model.embedding_dim is 16 there and 32 here\)"):
        other.resume()
    longer = Trainer(_config(tmp_path, "solver.max_steps=3"), progress=False)     # a longer budget is fine
    assert longer.resume() and longer.step == 1
    with pytest.raises(FileNotFoundError, match="checkpoint .*nothing.pt does not exist"):
        longer.resume(tmp_path / "nothing.pt")


class _Killed(Exception):
    pass


@pytest.mark.parametrize("where", ["before_end_of_epoch", "before_best_file", "mid_epoch"])
def test_a_kill_anywhere_resumes_to_the_same_run(tmp_path, monkeypatch, where):
    extra = ("solver.max_steps=4", "solver.steps_per_epoch=2")
    reference = Trainer(_config(tmp_path, *extra, name="reference"), progress=False)
    reference.fit()
    assert reference.best is not None and reference.epoch == 2

    if where == "before_end_of_epoch":       # after the final step's checkpoint: the lost validation
        real_end = Trainer._end_epoch
        calls = []

        def end_epoch(self):
            calls.append(self.epoch)
            if len(calls) == 2:
                raise _Killed("end of epoch 2")
            return real_end(self)
        monkeypatch.setattr(Trainer, "_end_epoch", end_epoch)
    elif where == "before_best_file":
        # between the checkpoint that selects the finally chosen epoch and its best.pt: only the rewrite on
        # resume can give the test its weights (no later epoch writes best.pt again)
        real_save_best, fired = Trainer._save_best, []

        def save_best(self):
            if self.epoch == reference.best["epoch"] and not fired:
                fired.append(True)
                raise _Killed("before best.pt")
            return real_save_best(self)
        monkeypatch.setattr(Trainer, "_save_best", save_best)
    else:
        real_step = Trainer._one_step
        steps = []

        def one_step(self, images, labels):
            steps.append(1)
            if len(steps) == 4:
                raise _Killed("step 4")
            return real_step(self, images, labels)
        monkeypatch.setattr(Trainer, "_one_step", one_step)
    killed = Trainer(_config(tmp_path, *extra, name="killed"), progress=False)
    with pytest.raises(_Killed):
        killed.fit()
    resumed = Trainer(_config(tmp_path, *extra, name="killed"), progress=False)
    assert resumed.resume()
    resumed.fit()
    _assert_same_run(reference.run_dir, resumed.run_dir)
    epochs = [r for r in comparable_records(resumed.run_dir) if r["kind"] == "epoch"]
    assert [r["steps"] for r in epochs] == [2, 2]         # each epoch's summary counts all its steps once


def test_nonfinite_loss_raises_by_default_and_skip_policy_counts_and_stops(tmp_path, monkeypatch):
    trainer = Trainer(_config(tmp_path, "solver.max_steps=2", name="raise"), progress=False)
    calls = []
    real = type(trainer.metric_loss).forward

    def nan_on_second_call(self, *args, **kwargs):
        calls.append(1)
        out = real(self, *args, **kwargs)
        return out * float("nan") if len(calls) == 2 else out
    monkeypatch.setattr(type(trainer.metric_loss), "forward", nan_on_second_call)
    with pytest.raises(NonFiniteLossError, match="non-finite metric \\(phase A\\) loss at step 1"):
        trainer.fit()      # the GCA-HNG path calls the metric loss twice per step (J_m, J_syn)

    monkeypatch.setattr(type(trainer.metric_loss), "forward", real)
    skipper = Trainer(_config(tmp_path, "solver.max_steps=4", "solver.steps_per_epoch=4", "solver.nonfinite=skip",
                              "gca.enabled=false", name="skip"), progress=False)
    before = {k: v.clone() for k, v in skipper.model.state_dict().items()}
    poisoned = {2, 3}                        # steps 2 and 3 of 4 give NaN

    def nan_steps(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        return out * float("nan") if skipper.step + 1 in poisoned else out
    monkeypatch.setattr(type(skipper.metric_loss), "forward", nan_steps)
    skipper.fit()
    records = comparable_records(skipper.run_dir)
    assert [r["step"] for r in records if r["kind"] == "skipped"] == [2, 3]
    epoch = next(r for r in records if r["kind"] == "epoch")
    assert epoch["nonfinite_steps"] == 2 and epoch["steps"] == 4 and np.isfinite(epoch["metric"])
    assert any(not torch.equal(before[k], v) for k, v in skipper.model.state_dict().items())

    poisoned = {1, 2, 3, 4}
    stopper = Trainer(_config(tmp_path, "solver.max_steps=4", "solver.nonfinite=skip", "solver.max_nonfinite_in_row=3",
                              "gca.enabled=false", name="stop"), progress=False)
    skipper = stopper
    with pytest.raises(NonFiniteLossError, match=r"3 non-finite losses in a row up to step 3"):
        stopper.fit()


def test_best_file_of_another_run_is_not_used(tmp_path):
    trainer = Trainer(_config(tmp_path, "solver.max_steps=4", "solver.steps_per_epoch=2"), progress=False)
    trainer.fit()
    best = load_checkpoint(trainer.run_dir / "best.pt")
    best["epoch"] = 99
    torch.save(best, trainer.run_dir / "best.pt")
    with pytest.raises(CheckpointError, match="holds epoch 99, but the run selected epoch"):
        trainer.test()


def test_pickled_non_dict_and_truncated_files_are_named(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=rf"{text} is not a readable PyTorch checkpoint"):
        load_checkpoint(text)
    good = tmp_path / "good.pt"
    torch.save({"config": {}, "model": {"w": torch.randn(100, 100)}}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{cut} is not a readable PyTorch checkpoint \(truncated or corrupt"):
        load_checkpoint(cut)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(CheckpointError, match="holds a list, not a gca checkpoint"):
        load_checkpoint(listed)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"config": {}}))
    with pytest.raises(CheckpointError, match=str(plain)):
        load_checkpoint(plain)


def test_a_checkpoint_of_an_older_version_lacks_new_keys_at_their_defaults():
    """A key added after a checkpoint was written (``gca.step``, ``gca.compile``) counts as its default there."""
    from gca.train.checkpoint import config_difference
    from gca.train.config import RunConfig
    current = dataclasses.asdict(RunConfig())
    older = copy.deepcopy(current)
    del older["gca"]["step"], older["gca"]["compile"]
    assert config_difference(older, current) is None
    current["gca"]["step"] = "fused"
    assert config_difference(older, current) == "gca.step is 'two_pass' there and 'fused' here"
    current["gca"]["step"] = "two_pass"
    current["gca"]["compile"] = True          # compiling changes no value: a run may resume either way
    assert config_difference(older, current) is None
