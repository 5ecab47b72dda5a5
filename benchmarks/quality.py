"""Does GCA-HNG beat its baselines on real data? Every row trained with the same budget and seeds.

    python benchmarks/quality.py --protocol omniglot-quick            # all rows, 3 seeds (~30 min, 2-core CPU)
    python benchmarks/quality.py --protocol caltech101-effnet         # frozen EfficientNet-Lite0 features
    python benchmarks/quality.py --protocol caltech101-finetune       # EfficientNet-Lite0 trained end to end
    python benchmarks/quality.py --quick                              # a smoke run of a few minutes

Each (method, seed) is one :class:`gca.train.Trainer` run from a packaged config plus overrides; the
checkpoint is selected on a validation split of the training classes and the test classes (never seen in
training) are evaluated once. Results are appended to ``quality.json`` after every run (``--resume`` skips
the runs already there), and ``quality.md`` plus ``quality_recall.png`` are rewritten from it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gca.train import Trainer, load_config  # noqa: E402

METRICS = ("R@1", "R@2", "R@4", "R@8", "MAP@R", "R-Precision")

# name -> (packaged config, overrides, budget description)
PROTOCOLS: Dict[str, dict] = {
    "omniglot-quick": dict(
        config="omniglot",
        overrides=["solver.epochs=4", "solver.steps_per_epoch=75", "solver.lr_decay_epochs=3", "eval.every_epochs=2"],
        budget="300 steps (4 epochs of 75 batches of 32 classes x 2), small CNN from scratch, D=64, 2-core CPU"),
    # the converged Omniglot protocol: the baselines' validation plateau (results/search_plateau_omniglot.md: N-pair
    # and Proxy-Anchor gain about a point of validation R@1 between 2000 and 3000 steps, nothing after)
    "omniglot": dict(
        config="omniglot", methods="strong+ablations",
        overrides=["solver.epochs=12", "solver.steps_per_epoch=250", "solver.lr_decay_epochs=3",
                   # chosen on validation classes: results/search_schedule_scale.md
                   "gca.schedule_scale=first_epoch", "gca.alpha=1", "gca.beta=1"],
        budget="3000 steps (12 epochs of 250 batches of 32 classes x 2, LR halved every 750 steps: the baselines' "
               "validation plateau, results/search_plateau_omniglot.md), small CNN from scratch, D=64; GCA-HNG with "
               "the scale-free schedules (first_epoch, alpha = beta = 1) chosen on validation classes; proxy losses "
               "with J_syn routed to the negatives (results/search_proxy_routing.md)"),
    # the same protocol stopped at 2000 steps, about a point of validation R@1 short of the plateau; it holds the
    # ablations, the two-process rows and N-pair's memory row
    "omniglot-2000": dict(
        config="omniglot", methods="strong+ablations",
        overrides=["solver.epochs=8", "solver.steps_per_epoch=250", "solver.lr_decay_epochs=3",
                   "gca.schedule_scale=first_epoch", "gca.alpha=1", "gca.beta=1"],
        budget="2000 steps (8 epochs of 250 batches of 32 classes x 2, LR halved every 750 steps), small CNN from "
               "scratch, D=64; GCA-HNG with the scale-free schedules (first_epoch, alpha = beta = 1) chosen on "
               "validation classes; proxy losses with J_syn routed to the negatives (results/search_proxy_routing.md)"),
    "omniglot-step": dict(
        config="omniglot", methods="step",
        overrides=["solver.epochs=4", "solver.steps_per_epoch=75", "solver.lr_decay_epochs=3", "eval.every_epochs=2"],
        budget="300 steps (4 epochs of 75 batches of 32 classes x 2), small CNN from scratch, D=64: the two-pass "
               "step of METHOD 2.6 against the fused step (gca.train.step), same seeds"),
    "caltech101-finetune": dict(
        config="caltech101_finetune", methods="strong", overrides=[],
        budget="300 steps (6 epochs of 50 batches of 16 classes x 4, the first trains the head only), ImageNet "
               "EfficientNet-Lite0 fine-tuned end to end at 128 px, BN statistics frozen, D=128; backbone LR "
               "1.5e-4 (the authors'), head 10x; the losses' settings and GCA-HNG's schedules are the ones "
               "chosen on Omniglot's validation classes (no search on Caltech-101)"),
    "caltech101-effnet": dict(
        config="caltech101_effnet",
        overrides=["solver.epochs=8", "solver.steps_per_epoch=50", "eval.every_epochs=2"],
        budget="400 steps (8 epochs of 50 batches of 16 classes x 4) on cached ImageNet EfficientNet-Lite0 "
               "features (frozen backbone), BN+Linear head to D=128"),
}

#: a method "override" that is not a config key: train under ``torchrun`` with this many processes
PROCESSES = "@processes="


# (method label, overrides); the N-pair rows first, then ablations of GCA-HNG, then Proxy-Anchor.
METHODS: List[tuple] = [
    ("N-pair", ["gca.enabled=false"]),
    ("N-pair + HDML interpolation (local, scalar)", ["gca.generator=hdml"]),
    ("N-pair + GCA-HNG", []),
    ("GCA-HNG ablation: no propagation (L=0)", ["gca.num_layers=0"]),
    ("GCA-HNG ablation: one scalar weight per pair", ["gca.per_channel=false"]),
    ("GCA-HNG ablation: one negative sample per class", ["gca.negatives_per_class=one"]),
    ("GCA-HNG layer: gatv2", ["gca.layer=gatv2"]),
    ("GCA-HNG layer: transformer", ["gca.layer=transformer"]),
    ("GCA-HNG layer: gine", ["gca.layer=gine"]),
    ("GCA-HNG layer: gen", ["gca.layer=gen"]),
    ("Proxy-Anchor", ["loss.metric=proxy_anchor", "gca.enabled=false"]),
    ("Proxy-Anchor + GCA-HNG", ["loss.metric=proxy_anchor"]),
]
BASELINE_OF = {"Proxy-Anchor + GCA-HNG": "Proxy-Anchor", "Multi-Similarity + GCA-HNG": "Multi-Similarity",
               "Multi-Similarity + GCA-HNG (J_gce weight 1)": "Multi-Similarity",
               "Proxy-Anchor (alpha 32) + GCA-HNG": "Proxy-Anchor (alpha 32)",
               "N-pair + GCA-HNG, fused step": "N-pair + GCA-HNG",
               "N-pair + GCA-HNG, 2 processes (torchrun, edges sharded)": "N-pair + GCA-HNG",
               "N-pair + GCA-HNG + memory (4096, k 16)": "N-pair + GCA-HNG",
               "Multi-Similarity + GCA-HNG + memory (4096, k 16)": "Multi-Similarity + GCA-HNG",
               "Proxy-Anchor + GCA-HNG, J_gce weight 0": "Proxy-Anchor"}

# The fused step against the two-pass one (issue "A quarter of the authors' cost"): its row's last column is
# the paired difference to the two-pass row.
STEP_METHODS: List[tuple] = [
    ("N-pair", ["gca.enabled=false"]),
    ("N-pair + GCA-HNG", ["gca.step=two_pass"]),
    ("N-pair + GCA-HNG, fused step", ["gca.step=fused", "gca.layer_kwargs={recompute: true}"]),   # (as run)
]

# The converged protocols (issue "Make GCA-HNG pay"): three strong baselines, each with and without GCA-HNG.
# Their settings come from validation searches (benchmarks/search.py, results/search_*.md); the step budget from
# the baselines' validation plateau (results/search_plateau_*.md).
STRONG_METHODS: List[tuple] = [
    ("N-pair", ["loss.metric=npair", "gca.enabled=false"]),
    ("N-pair + GCA-HNG", ["loss.metric=npair"]),
    # beta 40 chosen on validation classes (results/search_baseline_multi_similarity.md)
    ("Multi-Similarity", ["loss.metric=multi_similarity", "loss.metric_kwargs.beta=40", "gca.enabled=false"]),
    # J_gce kept out (weight 0), chosen on validation classes (results/search_ms_gca_schedules.md): the node
    # classification through the GNN into the backbone costs Multi-Similarity about 3 points of validation R@1
    ("Multi-Similarity + GCA-HNG", ["loss.metric=multi_similarity", "loss.metric_kwargs.beta=40",
                                    "gca.node_loss_weight=0"]),
    # alpha 16 chosen on validation classes at 800 and at 2000 steps (results/search_baseline_proxy_anchor*.md)
    ("Proxy-Anchor", ["loss.metric=proxy_anchor", "loss.metric_kwargs.alpha=16", "gca.enabled=false"]),
    ("Proxy-Anchor + GCA-HNG", ["loss.metric=proxy_anchor", "loss.metric_kwargs.alpha=16"]),
]


# Ablations of GCA-HNG on the converged Omniglot protocol, on N-pair (the paper's base loss, where GCA-HNG
# gains): the paired difference in their last column is to N-pair alone; compare them with "N-pair + GCA-HNG".
CONVERGED_ABLATIONS: List[tuple] = [
    ("GCA-HNG ablation: no propagation (L=0)", ["loss.metric=npair", "gca.num_layers=0"]),
    ("GCA-HNG ablation: one scalar weight per pair", ["loss.metric=npair", "gca.per_channel=false"]),
    ("GCA-HNG ablation: one negative sample per class", ["loss.metric=npair", "gca.negatives_per_class=one"]),
    ("GCA-HNG layer: gatv2", ["loss.metric=npair", "gca.layer=gatv2"]),
    ("GCA-HNG layer: transformer", ["loss.metric=npair", "gca.layer=transformer"]),
]

# The cross-batch memory (issue "Beyond one process"), each compared with its loss + GCA-HNG. With N-pair it
# collapses (results/search_npair_gca_memory.md, -3.41 +- 0.11 on validation; gca.memory.memory_loss_problem says
# why); with Multi-Similarity it trains (results/search_ms_gca_memory.md: 4096/k16 -0.34 +- 0.18 on validation).
MEMORY_METHODS: List[tuple] = [
    ("N-pair + GCA-HNG + memory (4096, k 16)", ["loss.metric=npair", "gca.memory_size=4096", "gca.memory_k=16"]),
    ("Multi-Similarity + GCA-HNG + memory (4096, k 16)",
     ["loss.metric=multi_similarity", "loss.metric_kwargs.beta=40", "gca.node_loss_weight=0",
      "gca.memory_size=4096", "gca.memory_k=16"]),
]

# Proxy-Anchor + GCA-HNG with J_gce kept out of the embedding network (weight 0), the setting its validation search
# preferred (results/search_pa_gca_jgce.md: +0.52 +- 0.44 over weight 1, within noise, so the strong row kept the
# default); run on the converged protocol after the strong rows, against Proxy-Anchor alone.
FOLLOW_UP_METHODS: List[tuple] = [
    ("Proxy-Anchor + GCA-HNG, J_gce weight 0",
     ["loss.metric=proxy_anchor", "loss.metric_kwargs.alpha=16", "gca.node_loss_weight=0"]),
]

# Data-parallel training (issue "Beyond one process"): the same global batch of 32 classes x 2 from two processes
# of 16 classes each, started by torchrun, the graph sharded by edges; compared with the one-process row.
DDP_METHODS: List[tuple] = [
    ("N-pair + GCA-HNG, 2 processes (torchrun, edges sharded)",
     ["loss.metric=npair", "data.classes_per_batch=16", f"{PROCESSES}2"]),
]


def slug(text: str, limit: int = 60) -> str:
    """A folder-safe name for a run: letters and digits kept, everything else ``_``, at most ``limit`` long."""
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")[:limit]


def folder_name(text: str, limit: int = 60) -> str:
    """A run folder's name for ``text``: its slug, and when that is longer than ``limit``, its first characters
    and a hash of the whole text (texts sharing a long prefix, such as Multi-Similarity's rows with and without
    GCA-HNG, once got one folder)."""
    name = slug(text, limit=len(text))
    if len(name) > limit:
        name = f"{name[:limit - 9].rstrip('_')}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return name


def run_name(method_overrides: List[str], seed: int) -> str:
    """The run folder of one (method, seed) in a protocol's work directory."""
    return f"{folder_name(' '.join(method_overrides) or 'gca')}_s{seed}"


