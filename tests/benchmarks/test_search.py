"""benchmarks/search.py: a candidate's run folder is its own, and running a search again continues or
re-evaluates its runs instead of training over them."""
import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _records(folder: Path, kind: str):
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == kind]


def test_candidates_sharing_a_long_label_prefix_train_in_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    from search import run_one

    from gca.testing.runs import tiny_run_overrides
    base = tiny_run_overrides(tmp_path, "solver.epochs=2")
    prefix = "Multi-Similarity + GCA-HNG, the first-epoch schedule scale"      # longer than the 50 kept
    method = run_one("omniglot", base, f"{prefix}, method", ["loss.metric=multi_similarity"], 0, tmp_path / "w")
    run_one("omniglot", base, f"{prefix}, baseline", ["gca.enabled=false"], 0, tmp_path / "w")
    folders = sorted((tmp_path / "w").iterdir())
    assert len(folders) == 2 and all(len(f.name) <= 53 for f in folders)
    # each folder holds one run of two epochs: one with a generator, one without
    epochs = {f.name: _records(f, "epoch") for f in folders}
    assert all(len(e) == 2 for e in epochs.values())
    assert sorted(all("generator" in r for r in e) for e in epochs.values()) == [False, True]
    # the same search again: the finished run is evaluated again from its checkpoint, not retrained
    trained = {f.name: len(_records(f, "epoch")) for f in folders}
    again = run_one("omniglot", base, f"{prefix}, method", ["loss.metric=multi_similarity"], 0, tmp_path / "w")
    assert (again["val_R@1"], again["best_step"]) == (method["val_R@1"], method["best_step"])
    assert {f.name: len(_records(f, "epoch")) for f in folders} == trained
