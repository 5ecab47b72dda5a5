import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("GCA_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))


@pytest.mark.skipif(not (SHARED_DATA / "omniglot").is_dir(), reason="needs ../shared/data/omniglot")
def test_quality_quick_runs_and_writes_rows(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "quality.py"), "--quick", "--out", str(out),
                           "--workdir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=900,
                          cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "quality.json").read_text())
    assert [r["method"] for r in rows] == ["N-pair", "N-pair + GCA-HNG"]
    assert {r["dataset"] for r in rows} == {"omniglot-smoke"}
    base, gca = rows
    assert base["settings"]["overrides"][-1] == "gca.enabled=false"
    assert gca["settings"]["overrides"] == base["settings"]["overrides"][:-1]       # the same budget otherwise
    metrics = ("R@1", "R@2", "R@4", "R@8", "MAP@R", "R-Precision")
    for row, run_name, gca_on in ((base, "gca_enabled_false_s0", False), (gca, "gca_s0", True)):
        (run,) = row["runs"]
        assert run["seed"] == 0 and run["steps"] == 30                   # 2 epochs of 15 steps
        assert run["checkpoint"] == "best on validation (epoch 2)"        # validated at epoch 2 only
        # the table reports what the trainer measured on the test classes
        run_dir = tmp_path / "runs" / "omniglot-smoke" / run_name
        result = json.loads((run_dir / "result.json").read_text())
        assert result["gca"] is gca_on and result["steps"] == 30
        assert {m: run[m] for m in metrics} == {m: result[m] for m in metrics}
        # one seed: the mean is that run, the spread zero
        assert row["mean"] == {m: run[m] for m in metrics} and row["std"] == {m: 0.0 for m in metrics}
        # recall@k cannot fall as k grows; MAP@R is R-precision weighted by precisions <= 1
        assert run["R@1"] <= run["R@2"] <= run["R@4"] <= run["R@8"]
        assert run["MAP@R"] <= run["R-Precision"]
        # the method switch took effect: only the GCA-HNG run trained a generator
        epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                  if json.loads(line)["kind"] == "epoch"]
        assert len(epochs) == 2 and all(("generator" in e) is gca_on for e in epochs)
    assert gca["runs"][0]["R@1"] != base["runs"][0]["R@1"]
    # the markdown table: the numbers in %, and the paired difference (one seed: no noise estimate)
    md = (out / "quality.md").read_text()
    for row in rows:
        cells = " | ".join(f"{100 * row['mean'][m]:.2f} ± 0.00" for m in metrics)
        assert f"| {row['method']} | {cells} |" in md
    diff = 100 * (gca["runs"][0]["R@1"] - base["runs"][0]["R@1"])
    assert f"| {diff:+.2f} ± inf (within noise of N-pair; sign-flip p = 1) |" in md
    assert "| (baseline) |" in md
    for name in ("quality_recall.png", "projection_omniglot-smoke.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 500 and image.size[1] > 300


def test_every_row_of_a_protocol_trains_in_its_own_folder():
    """Run folders are slugs of the rows' overrides; Multi-Similarity's rows with and without GCA-HNG (and with
    the memory) share their first 60 characters and once shared one folder."""
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from quality import PROTOCOLS, methods_of, run_name
    for protocol in PROTOCOLS:
        rows = methods_of(protocol)
        names = {run_name(overrides, 0) for _, overrides in rows}
        assert len(names) == len(rows), protocol
        assert all(len(name) <= 63 and name.replace("_", "").isalnum() for name in names)
    assert run_name(["gca.enabled=false"], 3) == "gca_enabled_false_s3"        # short names stay readable


def test_sign_flip_p_value_against_enumeration():
    import itertools

    import numpy as np
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from quality import sign_flip_p_value
    rng = np.random.default_rng(0)
    for n in (1, 3, 5):
        diffs = rng.normal(0.5, 1.0, size=n)
        hits = [abs(np.mean(np.array(s) * diffs)) >= abs(diffs.mean()) - 1e-12
                for s in itertools.product([-1, 1], repeat=n)]
        assert sign_flip_p_value(diffs) == sum(hits) / len(hits)
    assert sign_flip_p_value(np.array([1.0, 2.0, 3.0, 4.0, 5.0])) == 2 / 32    # all positive: the smallest p


def test_a_method_with_processes_trains_under_torchrun(tmp_path, monkeypatch):
    """``@processes=2`` in a method's overrides starts ``torchrun`` with two processes (the global batch split
    between them); the row reads what rank 0 wrote."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    from quality import run_one, split_processes

    from gca.testing.runs import tiny_run_overrides
    assert split_processes(["a=1", "@processes=2", "b=2"]) == (2, ["a=1", "b=2"])
    assert split_processes(["a=1"]) == (1, ["a=1"])
    protocol = {"config": "omniglot", "overrides": tiny_run_overrides(tmp_path, "solver.epochs=1", "gca.dropout=0")}
    run = run_one(protocol, ["data.classes_per_batch=2", "@processes=2"], 0, tmp_path / "runs")
    result = json.loads((tmp_path / "runs" / "data_classes_per_batch_2__processes_2_s0" / "result.json").read_text())
    assert result["processes"] == 2 and run["steps"] == result["steps"] > 0
    assert {m: run[m] for m in ("R@1", "MAP@R")} == {m: result[m] for m in ("R@1", "MAP@R")}
    # a failing launch names the processes' error, not torchrun's summary
    with pytest.raises(RuntimeError, match="torchrun with 2 processes failed .*classes_per_batch"):
        run_one(protocol, ["data.classes_per_batch=1", "@processes=2"], 0, tmp_path / "runs")
