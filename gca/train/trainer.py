"""The training loop: data, models, the three-phase step of METHOD 2.6, evaluation, checkpoints.

One :class:`Trainer` runs one config. GCA-HNG off (``gca.enabled: false``) is the baseline: the same loop,
data, seed and budget, with only the metric loss. Model selection uses a validation split carved from
the *training* classes (never the test set, fixing METHOD D11); the test set is evaluated once at the end
with the selected checkpoint, plus at ``eval.test_epochs`` for curves, each record labelled.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from gca.backbones import EmbeddingModel, create_backbone
from gca.baselines import HDMLInterpolation
from gca.data import (
    ClassBalancedBatchSampler,
    ClassSubset,
    FeatureDataset,
    build_transforms,
    cached_features,
    create_dataset,
    dataset_splits,
    resolve_data_root,
    split_classes,
)
from gca.data.registry import canonical_name
from gca.distributed import (
    GatheredObjective,
    ProcessGroupInfo,
    all_gather_rows,
    shard_range,
    use_global_batchnorm,
)
from gca.evaluation import embed_dataset, retrieval_metrics
from gca.io import atomic_save, atomic_write_text
from gca.losses import create_metric_loss
from gca.memory import memory_loss_problem
from gca.model import GCAHNG
from gca.objective import MetricLossObjective, Objective
from gca.rng import rng_state, seed_everything, set_rng_state
from gca.train.checkpoint import CheckpointError, config_difference, first_line, load_checkpoint
from gca.train.config import RunConfig, save_config
from gca.train.step import NonFiniteLossError, Optimisers, train_step


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _FeatureBackbone(nn.Identity):
    """Stands in for a frozen backbone whose features were cached."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