def methods_of(protocol_name: str) -> List[tuple]:
    """The rows a protocol compares: the strong baselines' for the converged protocols (on Omniglot also
    GCA-HNG's ablations), the two steps for the step comparison, the short protocols' rows otherwise."""
    kind = PROTOCOLS[protocol_name].get("methods")
    converged_omniglot = STRONG_METHODS + FOLLOW_UP_METHODS + CONVERGED_ABLATIONS + MEMORY_METHODS + DDP_METHODS
    return {"strong": STRONG_METHODS, "strong+ablations": converged_omniglot,
            "step": STEP_METHODS}.get(kind, METHODS)


def _environment() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "unset"),
            "MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_", "unset")}


def split_processes(method_overrides: List[str]) -> tuple:
    """``(processes, config overrides)`` of a method: ``@processes=N`` taken out (1 without it)."""
    processes = [int(o[len(PROCESSES):]) for o in method_overrides if o.startswith(PROCESSES)]
    return (processes[-1] if processes else 1), [o for o in method_overrides if not o.startswith(PROCESSES)]


def train_with_torchrun(config: str, overrides: List[str], processes: int, run_dir: Path) -> dict:
    """``torchrun --standalone --nproc_per_node=processes -m gca.cli train`` (as a user starts it, one thread per
    process); returns the ``result.json`` rank 0 wrote."""
    import subprocess
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "gca.cli", "train", "--config", config, "--resume", "--no-progress", *overrides]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        # torchrun's own summary ends stderr: quote the processes' first error line instead
        lines = done.stderr.strip().splitlines()
        # (the CLI's one-line error or an exception's own line, not a traceback line of torch's errors module)
        cause = next((line.strip() for line in lines if re.search(r"(\bgca \w+: error|\b\w*(Error|Exception)): ", line)
                      and "ChildFailedError" not in line),
                     lines[-1] if lines else "")
        raise RuntimeError(f"torchrun with {processes} processes failed (exit {done.returncode}): {cause}")
    return json.loads((run_dir / "result.json").read_text())


