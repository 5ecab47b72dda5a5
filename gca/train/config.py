"""Typed, strict run configuration, read from YAML with ``section.key=value`` overrides.

Unknown keys are errors (a typo must not silently fall back to a default). Packaged configs live in
``gca/configs``; ``load_config("omniglot")`` finds them by name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class DataConfig:
    dataset: str = "omniglot"
    root: Optional[str] = None              # default: $GCA_DATA_ROOT, then ../shared/data
    dataset_kwargs: Dict[str, Any] = field(default_factory=dict)
    transform: Optional[str] = None         # default: the backbone's ("omniglot" / "imagenet")
    image_size: Optional[int] = None
    val_fraction: float = 0.1               # training classes held out for model selection (0: none)
    classes_per_batch: int = 32             # C
    samples_per_class: int = 2              # K
    num_workers: int = 0
    features: bool = False                  # train the head on cached features of a frozen backbone
    cache_dir: str = "cache"


@dataclass
class ModelConfig:
    backbone: str = "omniglot_cnn"
    pretrained: bool = False
    weights: Optional[str] = None
    embedding_dim: int = 64
    bn_freeze: bool = False
    head_init: str = "orthogonal"
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    metric: str = "npair"
    metric_kwargs: Dict[str, Any] = field(default_factory=dict)
    proxy_lr_ratio: float = 100.0           # learning-rate factor of loss parameters (proxies)


@dataclass
class GCAConfig:
    enabled: bool = True
    num_layers: int = 2
    heads: int = 4
    layer: str = "gca"
    layer_kwargs: Dict[str, Any] = field(default_factory=dict)
    dropout: float = 0.1
    edges: str = "full"
    k: Optional[int] = None
    self_loops: bool = True
    per_channel: bool = True
    negatives_per_class: str = "all"
    mixing: str = "sequential"
    alpha: float = 4.0
    beta: float = 30.0
    softmax_factor: float = 20.0
    hardness_weight: float = 10.0
    diversity_weight: float = 10.0
    classifier_weight: float = 10.0
    node_loss_weight: float = 1.0
    generator: str = "gca"                  # "gca", or "hdml": scalar interpolation, no graph (baseline)
    symmetric_edges: Any = "auto"           # one edge state per unordered pair on the full graph


@dataclass
class SolverConfig:
    epochs: int = 10
    max_steps: Optional[int] = None         # stop after this many steps in total (a fixed budget)
    steps_per_epoch: Optional[int] = None   # shorter "epochs" (a random subset of the sampler's batches);
                                            # the hardness schedules move at every epoch end
    lr: float = 1e-4
    head_lr_ratio: float = 1.0
    gnn_lr: float = 3e-4
    classifier_lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_decay_epochs: int = 30
    lr_decay_gamma: float = 0.5
    warmup_epochs: int = 0
    grad_clip_value: Optional[float] = 10.0
    amp: str = "auto"                       # "auto" (bf16 on CUDA), "bf16", "fp16", "off"


@dataclass
class EvalConfig:
    ks: List[int] = field(default_factory=lambda: [1, 2, 4, 8])
    every_epochs: int = 1                   # validation interval (model selection)
    test_epochs: List[int] = field(default_factory=list)   # extra test evaluations for curves, labelled
    batch_size: int = 256
    select_metric: str = "R@1"


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    deterministic: bool = False             # torch.use_deterministic_algorithms: bit-reproducible CPU runs
    device: str = "auto"
    output_dir: str = "runs"
    checkpoint_every_steps: int = 0         # also checkpoint inside an epoch (0: at epoch ends only)
    log_every_steps: int = 10
    plots: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    gca: GCAConfig = field(default_factory=GCAConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _from_dict(cls, values: Dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ValueError(f"config section {where or 'top level'!r} must be a mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(f"unknown config key '{prefix}{unknown[0]}'; known keys of "
                         f"{where or 'the top level'}: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _from_dict(type(default), value or {}, f"{where}.{name}" if where else name)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _set_override(tree: Dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ValueError(f"override {override!r} must look like section.key=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {override!r}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def resolve_config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / f"{name_or_path}.yaml", CONFIG_DIR / name_or_path):
        if candidate.is_file():
            return candidate
    available = sorted(str(p.relative_to(CONFIG_DIR))[:-5] for p in CONFIG_DIR.rglob("*.yaml"))
    raise FileNotFoundError(f"config {name_or_path!r} is neither a file nor a packaged config; "
                            f"packaged: {', '.join(available)}")


def load_config(name_or_path: Optional[str] = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML config (a path, or the name of a packaged one), apply overrides, validate."""
    tree: Dict[str, Any] = {}
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        tree = yaml.safe_load(path.read_text()) or {}
        if not isinstance(tree, dict):
            raise ValueError(f"config file {path} must hold a mapping at the top level")
    for override in overrides:
        _set_override(tree, override)
    cfg = _from_dict(RunConfig, tree, "")
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Check values that would otherwise fail deep inside training."""
    checks = [
        (cfg.data.classes_per_batch >= 2, "data.classes_per_batch must be >= 2 (negatives need another class)"),
        (cfg.data.samples_per_class >= 2, "data.samples_per_class must be >= 2 (anchors need a positive)"),
        (0 <= cfg.data.val_fraction < 1, "data.val_fraction must be in [0, 1)"),
        (cfg.model.embedding_dim % cfg.gca.heads == 0, "model.embedding_dim must be divisible by gca.heads"),
        (cfg.solver.epochs >= 1, "solver.epochs must be >= 1"),
        (cfg.solver.amp in ("auto", "bf16", "fp16", "off"), "solver.amp must be auto, bf16, fp16 or off"),
        (cfg.gca.generator in ("gca", "hdml"), "gca.generator must be 'gca' or 'hdml'"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def save_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
