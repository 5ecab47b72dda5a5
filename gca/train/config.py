"""Typed, strict run configuration, read from YAML with ``section.key=value`` overrides.

Unknown keys are errors (a typo must not silently fall back to a default). Every value is checked against
its field's type when the config is read, and :func:`validate` checks ranges and names (datasets,
backbones, losses, layers, ...) against the registries, so that a bad value fails here, as a one-line
``ValueError`` naming the key, instead of deep inside training. Packaged configs live in ``gca/configs``;
``load_config("omniglot")`` finds them by name.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

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
    class_sampling: str = "coverage"        # "coverage": every item each epoch; "uniform": classes drawn
                                            # uniformly per batch, whatever their size (the authors')


@dataclass
class ModelConfig:
    backbone: str = "omniglot_cnn"
    pretrained: bool = False
    weights: Optional[str] = None
    embedding_dim: int = 64
    bn_freeze: bool = False                 # BatchNorm running statistics frozen (eval mode) in training
    bn_freeze_affine: bool = True           # with bn_freeze, also the BN weights and biases; false: they train
                                            # after warm-up (the authors' ResNet setting, METHOD D10)
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
    schedule_scale: str = "absolute"        # "absolute" (the authors' gamma = exp(-alpha/J_m)) or "first_epoch"
    synthetic_loss_mode: str = "auto"       # how the metric loss sees synthetics: auto, pairs, embeddings,
                                            # anchor_proxy (Proxy-Anchor: negatives of the anchor's proxy)
    synthetic_gradient: str = "auto"        # J_syn's gradient through a synthetic: full, negatives, auto
    diagnostics: bool = True                # log the generator's diag_* values (gca.diagnostics)
    step: str = "two_pass"                  # "two_pass" (the authors' phases A, B, C) or "fused" (one propagation
                                            # and one backward for A and C, gca.train.step)
    compile: bool = False                   # torch.compile the propagation blocks (GCAGenerator.compile_layers);
                                            # the first steps pay the compilation; state_dict keys are unchanged
    memory_size: int = 0                    # cross-batch memory of the last M embeddings (gca.memory); 0: none
    memory_k: int = 16                      # memory entries of other classes joined to each anchor
    shard_edges: bool = True                # under torchrun: each process builds and propagates the edges into
                                            # its own samples (gca.distributed.EdgeShard); false: every process
                                            # repeats the whole graph (the reference path)


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
    nonfinite: str = "raise"                # a NaN/inf loss: "raise" an error, or "skip" the step's update
    max_nonfinite_in_row: int = 10          # with "skip": stop with an error after this many in a row


@dataclass
class EvalConfig:
    ks: List[int] = field(default_factory=lambda: [1, 2, 4, 8])
    every_epochs: int = 1                   # validation interval (model selection)
    test_epochs: List[int] = field(default_factory=list)   # extra test evaluations for curves, labelled
    batch_size: int = 256
    select_metric: str = "R@1"
    test: bool = True                       # false: never touch the test classes (searches on validation)


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


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _got(value: Any) -> str:
    return f"got {_show(value)} ({type(value).__name__})"


def _suggest(name: Any, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coerce(value: Any, tp: Any, key: str, optional: bool = False) -> Any:
    """Check ``value`` against the annotation ``tp`` of config key ``key``; return it (ints widened to float)."""
    def fail(expected: str):
        return ValueError(f"config key {key!r} must be {expected}{' or null' if optional else ''}, {_got(value)}")

    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, optional=True) if len(inner) == 1 else value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail("true or false")
    if tp is int:
        if _is_int(value):
            return value
        raise fail("an integer")
    if tp is float:
        if _is_int(value) or isinstance(value, float):
            return float(value)
        # YAML 1.1 reads 1e-4 (no dot) as a string; it is still obviously a number
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value)
        raise fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "on" if value else "off"    # YAML 1.1 reads off/on (solver.amp=off) as booleans
        if _is_int(value) or isinstance(value, float):
            return str(value)  # name=2024 means the string "2024"
        raise fail("a string")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        item = args[0] if args else Any
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}  # an empty YAML section (``dataset_kwargs:``) reads as null
        if not isinstance(value, dict):
            raise fail("a mapping")
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ValueError(f"config key {key!r} must have string keys, got key {bad[0]!r}")
        return dict(value)
    return value


def _from_dict(cls, values: Dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ValueError(f"config section {where or 'top level'!r} must be a mapping, {_got(values)}")
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(known), key=str)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(f"unknown config key '{prefix}{unknown[0]}'{_suggest(unknown[0], known)}; known keys of "
                         f"{where or 'the top level'}: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        f = known[name]
        key = f"{where}.{name}" if where else name
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _from_dict(type(default), {} if value is None else value, key)
        else:
            kwargs[name] = _coerce(value, hints[name], key)
    return cls(**kwargs)


def _set_override(tree: Dict[str, Any], override: str) -> None:
    if not isinstance(override, str) or "=" not in override:
        raise ValueError(f"override {override!r} must look like section.key=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ValueError(f"override {override!r}: {key.strip()!r} is not a key like section.key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"override {override!r}: the value {raw!r} is not valid YAML ({problem})") from None
    node = tree
    for i, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ValueError(f"override {override!r}: {'.'.join(parts[:i + 1])!r} is not a section")
    node[parts[-1]] = value


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


def _read_yaml(path: Path) -> Dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise OSError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"config file {str(path)!r}{where}: invalid YAML ({problem})") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of sections at the top level, "
                         f"{_got(tree)}")
    return tree


def load_config(name_or_path: Optional[str] = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML config (a path, or the name of a packaged one), apply overrides, validate.

    Raises:
        FileNotFoundError: no such file or packaged config.
        ValueError: invalid YAML (naming the file and line), an unknown key, a value of the wrong type or
            out of range, or an unknown name (dataset, backbone, loss, layer, ...); the message names the key.
    """
    tree: Dict[str, Any] = {}
    if name_or_path is not None:
        tree = _read_yaml(resolve_config_path(name_or_path))
    for override in overrides:
        _set_override(tree, override)
    cfg = _from_dict(RunConfig, tree, "")
    validate(cfg)
    return cfg