def run_one(protocol: dict, method_overrides: List[str], seed: int, workdir: Path) -> dict:
    name = run_name(method_overrides, seed)
    processes, method_overrides = split_processes(method_overrides)
    overrides = protocol["overrides"] + method_overrides + [f"seed={seed}", f"name={name}", f"output_dir={workdir}",
                                                            "plots=false"]
    start = time.perf_counter()
    if processes > 1:
        result = train_with_torchrun(protocol["config"], overrides, processes, workdir / name)
    else:
        trainer = Trainer(load_config(protocol["config"], overrides), progress=False)
        trainer.resume()        # an interrupted run continues exactly (a finished one is only tested again)
        result = trainer.fit()
    return {"seed": seed, **{m: result[m] for m in METRICS}, "seconds": round(time.perf_counter() - start, 1),
            "steps": result["steps"], "checkpoint": result["checkpoint"]}


def sign_flip_p_value(diffs: np.ndarray) -> float:
    """Two-sided p-value of the paired differences' mean under the exact sign-flip test (no normality
    assumed): the share of the 2^n sign patterns whose |mean| reaches the observed one. With n seeds the
    smallest possible p is 2 / 2^n (0.0625 for 5 seeds, 0.25 for 3)."""
    n = len(diffs)
    if n == 0:
        return float("nan")
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * n)).reshape(n, -1).T
    observed = abs(diffs.mean())
    return float((np.abs((signs * diffs).mean(axis=1)) >= observed - 1e-12).mean())


