import json

import pytest
import torch

from gca.baselines import HDMLInterpolation
from gca.cli import main as cli_main
from gca.model import GCAHNG
from gca.objective import MetricLossObjective, Objective
from gca.testing.runs import tiny_run_overrides
from gca.train import Trainer, load_config


def _overrides(tmp_path, *extra):
    return tiny_run_overrides(tmp_path, "plots=true", "log_every_steps=1", *extra)


def test_unknown_key_and_bad_values_are_named():
    with pytest.raises(ValueError, match="unknown config key 'solver.lrr'"):
        load_config("omniglot", ["solver.lrr=0.1"])
    with pytest.raises(ValueError, match="unknown config key 'colour'"):
        load_config(None, ["colour=red"])
    with pytest.raises(ValueError, match="samples_per_class"):
        load_config("omniglot", ["data.samples_per_class=1"])
    with pytest.raises(FileNotFoundError, match="packaged"):
        load_config("no_such_config")


def test_every_packaged_config_loads():
    from gca.train.config import CONFIG_DIR
    names = [str(p.relative_to(CONFIG_DIR))[:-5] for p in CONFIG_DIR.rglob("*.yaml")]
    assert len([n for n in names if n.startswith("paper/")]) == 12
    for name in names:
        cfg = load_config(name)
        assert cfg.model.embedding_dim % cfg.gca.heads == 0