class Trainer:
    """Build everything a config names and train it.

    Files written to ``cfg.run_dir``: ``config.yaml``, ``metrics.jsonl`` (one JSON record per line:
    ``train`` every ``log_every_steps`` steps, ``epoch``, ``val``, ``test_curve`` and ``test``),
    ``last.pt`` (everything needed to resume), ``best.pt`` (the embedding model selected on validation),
    ``result.json`` (the final test metrics) and plots.
    """

    def __init__(self, cfg: RunConfig, progress: bool = True):
        self.cfg = cfg
        self.dist = ProcessGroupInfo.from_env()
        self.device = resolve_device(cfg.device)
        if self.dist.world_size > 1:
            self.device = self._join_process_group()
        # one process writes files, logs and progress bars
        self.writes = self.dist.is_main
        self.progress = progress and self.writes
        self.run_dir = cfg.run_dir
        if self.writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        if cfg.deterministic:
            # with 2+ threads some CPU backward kernels (scatter/index accumulation) are not bit-reproducible
            # across processes; the deterministic variants are (warn_only: ops without one still run)
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.amp_dtype = self._amp_dtype()
        self._build_model()
        self._build_data()
        self._build_objective()
        self._build_optimisers()
        self._wrap_for_processes()
        self.epoch, self.step, self.step_in_epoch = 0, 0, 0
        self.best: Optional[Dict[str, Any]] = None
        self.history: list = []
        self.epoch_totals = self._new_epoch_totals()
        self.nonfinite_in_row = 0
        # data augmentation in the main process draws from its own torch RNG stream, so that runs with the same
        # seed see the same augmented batches whatever the model draws (GCA-HNG's init, mixing, dropout):
        # baseline and method are paired by seed down to the pixels
        self.data_rng = torch.Generator().manual_seed(cfg.seed + 7_919).get_state()
        self.metrics_path = self.run_dir / "metrics.jsonl"
        # a folder that holds a checkpoint holds a run: resume() continues it, and fit() refuses to start another
        # run over it (its config, records and checkpoints would be overwritten or mixed with the new run's)
        self._folder_holds_run = (self.run_dir / "last.pt").is_file()
        self._resumed = False
        self._metrics_lines = 0
        self._test_embeddings: Optional[Dict[str, Any]] = None
        self._barrier()     # every process has looked at the folder before the main one writes to it
        if self.writes and not self._folder_holds_run:
            save_config(cfg, self.run_dir / "config.yaml")
            if self.metrics_path.is_file():
                # records of a run killed before its first checkpoint: that run can only start over
                atomic_write_text(self.metrics_path, "")
        self._barrier()

    # ------------------------------------------------------------------------------ processes
    def _join_process_group(self) -> torch.device:
        """Data-parallel training under ``torchrun``: join the process group (gloo on CPU, NCCL on CUDA) and
        return this process's device (``cuda:LOCAL_RANK`` on GPUs)."""
        import torch.distributed as dist
        device = self.device
        if device.type == "cuda":
            device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            missing = [key for key in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(key)]
            if missing:
                raise ValueError(f"WORLD_SIZE={self.dist.world_size} but {' and '.join(missing)} not set: start "
                                 f"data-parallel training with torchrun (torchrun --nproc_per_node=N -m gca.cli "
                                 f"train ...)")
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if dist.get_world_size() != self.dist.world_size:
            raise ValueError(f"WORLD_SIZE={self.dist.world_size} but the process group has "
                             f"{dist.get_world_size()} processes")
        return device

    def _barrier(self) -> None:
        """Wait for every process (a file one process wrote is there for all after it)."""
        if self.dist.world_size > 1:
            import torch.distributed as dist
            dist.barrier()

    # ------------------------------------------------------------------------------ building
    def _amp_dtype(self) -> Optional[torch.dtype]:
        amp = self.cfg.solver.amp
        if amp == "off" or (amp == "auto" and self.device.type != "cuda"):
            return None
        if amp == "fp16":
            return torch.float16
        return torch.bfloat16

    def _build_model(self) -> None:
        m = self.cfg.model
        freeze = {"bn_freeze": True, "bn_freeze_affine": m.bn_freeze_affine} if m.bn_freeze else {}
        backbone = create_backbone(m.backbone, pretrained=m.pretrained, weights=m.weights, **freeze,
                                   **m.backbone_kwargs)
        self.transform_kind = self.cfg.data.transform or getattr(backbone, "default_transform", None) or "imagenet"
        # pretrained weights expect their own input statistics (EfficientNet-Lite0's are 0.5/0.5, not ImageNet's)
        self.input_stats = {k: tuple(getattr(backbone, f"input_{k}")) for k in ("mean", "std")
                            if getattr(backbone, f"input_{k}", None) is not None}
        if self.cfg.data.features:
            self.feature_backbone = backbone.to(self.device).eval()
            backbone = _FeatureBackbone(backbone.num_features)
        self.model = EmbeddingModel(backbone, m.embedding_dim, head_init=m.head_init).to(self.device)

    def _dataset(self, split: str, train: bool):
        d = self.cfg.data
        root = d.root
        if root is None and canonical_name(d.dataset) != "imagefolder":
            root = resolve_data_root(None)
        stats = self.input_stats if self.transform_kind == "imagenet" else {}
        backbone = getattr(self, "feature_backbone", None) or self.model.backbone
        tf = build_transforms(self.transform_kind, train=train, image_size=d.image_size,
                              channels=getattr(backbone, "in_channels", None), **stats)
        return create_dataset(d.dataset, root=root, split=split, transform=tf, **d.dataset_kwargs)

    def _build_data(self) -> None:
        d, seed = self.cfg.data, self.cfg.seed
        splits = dataset_splits(d.dataset)
        train_eval_full = self._dataset("train", train=False)
        # with a frozen backbone, the whole training split is embedded once (without augmentation) and the
        # class-disjoint train/validation subsets index into those features
        train_full = self._features(train_eval_full) if d.features else self._dataset("train", train=True)
        eval_full = train_full if d.features else train_eval_full
        if d.val_fraction > 0:
            train_idx, val_idx = split_classes(train_full.labels, d.val_fraction, seed)
            train_ds = ClassSubset(train_full, train_idx, split="train_minus_val")
            self.val_sets = {"val": ClassSubset(eval_full, val_idx, split="val")}
        else:
            train_ds, self.val_sets = train_full, {}
        test_splits = ("query", "gallery") if "query" in splits else ("test",)
        self.test_sets = {name: self._dataset(name, False) for name in test_splits}
        if d.features:
            self.test_sets = {k: self._features(v) for k, v in self.test_sets.items()}
        self.train_set = train_ds
        self.num_train_classes = int(np.asarray(train_ds.labels).max()) + 1
        # under torchrun each process draws its own classes_per_batch classes of every global batch
        self.sampler = ClassBalancedBatchSampler(train_ds.labels, d.classes_per_batch, d.samples_per_class,
                                                 seed=seed, class_sampling=d.class_sampling,
                                                 rank=self.dist.rank, world_size=self.dist.world_size)

    def _features(self, dataset) -> FeatureDataset:
        d, m = self.cfg.data, self.cfg.model
        return cached_features(self.feature_backbone, dataset, Path(d.cache_dir), self.cfg.eval.batch_size,
                               self.device, backbone_name=m.backbone, dataset_name=canonical_name(d.dataset),
                               split=getattr(dataset, "split", None),
                               extra_key={"transform": self.transform_kind, "image_size": d.image_size,
                                          "weights": m.weights, "pretrained": m.pretrained},
                               num_workers=d.num_workers, progress=self.progress)

    def _build_objective(self) -> None:
        """The method: the metric loss alone (``gca.enabled: false``), HDML's interpolation, or GCA-HNG."""
        cfg, g = self.cfg, self.cfg.gca
        self.metric_loss = create_metric_loss(cfg.loss.metric, self.num_train_classes, cfg.model.embedding_dim,
                                              **cfg.loss.metric_kwargs).to(self.device)
        if not g.enabled:
            self.objective: Objective = MetricLossObjective(self.metric_loss)
        elif g.generator == "hdml":
            self.objective = HDMLInterpolation(g.alpha, metric_loss=self.metric_loss,
                                               synthetic_loss_mode=g.synthetic_loss_mode,
                                               schedule_scale=g.schedule_scale,
                                               synthetic_gradient=g.synthetic_gradient)
        else:
            self.objective = GCAHNG(
                cfg.model.embedding_dim, self.num_train_classes, num_layers=g.num_layers, heads=g.heads,
                layer=g.layer, dropout=g.dropout, layer_kwargs=g.layer_kwargs, edges=g.edges, k=g.k,
                self_loops=g.self_loops, per_channel=g.per_channel, negatives_per_class=g.negatives_per_class,
                mixing=g.mixing, alpha=g.alpha, beta=g.beta, softmax_factor=g.softmax_factor,
                hardness_weight=g.hardness_weight, diversity_weight=g.diversity_weight,
                classifier_weight=g.classifier_weight, node_loss_weight=g.node_loss_weight,
                metric_loss=self.metric_loss, symmetric_edges=g.symmetric_edges, schedule_scale=g.schedule_scale,
                synthetic_loss_mode=g.synthetic_loss_mode, synthetic_gradient=g.synthetic_gradient,
                diagnostics=g.diagnostics, memory_size=g.memory_size, memory_k=g.memory_k)
        self.objective.to(self.device)
        if g.enabled and g.memory_size:
            problem = memory_loss_problem(self.metric_loss, getattr(self.model, "normalize", False))
            if problem is not None:
                warnings.warn(f"gca.memory_size={g.memory_size} with loss.metric={cfg.loss.metric}: {problem}",
                              stacklevel=2)
        if g.enabled and g.generator == "gca" and g.compile:
            # in place: the state_dict keys stay those of the eager model, so weights load either way
            self.objective.generator.compile_layers()

    def _build_optimisers(self) -> None:
        s = self.cfg.solver
        groups = [{"params": self.model.head_parameters(), "lr": s.lr * s.head_lr_ratio, "name": "head"}]
        backbone_params = [p for p in self.model.backbone_parameters()]
        if backbone_params:
            groups.append({"params": backbone_params, "lr": s.lr, "name": "backbone"})
        loss_params = list(self.metric_loss.parameters())
        if loss_params:
            groups.append({"params": loss_params, "lr": s.lr * self.cfg.loss.proxy_lr_ratio, "name": "loss"})
        self.opt_metric = torch.optim.AdamW(groups, lr=s.lr, weight_decay=s.weight_decay)
        self.sched_metric = torch.optim.lr_scheduler.StepLR(self.opt_metric, s.lr_decay_epochs, s.lr_decay_gamma)
        self.opt_gnn = self.opt_cls = self.sched_gnn = None
        if self.objective.trains_generator:
            self.opt_gnn = torch.optim.AdamW(self.objective.generator_parameters(), lr=s.gnn_lr,
                                             weight_decay=s.weight_decay)
            self.sched_gnn = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_gnn, T_max=s.epochs)
            self.opt_cls = torch.optim.AdamW(self.objective.classifier_parameters(), lr=s.classifier_lr)

    @property
    def optimisers(self) -> Optimisers:
        return Optimisers(metric=self.opt_metric, generator=self.opt_gnn, classifier=self.opt_cls)

    # ------------------------------------------------------------------------------ state
    @staticmethod
    def _new_epoch_totals() -> Dict[str, Any]:
        # what the epoch record averages; saved in checkpoints so a resumed epoch reports all its steps
        return {"sums": {}, "count": 0, "nonfinite": 0, "seconds": 0.0}

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume exactly, as plain data (loads with ``weights_only=True``).

        Where the run stands: ``step_in_epoch < epoch length`` is inside an epoch's steps;
        ``step_in_epoch == epoch length`` is after the last step with the epoch's end-work (schedules,
        validation, best-model selection) still to do; ``step_in_epoch == 0`` is after that end-work.
        ``metrics_lines`` is how many records ``metrics.jsonl`` held, so that a resumed run drops the
        records of the steps it replays.
        """
        def sd(obj):
            return None if obj is None else obj.state_dict()
        return {
            "config": self.cfg.to_dict(), "epoch": self.epoch, "step": self.step,
            "step_in_epoch": self.step_in_epoch, "best": self.best,
            "history": self.history, "epoch_totals": self.epoch_totals, "nonfinite_in_row": self.nonfinite_in_row,
            "metrics_lines": self._metrics_lines,
            "model": self.model.state_dict(), "metric_loss": self.metric_loss.state_dict(),
            "objective": sd(self.objective), "opt_metric": sd(self.opt_metric), "opt_gnn": sd(self.opt_gnn),
            "opt_cls": sd(self.opt_cls), "sched_metric": sd(self.sched_metric), "sched_gnn": sd(self.sched_gnn),
            "rng": rng_state(), "data_rng": self.data_rng,
        }

    def load_state_dict(self, state: Dict[str, Any], source: str = "the checkpoint") -> None:
        """Restore :meth:`state_dict`; refuses a state written by a config that shapes the run differently."""
        difference = config_difference(state["config"], self.cfg.to_dict())
        if difference:
            raise CheckpointError(f"checkpoint {source} was written by a different config ({difference}); "
                                  f"resume with that config or start a new run (another name=)")
        for name in ("objective", "opt_metric", "opt_gnn", "opt_cls", "sched_metric", "sched_gnn"):
            if (getattr(self, name) is None) != (state.get(name) is None):
                raise CheckpointError(f"checkpoint {source} and the config disagree about {name!r} (GCA-HNG on/off?)")
        try:
            self.model.load_state_dict(state["model"])
            self.metric_loss.load_state_dict(state["metric_loss"])
            for name in ("objective", "opt_metric", "opt_gnn", "opt_cls", "sched_metric", "sched_gnn"):
                if getattr(self, name) is not None:
                    getattr(self, name).load_state_dict(state[name])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {source} does not fit this run's models: {first_line(exc)}") from None
        self.epoch, self.step, self.step_in_epoch = state["epoch"], state["step"], state["step_in_epoch"]
        self.best, self.history = state["best"], state["history"]
        self.epoch_totals = state.get("epoch_totals") or self._new_epoch_totals()
        self.nonfinite_in_row = state.get("nonfinite_in_row", 0)
        set_rng_state(state["rng"])
        if "data_rng" in state:
            self.data_rng = state["data_rng"].cpu()

    def load_model_weights(self, weights: Dict[str, Any], source: str) -> None:
        """Load an embedding model's state dict (from ``best.pt``, ``last.pt`` or ``gca eval``)."""
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {source} does not fit the configured model: {first_line(exc)}") from None

    def save_checkpoint(self) -> Path:
        path = self.run_dir / "last.pt"
        if self.writes:
            atomic_save(self.state_dict(), path)
        self._barrier()
        return path

    def _save_best(self) -> None:
        if self.writes:
            atomic_save({"model": self.model.state_dict(), "config": self.cfg.to_dict(), "epoch": self.epoch,
                         "step": self.step}, self.run_dir / "best.pt")
        self._barrier()

    def _holds_selected(self, saved: Dict[str, Any]) -> bool:
        """Whether a loaded ``best.pt`` holds the checkpoint the run selected on validation (epoch and step)."""
        selected_step = self.best.get("step")
        return saved["epoch"] == self.best["epoch"] and saved.get("step", selected_step) == selected_step

    def _best_file_is_stale(self) -> bool:
        """After a checkpoint that selected its own epoch, whether ``best.pt`` lacks those weights: it is written
        right after that checkpoint, so a kill between the two leaves it behind."""
        if self.best is None or self.step_in_epoch:
            return False
        if (self.best["epoch"], self.best.get("step")) != (self.epoch, self.step):
            return False
        path = self.run_dir / "best.pt"
        return not (path.is_file() and self._holds_selected(load_checkpoint(path, required=("model", "epoch"))))

    def resume(self, path: Optional[Path] = None) -> bool:
        """Continue from ``path`` (default ``run_dir/last.pt``); returns whether there was one to load.

        A missing default ``last.pt`` means a fresh start; a missing explicit ``path`` is an error. The run
        then finishes exactly what the uninterrupted one would: an epoch whose steps were done gets its
        end-work, ``best.pt`` is rewritten if a kill came between the checkpoint and it, and ``metrics.jsonl``
        loses the records written after the checkpoint (their steps are replayed).
        """
        if path is None:
            path = self.run_dir / "last.pt"
            if not path.is_file():
                return False
        state = load_checkpoint(path, map_location=self.device,
                                required=("config", "model", "rng", "epoch", "step", "step_in_epoch"))
        self.load_state_dict(state, source=str(path))
        self._resumed = True
        if self.writes:
            save_config(self.cfg, self.run_dir / "config.yaml")
        self._truncate_metrics(state.get("metrics_lines"))
        if self._best_file_is_stale():
            self._save_best()
        self._log({"kind": "resume", "epoch": self.epoch, "step": self.step, "from": str(path)})
        return True

    # ------------------------------------------------------------------------------ logging
    def _log(self, record: Dict[str, Any]) -> None:
        record = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in record.items()}
        if self.writes:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        self._metrics_lines += 1

    def _truncate_metrics(self, lines: Optional[int]) -> None:
        if not self.metrics_path.is_file():
            return
        if lines is None:       # a checkpoint from before the count was saved: keep every record
            self._metrics_lines = len(self.metrics_path.read_text().splitlines())
            return
        kept = self.metrics_path.read_text().splitlines()
        self._barrier()     # every process has counted the records before the main one cuts them
        if len(kept) > lines and self.writes:
            atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept[:lines]))
        self._metrics_lines = min(len(kept), lines)

    # ------------------------------------------------------------------------------ training
    def _loader_generator(self) -> torch.Generator:
        # A loader draws its workers' base seed when iterated; from its own generator (seeded by the run's
        # seed and position), so creating a loader never moves the global RNG and resuming replays exactly.
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)

    def _epoch_batches(self) -> list:
        """This epoch's batches: the sampler's (seeded by seed and epoch), cut to ``solver.steps_per_epoch``."""
        batches = list(self.sampler)
        return batches[:self.cfg.solver.steps_per_epoch] if self.cfg.solver.steps_per_epoch else batches

    @property
    def epoch_length(self) -> int:
        n = len(self.sampler)
        return min(n, self.cfg.solver.steps_per_epoch) if self.cfg.solver.steps_per_epoch else n

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _set_warmup(self) -> None:
        frozen = self.epoch < self.cfg.solver.warmup_epochs and not self.cfg.data.features
        self.model.set_backbone_trainable(not frozen)

    def _wrap_for_processes(self) -> None:
        """What a training step runs: the model and objective, or under torchrun the model in DDP (rebuilt
        when warm-up changes which parameters train, its BatchNorm layers with the global batch's statistics)
        and the objective on the gathered batch (:class:`gca.distributed.GatheredObjective`: the generator's
        graph sharded by edges, or with ``gca.shard_edges=false`` repeated on every process)."""
        if self.dist.world_size == 1:
            self.train_model, self.train_objective = self.model, self.objective
            return
        from torch.nn.parallel import DistributedDataParallel
        # batch statistics over the global batch, as one process on it would have them
        use_global_batchnorm(self.model)
        trainable = tuple(p.requires_grad for p in self.model.parameters())
        if getattr(self, "_ddp_trainable", None) != trainable:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
            self._ddp_trainable = trainable
        self.train_objective = GatheredObjective(self.objective, shard_edges=self.cfg.gca.shard_edges)

    def _budget_left(self) -> bool:
        s = self.cfg.solver
        return self.epoch < s.epochs and (s.max_steps is None or self.step < s.max_steps)

    def fit(self) -> Dict[str, Any]:
        """Train to the end of the budget (continuing from a resumed state), then test once."""
        if self._folder_holds_run and not self._resumed:
            raise FileExistsError(f"run folder {self.run_dir} already holds a run (last.pt): continue it with "
                                  f"--resume (Trainer.resume()), or give the new run its own folder (another name= "
                                  f"or output_dir=)")
        while True:
            if self.step_in_epoch < self.epoch_length:
                if not self._budget_left():
                    break
                self._train_steps()
                if self.step_in_epoch < self.epoch_length:     # the step budget ran out inside the epoch
                    break
            self._end_epoch()
            if not self._budget_left():
                break
        result = self.test()
        if self.cfg.plots and self.writes:
            from gca.train.plots import plot_run
            plot_run(self.run_dir)
            if self.cfg.eval.test:
                self.retrieval_picture()
        return result

    def _train_steps(self) -> None:
        """The rest of the current epoch's steps (all of them unless resumed mid-epoch or out of budget)."""
        s = self.cfg.solver
        self._set_warmup()
        self._wrap_for_processes()
        self.sampler.set_epoch(self.epoch)
        self.model.train()
        self.objective.train()
        totals = self.epoch_totals
        skip = self.step_in_epoch
        # the sampler is seeded by (seed, epoch): on a mid-epoch resume, replay its batches from where
        # the checkpoint stopped, without loading (and augmenting) the ones already trained on
        loader = DataLoader(self.train_set, batch_sampler=self._epoch_batches()[skip:],
                            num_workers=self.cfg.data.num_workers, pin_memory=self.device.type == "cuda",
                            generator=self._loader_generator())
        total = self.epoch_length if s.max_steps is None else min(self.epoch_length, s.max_steps - self.step + skip)
        bar = tqdm(total=total, initial=skip, desc=f"epoch {self.epoch + 1}/{s.epochs}",
                   disable=not self.progress, leave=False)
        last = time.perf_counter()
        batches = iter(loader)
        while True:
            if s.max_steps is not None and self.step >= s.max_steps:
                break
            batch = self._next_batch(batches)
            if batch is None:
                break
            images, labels = batch
            logs = self._one_step(images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))
            self.step += 1
            self.step_in_epoch += 1
            now = time.perf_counter()
            totals["seconds"] += now - last
            last = now
            if logs is not None:
                totals["count"] += 1
                for k, v in logs.items():
                    totals["sums"][k] = totals["sums"].get(k, 0.0) + v
                bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items() if k in ("metric", "synthetic", "generator")})
                if self.step % self.cfg.log_every_steps == 0:
                    self._log({"kind": "train", "epoch": self.epoch, "step": self.step, **logs})
            bar.update(1)
            if self.cfg.checkpoint_every_steps and self.step % self.cfg.checkpoint_every_steps == 0:
                self.save_checkpoint()
        bar.close()

    def _next_batch(self, batches):
        """The next batch, its augmentation drawn from the data RNG stream (``None`` at the end)."""
        model_rng = torch.get_rng_state()
        torch.set_rng_state(self.data_rng)
        try:
            return next(batches, None)
        finally:
            self.data_rng = torch.get_rng_state()
            torch.set_rng_state(model_rng)

    def _one_step(self, images, labels) -> Optional[Dict[str, float]]:
        """One training step; ``None`` when ``solver.nonfinite="skip"`` skipped it for a NaN/inf loss."""
        s = self.cfg.solver
        try:
            logs = train_step(self.train_model, self.train_objective, images, labels, self.optimisers,
                              amp_autocast=self._autocast, clip_value=s.grad_clip_value, step=self.step,
                              fused=self.cfg.gca.enabled and self.cfg.gca.step == "fused")
        except NonFiniteLossError as exc:
            if s.nonfinite == "raise":
                raise
            self.nonfinite_in_row += 1
            self.epoch_totals["nonfinite"] += 1
            self._log({"kind": "skipped", "epoch": self.epoch, "step": self.step + 1, "reason": str(exc)})
            if self.nonfinite_in_row >= s.max_nonfinite_in_row:
                raise NonFiniteLossError(
                    f"{self.nonfinite_in_row} non-finite losses in a row up to step {self.step + 1} "
                    f"(solver.max_nonfinite_in_row={s.max_nonfinite_in_row}); last: {exc}") from None
            return None
        self.nonfinite_in_row = 0
        return logs

    @torch.no_grad()
    def retrieval_picture(self, num_queries: int = 6, k: int = 6) -> Path:
        """``retrievals.png``: random test queries and their nearest neighbours in the whole test gallery,
        embedded with the checkpoint the test used (the query itself excluded)."""
        from gca.train.plots import plot_retrievals
        if self._test_embeddings is None:
            self.test_metrics()
        emb = self._test_embeddings
        query_split, gallery_split = ("query", "gallery") if "query" in self.test_sets else ("test", "test")
        # feature caches keep no pixels: show the images of the same items from the image datasets
        query_images = self._dataset(query_split, False) if self.cfg.data.features else self.test_sets[query_split]
        gallery_images = query_images if gallery_split == query_split else (
            self._dataset(gallery_split, False) if self.cfg.data.features else self.test_sets[gallery_split])
        q, ql = emb["query"], emb["query_labels"]
        g, gl = emb.get("gallery", q), emb.get("gallery_labels", ql)
        q, g = torch.nn.functional.normalize(q.float(), dim=1), torch.nn.functional.normalize(g.float(), dim=1)
        rng = np.random.default_rng(self.cfg.seed)
        queries = rng.choice(len(ql), size=min(num_queries, len(ql)), replace=False).tolist()
        rows = []
        for i in queries:
            sims = g @ q[i]
            if gallery_split == query_split:
                sims[i] = -float("inf")
            neighbours = sims.topk(min(k, len(sims) - 1)).indices.tolist()
            rows.append((query_images[i][0], [(gallery_images[j][0], bool(gl[j] == ql[i])) for j in neighbours]))
        return plot_retrievals(rows, self.run_dir / "retrievals.png")

    def _end_epoch(self) -> None:
        """The epoch's end-work: schedules, the epoch record, validation and model selection, then the
        checkpoint, then ``best.pt``. A kill anywhere before the checkpoint redoes all of it on resume (each
        part is a function of the checkpointed state); a kill after it only rewrites ``best.pt``."""
        totals = self.epoch_totals
        self.objective.end_epoch()
        self.sched_metric.step()
        if self.sched_gnn is not None:
            self.sched_gnn.step()
        record = {"kind": "epoch", "epoch": self.epoch, "step": self.step, "seconds": totals["seconds"],
                  "steps": totals["count"] + totals["nonfinite"], "nonfinite_steps": totals["nonfinite"],
                  **{k: v / max(totals["count"], 1) for k, v in totals["sums"].items()}}
        record.update({f"next_{k}": v for k, v in self.objective.schedule_factors().items()})
        self._log(record)
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_totals = self._new_epoch_totals()
        e = self.cfg.eval
        improved = False
        if self.val_sets and (self.epoch % e.every_epochs == 0 or not self._budget_left()):
            metrics = self.evaluate(self.val_sets["val"])
            self._log({"kind": "val", "epoch": self.epoch, "step": self.step, **metrics})
            self.history.append({"epoch": self.epoch, **metrics})
            if self.best is None or metrics[e.select_metric] > self.best[e.select_metric]:
                self.best = {"epoch": self.epoch, "step": self.step, **metrics}
                improved = True
        if self.epoch in e.test_epochs:
            self._log({"kind": "test_curve", "epoch": self.epoch, "step": self.step, **self.test_metrics()})
        self.save_checkpoint()
        if improved:
            self._save_best()

    # ------------------------------------------------------------------------------ evaluation
    def embed(self, dataset):
        """Embeddings and labels of ``dataset`` (in order) with the current model, on the run's device. Under
        torchrun each process embeds its block of the items and every process gets them all."""
        world = self.dist.world_size
        part = dataset if world == 1 else Subset(dataset, shard_range(len(dataset), self.dist.rank, world))
        loader = DataLoader(part, batch_size=self.cfg.eval.batch_size, shuffle=False,
                            num_workers=self.cfg.data.num_workers, generator=self._loader_generator())
        embeddings, labels = embed_dataset(self.model, loader, self.device, amp=self.amp_dtype is not None,
                                           amp_dtype=self.amp_dtype, progress=False, keep_on_device=True)
        if world == 1:
            return embeddings, labels
        return all_gather_rows(embeddings), all_gather_rows(labels.to(embeddings.device)).to(labels.device)

    def evaluate(self, dataset, gallery=None) -> Dict[str, float]:
        return self._score(dataset, gallery)[0]

    def _score(self, dataset, gallery=None):
        """Retrieval metrics of ``dataset`` (against ``gallery``, or itself) and the embeddings they used."""
        q, ql = self.embed(dataset)
        embeddings = {"query": q, "query_labels": ql}
        if gallery is None:
            return retrieval_metrics(q, ql, ks=self.cfg.eval.ks), embeddings
        g, gl = self.embed(gallery)
        embeddings.update(gallery=g, gallery_labels=gl)
        return retrieval_metrics(q, ql, g, gl, ks=self.cfg.eval.ks), embeddings

    def test_metrics(self) -> Dict[str, float]:
        # the embeddings are kept for the retrieval picture
        if "query" in self.test_sets:
            metrics, self._test_embeddings = self._score(self.test_sets["query"], self.test_sets["gallery"])
        else:
            metrics, self._test_embeddings = self._score(self.test_sets["test"])
        return metrics

    def test(self) -> Dict[str, Any]:
        """Evaluate the test classes once, with the checkpoint selected on validation (or the last one).

        With ``eval.test=false`` (a search on validation) the test classes are never embedded: the result
        holds the selected validation metrics instead, each key prefixed ``val_``."""
        if not self.cfg.eval.test:
            kind, selected = "search_result", "test skipped (eval.test=false)"
            metrics = {f"val_{k}": v for k, v in (self.best or {}).items()}
        else:
            kind, (selected, metrics) = "test", self._test_selected()
        result = {"name": self.cfg.name, "checkpoint": selected, "epochs": self.epoch, "steps": self.step,
                  "gca": self.cfg.gca.enabled, "processes": self.dist.world_size, **metrics}
        self._log({"kind": kind, **result})
        if self.writes:
            atomic_write_text(self.run_dir / "result.json", json.dumps(result, indent=2))
        self._barrier()
        return result

    def _test_selected(self):
        """Test metrics of the checkpoint selected on validation (``best.pt``), or of the last weights."""
        if self.best is None:
            return "last", self.test_metrics()
        best_path = self.run_dir / "best.pt"
        saved = load_checkpoint(best_path, map_location=self.device, required=("model", "epoch"))
        if not self._holds_selected(saved):
            raise CheckpointError(f"checkpoint {best_path} holds epoch {saved['epoch']}, but the run selected "
                                  f"epoch {self.best['epoch']} on validation (written by another run?)")
        current = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.load_model_weights(saved["model"], source=str(best_path))
        try:
            metrics = self.test_metrics()
        finally:
            self.model.load_state_dict(current)
        return f"best on validation (epoch {self.best['epoch']})", metrics