def summarise(rows: List[dict]) -> List[dict]:
    for row in rows:
        values = {m: np.array([r[m] for r in row["runs"]]) for m in METRICS}
        row["mean"] = {m: float(v.mean()) for m, v in values.items()}
        row["std"] = {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()}
    return rows


def markdown(rows: List[dict]) -> str:
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        group = [r for r in rows if r["dataset"] == dataset]
        by_method = {r["method"]: r for r in group}
        minutes = sum(run["seconds"] for r in group for run in r["runs"]) / 60
        env = group[0].get("environment", {})
        one_code = f"; {group[0]['code']}" if group[0].get("code") and len({r.get("code") for r in group}) == 1 else ""
        out.append(f"## {dataset}\n\nBudget: {group[0]['budget']}. All {sum(len(r['runs']) for r in group)} runs of "
                   f"this table took {minutes:.0f} minutes in total (torch {env.get('torch')}, "
                   f"{env.get('threads')} threads{one_code}). Seeds: "
                   f"{sorted({run['seed'] for r in group for run in r['runs']})}. Test classes never seen in training; "
                   "checkpoint chosen on a validation split of the training classes. Mean ± std over seeds, in %. "
                   "The last column is the R@1 difference to the row's baseline paired by seed (mean ± std of the "
                   "per-seed differences); it says \"beats\" or \"below\" only when the mean difference exceeds that "
                   "std, and gives the exact two-sided sign-flip test's p-value of the paired differences.\n")
        codes = list(dict.fromkeys(r.get("code") for r in group if r.get("code")))
        if len(codes) > 1:
            # rows of one table that ran at different commits: say which ran where
            where = "; ".join(f"{', '.join(r['method'] for r in group if r.get('code') == c)}: {c}" for c in codes)
            out.append(f"The rows ran at different commits, each pair of baseline and method at one: {where}.\n")
        out.append("| method | " + " | ".join(METRICS) + " | R@1 vs its baseline |")
        out.append("|---|" + "---:|" * (len(METRICS) + 1))
        for r in group:
            cells = [f"{100 * r['mean'][m]:.2f} ± {100 * r['std'][m]:.2f}" for m in METRICS]
            base_name = BASELINE_OF.get(r["method"], "N-pair")
            base = by_method.get(base_name)
            if base is None or base is r:
                verdict = "(baseline)" if base is r else ""
            else:
                # paired by seed: the same seed gives both rows the same validation split, initialisation
                # and batches, so the per-seed difference carries less noise than the two means
                base_by_seed = {run["seed"]: run["R@1"] for run in base["runs"]}
                diffs = np.array([100 * (run["R@1"] - base_by_seed[run["seed"]]) for run in r["runs"]
                                  if run["seed"] in base_by_seed])
                diff = float(diffs.mean())
                noise = float(diffs.std(ddof=1)) if len(diffs) > 1 else float("inf")
                word = "beats" if diff > noise else ("below" if diff < -noise else "within noise of")
                p_value = sign_flip_p_value(diffs)
                verdict = f"{diff:+.2f} ± {noise:.2f} ({word} {base_name}; sign-flip p = {p_value:.3g})"
            out.append(f"| {r['method']} | " + " | ".join(cells) + f" | {verdict} |")
        out.append("")
    return "\n".join(out)