def test_cli_reports_unknown_key_and_missing_root(tmp_path, capsys):
    assert cli_main(["train", "--config", "omniglot", "solver.lrr=1"]) == 2
    assert "unknown config key 'solver.lrr'" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    assert cli_main(["train", "--config", "omniglot", f"data.root={missing}", f"output_dir={tmp_path}",
                     "--no-progress"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_training_writes_metrics_checkpoints_and_plots(tmp_path):
    cfg = load_config(None, _overrides(tmp_path, "name=full"))
    trainer = Trainer(cfg, progress=False)
    result = trainer.fit()
    run = cfg.run_dir
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "result.json", "losses.png", "schedules.png",
                 "recall.png", "retrievals.png"):
        assert (run / name).is_file(), name
    kinds = [json.loads(line)["kind"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("epoch") == 3 and kinds.count("val") == 3 and kinds[-1] == "test"
    assert result["checkpoint"].startswith("best on validation")
    assert 0 <= result["R@1"] <= 1 and 0 <= result["MAP@R"] <= 1
    # the schedules moved at the epoch ends
    assert trainer.objective.hardness.previous_mean.item() < 1e6
    assert cli_main(["eval", "--checkpoint", str(run / "best.pt"), "--no-progress"]) == 0


@pytest.mark.parametrize("extra", [[], ["gca.memory_size=40", "gca.memory_k=3"]])
def test_resume_after_kill_equals_uninterrupted_run(tmp_path, extra):
    """Also with a cross-batch memory: its entries resume with the objective and steer the later steps."""
    straight = Trainer(load_config(None, _overrides(tmp_path, "name=straight", "plots=false", *extra)),
                       progress=False)
    straight.fit()
    steps_per_epoch = len(straight.sampler)
    kill_at = steps_per_epoch + 1                         # inside the second epoch
    first = Trainer(load_config(None, _overrides(tmp_path, "name=killed", "plots=false", *extra,
                                                 f"solver.max_steps={kill_at}", "checkpoint_every_steps=1")),
                    progress=False)
    first.fit()
    del first
    resumed = Trainer(load_config(None, _overrides(tmp_path, "name=killed", "plots=false", *extra)),
                      progress=False)
    assert resumed.resume()
    assert resumed.step == kill_at and resumed.step_in_epoch == 1
    resumed.fit()
    a, b = straight.state_dict(), resumed.state_dict()
    if extra:
        assert int(a["objective"]["generator.memory.filled"]) == 40
    for key in ("model", "objective"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    assert json.loads((straight.run_dir / "result.json").read_text())["R@1"] == \
        json.loads((resumed.run_dir / "result.json").read_text())["R@1"]


def test_a_new_run_refuses_a_folder_that_holds_one(tmp_path):
    """A finished run's folder is neither overwritten nor appended to by another config's run; resuming it only
    tests it again; a folder left by a run killed before its first checkpoint starts over clean."""
    done = Trainer(load_config(None, _overrides(tmp_path, "name=shared", "plots=false")), progress=False)
    result = done.fit()
    run = done.run_dir
    files = {name: (run / name).read_bytes() for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt")}
    other = Trainer(load_config(None, _overrides(tmp_path, "name=shared", "plots=false", "gca.enabled=false")),
                    progress=False)
    with pytest.raises(FileExistsError, match=f"run folder {run} already holds a run .*--resume"):
        other.fit()
    assert {name: (run / name).read_bytes() for name in files} == files
    again = Trainer(load_config(None, _overrides(tmp_path, "name=shared", "plots=false")), progress=False)
    assert again.resume()
    assert again.fit()["R@1"] == result["R@1"]
    assert _train_records(run) == _train_records_of(files["metrics.jsonl"])     # nothing trained again

    (run / "last.pt").unlink()
    fresh = Trainer(load_config(None, _overrides(tmp_path, "name=shared", "plots=false")), progress=False)
    assert fresh.fit()["R@1"] == result["R@1"]                  # deterministic on CPU: the same run again
    assert _train_records(run) == _train_records_of(files["metrics.jsonl"])     # one run's records, not two


def _train_records_of(text: bytes):
    records = [json.loads(line) for line in text.decode().splitlines()]
    return [r for r in records if r["kind"] == "train"]


def _train_records(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "train"]


def test_baseline_and_hdml_run_in_the_same_loop(tmp_path):
    # no augmentation here: augmentations draw from the global RNG, which GCA-HNG's initialisation and
    # random mixing draw from too, so only without it are the pixels of every batch a function of the seed
    runs = {}
    for name, extra in (("baseline", "gca.enabled=false"), ("hdml", "gca.generator=hdml"),
                        ("gca", "gca.generator=gca")):
        cfg = load_config(None, _overrides(tmp_path, f"name={name}", extra, "solver.epochs=1", "plots=false",
                                           "data.transform=tensor"))
        trainer = Trainer(cfg, progress=False)
        initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        inputs = []
        trainer.model.register_forward_pre_hook(lambda m, args: inputs.append(args[0].clone()) if m.training else None)
        result = trainer.fit()
        runs[name] = dict(trainer=trainer, initial=initial, inputs=inputs, result=result,
                          train=_train_records(cfg.run_dir))
    base = runs["baseline"]
    assert isinstance(base["trainer"].objective, MetricLossObjective) and base["trainer"].opt_gnn is None
    assert isinstance(runs["hdml"]["trainer"].objective, HDMLInterpolation) and runs["hdml"]["trainer"].opt_gnn is None
    assert isinstance(runs["gca"]["trainer"].objective, GCAHNG) and runs["gca"]["trainer"].opt_gnn is not None
    assert all(isinstance(r["trainer"].objective, Objective) for r in runs.values())
    for name, run in runs.items():
        trainer = run["trainer"]
        assert run["result"]["gca"] is (name != "baseline")
        assert run["result"]["steps"] == trainer.step == len(run["inputs"]) == len(run["train"]) == trainer.epoch_length
        # the same initial weights and the same batches, in the same order, whatever the method
        assert all(torch.equal(run["initial"][k], base["initial"][k]) for k in base["initial"])
        assert all(torch.equal(x, y) for x, y in zip(run["inputs"], base["inputs"]))
        # hence the same J_m at the first step; what each method adds to it differs
        assert run["train"][0]["metric"] == pytest.approx(base["train"][0]["metric"], rel=1e-5)
        final = trainer.model.state_dict()
        assert any(not torch.equal(final[k], run["initial"][k]) for k in final)      # it trained
        if name != "baseline":                                                       # and differently
            assert any(not torch.equal(final[k], base["trainer"].model.state_dict()[k]) for k in final)
    for record in base["train"]:
        assert set(record) == {"kind", "epoch", "step", "metric", "total"} and record["total"] == record["metric"]
    for record in runs["hdml"]["train"]:
        assert "generator" not in record and "node" not in record
        assert record["total"] == pytest.approx(record["metric"] + record["synthetic_weight"] * record["synthetic"],
                                                rel=1e-5)
    for record in runs["gca"]["train"]:
        assert {"synthetic", "node", "classifier", "generator"} <= set(record)


def test_bf16_autocast_training_on_cpu(tmp_path):
    runs = {}
    for amp in ("off", "bf16"):
        cfg = load_config(None, _overrides(tmp_path, f"name=amp_{amp}", f"solver.amp='{amp}'", "solver.epochs=1",
                                           "plots=false"))
        trainer = Trainer(cfg, progress=False)
        seen = []
        trainer.model.backbone.register_forward_hook(lambda m, args, out: seen.append(("backbone", out.dtype)))
        trainer.metric_loss.register_forward_hook(lambda m, args, out: seen.append(("loss", args[0].dtype, out.dtype)))
        trainer.fit()
        runs[amp] = dict(trainer=trainer, seen=set(seen), train=_train_records(cfg.run_dir))
    assert runs["off"]["trainer"].amp_dtype is None and runs["bf16"]["trainer"].amp_dtype == torch.bfloat16
    # the backbone ran in bfloat16 (training and evaluation), the metric loss got and gave float32
    assert runs["bf16"]["seen"] == {("backbone", torch.bfloat16), ("loss", torch.float32, torch.float32)}
    assert runs["off"]["seen"] == {("backbone", torch.float32), ("loss", torch.float32, torch.float32)}
    # the same first batch and weights: the first losses agree up to bfloat16 rounding, without being equal
    first_off, first_bf16 = runs["off"]["train"][0], runs["bf16"]["train"][0]
    for key in ("metric", "total", "generator"):
        assert first_bf16[key] != first_off[key]
        assert first_bf16[key] == pytest.approx(first_off[key], rel=0.1)
    assert all(p.dtype == torch.float32 for p in runs["bf16"]["trainer"].model.parameters())


def test_cli_prepare_lists_datasets(capsys):
    assert cli_main(["prepare", "--list"]) == 0
    out = capsys.readouterr().out
    assert "cub200" in out and "inshop" in out


def test_frozen_backbone_feature_cache_is_computed_once(tmp_path):
    over = _overrides(tmp_path, "name=feat", "data.features=true", f"data.cache_dir={tmp_path / 'cache'}",
                      "solver.epochs=1", "plots=true")
    first = Trainer(load_config(None, over), progress=False)
    files = sorted((tmp_path / "cache").glob("*.pt"))
    assert len(files) == 2                       # the whole training split and the test split
    stamps = [f.stat().st_mtime_ns for f in files]
    result = first.fit()
    assert 0 <= result["R@1"] <= 1 and (first.run_dir / "retrievals.png").is_file()
    # a frozen backbone: only the head (and nothing of the backbone) is trained
    assert sum(p.numel() for p in first.model.backbone_parameters()) == 0
    Trainer(load_config(None, over + ["data.val_fraction=0.5"]), progress=False)
    assert [f.stat().st_mtime_ns for f in sorted((tmp_path / "cache").glob("*.pt"))] == stamps