def _choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"config key {key!r} must be one of {', '.join(map(str, choices))}; "
                         f"got {_show(value)}{_suggest(value, choices)}")


def _known_name(key: str, value: str, available: Sequence[str], what: str) -> None:
    if value not in available:
        raise ValueError(f"config key {key!r}: unknown {what} {value!r}{_suggest(value, available)}; "
                         f"available: {', '.join(available)}")


def _kwargs_accepted(key: str, kwargs: Dict[str, Any], fn: Callable, taken: Sequence[str], owner: str) -> None:
    """Unknown keyword arguments of a builder fail here, not as a TypeError while building the run.

    ``taken`` are the parameters the trainer fills itself; builders with ``**kwargs`` are not checked.
    """
    try:
        params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("self", *taken)]
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    names = [p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     inspect.Parameter.KEYWORD_ONLY)]
    for name in kwargs:
        if name not in names:
            raise ValueError(f"config key '{key}.{name}': {owner} takes no option {name!r}{_suggest(name, names)}; "
                             f"its options: {', '.join(names) or 'none'}")


def validate(cfg: RunConfig) -> None:
    """Check ranges and names that would otherwise fail deep inside training.

    Raises:
        ValueError: naming the first offending key, its value and what is expected.
    """
    # registries are imported here, not at module level: reading a config must stay light
    from gca._checks import check_heads_divide
    from gca.backbones import BACKBONES
    from gca.backbones.embedding import _HEAD_INITS
    from gca.data import DATASETS
    from gca.data.transforms import TRANSFORM_KINDS
    from gca.graph import EDGE_MODES
    from gca.losses import METRIC_LOSSES
    from gca.losses.compat import SYNTHETIC_GRADIENTS, SYNTHETIC_LOSS_MODES
    from gca.nn import LAYERS
    from gca.schedules import SCHEDULE_SCALES
    from gca.synthesis import MIXING_MODES, NEGATIVES_PER_CLASS
    from gca.train.step import GENERATOR_STEPS

    d, m, lo, g, s, e = cfg.data, cfg.model, cfg.loss, cfg.gca, cfg.solver, cfg.eval

    def at_least(key: str, value, low, note: str = "") -> None:
        if value is not None and value < low:
            raise ValueError(f"config key {key!r} must be >= {low}{note}, got {_show(value)}")

    def positive(key: str, value) -> None:
        if value is not None and not value > 0:
            raise ValueError(f"config key {key!r} must be > 0, got {_show(value)}")

    def finite(key: str, value) -> None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"config key {key!r} must be a finite number, got {_show(value)}")

    def in_unit(key: str, value) -> None:
        if not 0 <= value < 1:
            raise ValueError(f"config key {key!r} must be in [0, 1), got {_show(value)}")

    for section in (cfg.data, cfg.model, cfg.loss, cfg.gca, cfg.solver, cfg.eval):
        where = {DataConfig: "data", ModelConfig: "model", LossConfig: "loss", GCAConfig: "gca",
                 SolverConfig: "solver", EvalConfig: "eval"}[type(section)]
        for f in fields(section):
            value = getattr(section, f.name)
            if isinstance(value, float):
                finite(f"{where}.{f.name}", value)

    # top level
    at_least("seed", cfg.seed, 0)
    if not cfg.name.strip() or "/" in cfg.name or "\\" in cfg.name:
        raise ValueError(f"config key 'name' must be a non-empty folder name without slashes, got {_show(cfg.name)}")
    if cfg.device != "auto":
        import torch
        try:
            torch.device(cfg.device)
        except (RuntimeError, ValueError):
            raise ValueError(f"config key 'device' must be 'auto' or a torch device such as 'cpu', 'cuda', "
                             f"'cuda:1'; got {_show(cfg.device)}") from None
    at_least("checkpoint_every_steps", cfg.checkpoint_every_steps, 0)
    at_least("log_every_steps", cfg.log_every_steps, 1)

    # data
    try:
        dataset = DATASETS.canonical(d.dataset)
    except KeyError:
        raise ValueError(f"config key 'data.dataset': unknown dataset {d.dataset!r}"
                         f"{_suggest(d.dataset, DATASETS.list())}; available: {', '.join(DATASETS.list())}") from None
    if dataset == "imagefolder" and d.root is None:
        raise ValueError("config key 'data.root' is required with data.dataset=imagefolder: the folder that holds "
                         "one sub-folder per class")
    _kwargs_accepted("data.dataset_kwargs", d.dataset_kwargs, DATASETS.get(dataset), ("root", "split", "transform"),
                     f"dataset {dataset!r}")
    if d.transform is not None:
        _choice("data.transform", d.transform, TRANSFORM_KINDS)
    at_least("data.image_size", d.image_size, 1)
    in_unit("data.val_fraction", d.val_fraction)
    at_least("data.classes_per_batch", d.classes_per_batch, 2, " (negatives need another class)")
    at_least("data.samples_per_class", d.samples_per_class, 2, " (anchors need a positive)")
    at_least("data.num_workers", d.num_workers, 0)
    _choice("data.class_sampling", d.class_sampling, ("coverage", "uniform"))

    # model
    _known_name("model.backbone", m.backbone, BACKBONES.list(), BACKBONES.kind)
    at_least("model.embedding_dim", m.embedding_dim, 1)
    _choice("model.head_init", m.head_init, _HEAD_INITS)

    # loss
    _known_name("loss.metric", lo.metric, METRIC_LOSSES.list(), METRIC_LOSSES.kind)
    _kwargs_accepted("loss.metric_kwargs", lo.metric_kwargs, METRIC_LOSSES.get(lo.metric),
                     ("num_classes", "embedding_dim"), f"loss {lo.metric!r}")
    positive("loss.proxy_lr_ratio", lo.proxy_lr_ratio)

    # gca
    _choice("gca.generator", g.generator, ("gca", "hdml"))
    at_least("gca.num_layers", g.num_layers, 0)
    at_least("gca.heads", g.heads, 1)
    check_heads_divide(m.embedding_dim, g.heads, "config key 'model.embedding_dim'", "gca.heads")
    _known_name("gca.layer", g.layer, LAYERS.list(), LAYERS.kind)
    in_unit("gca.dropout", g.dropout)
    _choice("gca.edges", g.edges, EDGE_MODES)
    batch = d.classes_per_batch * d.samples_per_class
    if g.edges == "knn":
        if g.k is None:
            raise ValueError("config key 'gca.k' is required with gca.edges=knn (neighbours per node)")
        if not 1 <= g.k <= batch - 1:
            raise ValueError(f"config key 'gca.k' must be in [1, {batch - 1}] (batch of data.classes_per_batch x "
                             f"data.samples_per_class = {batch}), got {g.k}")
    elif g.k is not None:
        raise ValueError(f"config key 'gca.k' ({g.k}) is only used with gca.edges=knn; remove it or set gca.edges=knn")
    _choice("gca.negatives_per_class", g.negatives_per_class, NEGATIVES_PER_CLASS)
    _choice("gca.mixing", g.mixing, MIXING_MODES)
    _choice("gca.schedule_scale", g.schedule_scale, SCHEDULE_SCALES)
    _choice("gca.step", g.step, GENERATOR_STEPS)
    if g.step == "fused" and g.enabled and g.generator != "gca":
        raise ValueError(f"config key 'gca.step' is fused, which needs gca.generator=gca, not {g.generator!r}")
    if not isinstance(g.compile, bool):
        raise ValueError(f"config key 'gca.compile' must be true or false, {_got(g.compile)}")
    if g.compile and g.enabled and g.generator != "gca":
        raise ValueError(f"config key 'gca.compile' is true, which needs gca.generator=gca, not {g.generator!r}")
    at_least("gca.memory_size", g.memory_size, 0)
    at_least("gca.memory_k", g.memory_k, 1)
    if g.memory_size and g.enabled and g.generator != "gca":
        raise ValueError(f"config key 'gca.memory_size' is {g.memory_size}, which needs gca.generator=gca, "
                         f"not {g.generator!r}")
    _choice("gca.synthetic_loss_mode", g.synthetic_loss_mode, SYNTHETIC_LOSS_MODES)
    _choice("gca.synthetic_gradient", g.synthetic_gradient, SYNTHETIC_GRADIENTS)
    if not (g.symmetric_edges == "auto" or isinstance(g.symmetric_edges, bool)):
        raise ValueError(f"config key 'gca.symmetric_edges' must be auto, true or false, {_got(g.symmetric_edges)}")
    if g.symmetric_edges is True and g.edges != "full":
        raise ValueError("config key 'gca.symmetric_edges' can only be true with gca.edges=full")
    for name in ("alpha", "beta", "softmax_factor", "hardness_weight", "diversity_weight", "classifier_weight",
                 "node_loss_weight"):
        at_least(f"gca.{name}", getattr(g, name), 0)

    # solver
    at_least("solver.epochs", s.epochs, 1)
    at_least("solver.max_steps", s.max_steps, 1)
    at_least("solver.steps_per_epoch", s.steps_per_epoch, 1)
    for name in ("lr", "head_lr_ratio", "gnn_lr", "classifier_lr", "lr_decay_gamma", "grad_clip_value"):
        positive(f"solver.{name}", getattr(s, name))
    at_least("solver.weight_decay", s.weight_decay, 0)
    at_least("solver.lr_decay_epochs", s.lr_decay_epochs, 1)
    at_least("solver.warmup_epochs", s.warmup_epochs, 0)
    _choice("solver.amp", s.amp, ("auto", "bf16", "fp16", "off"))
    _choice("solver.nonfinite", s.nonfinite, ("raise", "skip"))
    at_least("solver.max_nonfinite_in_row", s.max_nonfinite_in_row, 1)

    # eval
    if not e.ks:
        raise ValueError("config key 'eval.ks' must list at least one k for Recall@k, got []")
    for i, k in enumerate(e.ks):
        at_least(f"eval.ks[{i}]", k, 1)
    at_least("eval.every_epochs", e.every_epochs, 1)
    for i, epoch in enumerate(e.test_epochs):
        at_least(f"eval.test_epochs[{i}]", epoch, 0)
    at_least("eval.batch_size", e.batch_size, 1)
    metrics = [f"R@{k}" for k in e.ks] + ["MAP@R", "R-Precision"]
    _choice("eval.select_metric", e.select_metric, metrics)


def save_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