def plot(rows: List[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(len(datasets), 1, figsize=(11, 4 * len(datasets)), squeeze=False)
    ks = [m for m in METRICS if m.startswith("R@")]
    for ax, dataset in zip(axes[:, 0], datasets):
        group = [r for r in rows if r["dataset"] == dataset]
        width = 0.8 / len(group)
        x = np.arange(len(ks))
        for i, r in enumerate(group):
            ax.bar(x + i * width, [100 * r["mean"][k] for k in ks], width, yerr=[100 * r["std"][k] for k in ks],
                   label=r["method"], capsize=2, color=plt.get_cmap("tab20")(i % 20))
        ax.set_xticks(x + 0.4 - width / 2)
        ax.set_xticklabels(ks)
        lo = min(100 * r["mean"][k] for r in group for k in ks)
        ax.set_ylim(max(0, lo - 10), 100)
        ax.set_ylabel("%")
        ax.set_title(f"{dataset}: Recall@K on unseen classes (mean ± std over seeds)")
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def plot_projection(run_dir: Path, path: Path, classes: int = 8, per_class: int = 4, seed: int = 0) -> Path:
    """PCA of one batch of a trained GCA-HNG run: real embeddings and their synthetic negatives, from the
    trained generator and from HDML's scalar interpolation at the same hardness, coloured by class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gca.baselines import HDMLInterpolation
    from gca.data import ClassBalancedBatchSampler

    cfg = load_config(str(run_dir / "config.yaml"), ["plots=false"])
    trainer = Trainer(cfg, progress=False)
    assert trainer.resume(), f"no checkpoint in {run_dir}"
    trainer.model.eval()
    trainer.objective.eval()
    ds = trainer.val_sets.get("val", trainer.train_set)
    batch = next(iter(ClassBalancedBatchSampler(ds.labels, classes, per_class, seed=seed)))
    images = torch.stack([ds[i][0] for i in batch]).to(trainer.device)
    labels = torch.as_tensor([int(ds.labels[i]) for i in batch], device=trainer.device)
    z = trainer.model(images).float()
    gen = torch.Generator(device=trainer.device).manual_seed(seed)
    gca_syn = trainer.objective.generate(z, labels, generator=gen).synthetics
    hdml = HDMLInterpolation(cfg.gca.alpha).to(trainer.device)
    hdml.hardness.load_state_dict(trainer.objective.hardness.state_dict())
    hdml_syn = hdml.synthesize(z, labels, generator=gen)
    points = torch.cat([z, gca_syn.embeddings, hdml_syn.embeddings]).cpu()
    mean = points.mean(0)
    _, _, v = torch.pca_lowrank(points - mean, q=2, center=False)
    project = lambda t: ((t.cpu() - mean) @ v[:, :2]).numpy()  # noqa: E731
    real = project(z)
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
    gamma = float(trainer.objective.hardness.factor())
    for ax, (title, syn) in zip(axes, (("GCA-HNG (learned channel weights, all samples mixed)", gca_syn),
                                        ("HDML interpolation (one scalar, one sample)", hdml_syn))):
        p = project(syn.embeddings)
        for colour, c in enumerate(labels.unique().tolist()):
            mask = syn.labels.cpu().numpy() == c
            ax.scatter(p[mask, 0], p[mask, 1], s=9, marker="x", color=colours(colour % 10), alpha=0.6)
            rmask = labels.cpu().numpy() == c
            ax.scatter(real[rmask, 0], real[rmask, 1], s=60, marker="o", color=colours(colour % 10),
                       edgecolor="black")
        ax.set_title(f"{title}\n(gamma = {gamma:.3f})", fontsize=9)
    axes[0].set_xlabel("PC 1")
    axes[0].set_ylabel("PC 2")
    fig.suptitle(f"One validation batch ({classes} classes x {per_class}): real embeddings (circles) and "
                 "synthetic negatives (x, coloured by the class they were made from)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(rows: List[dict], workdir: Path, dataset: str, path: Path) -> Optional[Path]:
    """Validation R@1 against steps for every row of ``dataset`` (mean over seeds, the seeds as thin lines),
    read from the runs' ``metrics.jsonl``: does each baseline plateau within the budget?"""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gca.train.plots import read_metrics
    group = [r for r in rows if r["dataset"] == dataset]
    overrides_of = dict(methods_of(dataset))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = False
    for i, row in enumerate(group):
        curves = []
        if row["method"] not in overrides_of:    # a row kept from an earlier setting: its runs are not here
            continue
        for run in row["runs"]:
            records = read_metrics(workdir / dataset / run_name(overrides_of[row["method"]], run["seed"]))
            curves.append([(r["step"], 100 * r["R@1"]) for r in records if r["kind"] == "val"])
        curves = [c for c in curves if c]
        if not curves:
            continue
        colour = plt.get_cmap("tab10")(i % 10)
        for c in curves:
            ax.plot(*zip(*c), color=colour, lw=0.5, alpha=0.4)
        steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves]))
        means = [np.mean([v for c in curves for s2, v in c if s2 == s]) for s in steps]
        ax.plot(steps, means, color=colour, lw=2, marker=".", label=f"{row['method']} (mean of {len(curves)} seeds)")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("validation R@1 (%)")
    ax.set_title(f"{dataset}: validation classes (model selection), by step", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(rows: List[dict], out: Path) -> None:
    summarise(rows)
    (out / "quality.json").write_text(json.dumps(rows, indent=1))
    (out / "quality.md").write_text("# Quality: GCA-HNG against its baselines\n\nWritten by `benchmarks/quality.py`"
                                    " (see benchmarks/README.md).\n\n" + markdown(rows))
    plot(rows, out / "quality_recall.png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", action="append", choices=sorted(PROTOCOLS),
                        help="data set protocol (repeatable); default omniglot-quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", help="labels or label prefixes selecting method rows (default: all)")
    parser.add_argument("--exact", action="store_true",
                        help="--methods names whole labels only (\"N-pair\" then selects no \"N-pair + ...\" row)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "quality")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in quality.json")
    parser.add_argument("--report", action="store_true",
                        help="only rewrite quality.md and the plots from the existing quality.json")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2 methods, 1 seed, 30 steps on Omniglot (a few minutes)")
    args = parser.parse_args(argv)
    protocols = args.protocol or ["omniglot-quick"]
    all_methods = methods_of(protocols[0])
    methods = all_methods
    if args.methods:
        # "+" in a selector would match every GCA-HNG row; match whole labels, or prefixes of the label
        methods = [m for m in all_methods if any(m[0].lower() == s.lower() or
                                                 (not args.exact and m[0].lower().startswith(s.lower()))
                                                 for s in args.methods)]
        if not methods:
            parser.error(f"--methods {args.methods} selects no row of protocol {protocols[0]}")
    if args.quick:
        PROTOCOLS["omniglot-smoke"] = dict(
            config="omniglot", overrides=["solver.epochs=2", "solver.steps_per_epoch=15", "eval.every_epochs=2"],
            budget="smoke test: 30 steps")
        protocols, methods, args.seeds = ["omniglot-smoke"], [METHODS[0], METHODS[2]], [0]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "quality.json"
    if args.report:
        rows = json.loads(path.read_text())
        write_outputs(rows, args.out)
        for proto_name in dict.fromkeys(r["dataset"] for r in rows):
            curves = plot_curves(rows, args.workdir, proto_name, args.out / f"quality_curves_{proto_name}.png")
            if curves:
                print("validation curves:", curves)
            run = args.workdir / proto_name / "gca_s0"
            if (run / "last.pt").is_file():
                print("projection plot:", plot_projection(run, args.out / f"projection_{proto_name}.png"))
        print((args.out / "quality.md").read_text())
        return 0
    rows: List[dict] = json.loads(path.read_text()) if args.resume and path.is_file() else []
    env = _environment()
    total = len(protocols) * len(methods) * len(args.seeds)
    done = 0
    for proto_name in protocols:
        protocol = PROTOCOLS[proto_name]
        # seed-major: an interrupted table still holds complete seed-paired comparisons
        for seed in args.seeds:
            for label, overrides in methods:
                row = next((r for r in rows if r["dataset"] == proto_name and r["method"] == label), None)
                if row is None:
                    row = {"dataset": proto_name, "method": label, "budget": protocol["budget"],
                           "settings": {"config": protocol["config"], "overrides": protocol["overrides"] + overrides},
                           "environment": env, "runs": []}
                    rows.append(row)
                done += 1
                if any(r["seed"] == seed for r in row["runs"]):
                    continue
                print(f"[{done}/{total}] {proto_name} | {label} | seed {seed}", flush=True)
                run = run_one(protocol, overrides, seed, args.workdir / proto_name)
                print(f"    R@1 {100 * run['R@1']:.2f}  MAP@R {100 * run['MAP@R']:.2f}  ({run['seconds']} s)",
                      flush=True)
                row["runs"].append(run)
                write_outputs([r for r in rows if r["runs"]], args.out)
    write_outputs([r for r in rows if r["runs"]], args.out)
    gca_run = args.workdir / protocols[0] / f"gca_s{args.seeds[0]}"
    if (gca_run / "last.pt").is_file():
        print("projection plot:", plot_projection(gca_run, args.out / f"projection_{protocols[0]}.png"))
    print((args.out / "quality.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
