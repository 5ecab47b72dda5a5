"""One table of bad inputs: each fails where it enters, with one line naming the value and what is expected.

Rows are ``(id, make_error(tmp_path), exception type, regex the message must match)``; the CLI rows run
``gca.cli.main`` and expect exit status 2 with one line on stderr. No row trains anything.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

import gca
from gca.backbones import OmniglotCNN, create_backbone
from gca.cli import main as cli_main
from gca.data import (
    CUB200,
    Caltech101,
    CorruptImageError,
    ImageFolderDML,
    Omniglot,
    StanfordOnlineProducts,
    build_transforms,
    create_dataset,
    resolve_data_root,
)
from gca.graph import full_edge_index
from gca.train.checkpoint import CheckpointError, load_checkpoint
from gca.train.config import CONFIG_DIR, load_config


# ------------------------------------------------------------------------------------------------ helpers
def _batch(b=6, d=8, classes=3):
    return torch.randn(b, d), torch.arange(b) % classes


def _graph(**kwargs):
    z, y = _batch()
    args = dict(embeddings=z, labels=y)
    args.update(kwargs)
    return gca.build_batch_graph(**args)


def _synth(**kwargs):
    z, y = _batch()
    args = dict(embeddings=z, labels=y, edge_index=full_edge_index(6))
    args.update(kwargs)
    return gca.synthesize_negatives(**args)


def _nan_batch():
    z, y = _batch()
    z[2, 0] = float("nan")
    return z, y


def _png(path, size=8, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.random.default_rng(0).random((size, size)) * 255).astype(np.uint8)
    img = Image.fromarray(pixels, "L")
    (img if mode == "L" else img.convert(mode)).save(path)
    return path


def _folder(root, classes=2, per_class=2, mode="L"):
    for c in range(classes):
        for i in range(per_class):
            _png(root / f"class_{c}" / f"{i}.png", mode=mode)
    return root


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _corrupt_image(tmp_path):
    root = _folder(tmp_path / "imgs")
    _write(root / "class_0" / "0.png", b"\x89PNG\r\n\x1a\n not really a png")
    return ImageFolderDML(root, split="all")[0]


def _truncated_image(tmp_path):
    root = _folder(tmp_path / "imgs", per_class=1)
    buf = tmp_path / "full.png"
    _png(buf, size=64)
    data = buf.read_bytes()
    _write(root / "class_1" / "0.png", data[: len(data) // 2])
    return ImageFolderDML(root, split="all")[1]


def _empty_class(tmp_path):
    root = _folder(tmp_path / "f")
    (root / "class_9").mkdir()
    return ImageFolderDML(root)


def _cfg(*overrides):
    return lambda tmp_path: load_config("omniglot", list(overrides))


def _mismatched_weights(tmp_path):
    path = tmp_path / "narrow.pt"
    torch.save(OmniglotCNN(channels=16, num_features=16).state_dict(), path)
    return create_backbone("omniglot_cnn", weights=path)


# ------------------------------------------------------------------------------------------------ the table
API_CASES = [
    # graphs: tensors and labels
    ("graph-labels-length", lambda t: _graph(labels=torch.arange(5)), ValueError,
     r"embeddings and labels differ in length: 6 embeddings, 5 labels"),
    ("graph-labels-float", lambda t: _graph(labels=torch.zeros(6)), TypeError,
     r"labels must be an integer tensor, got torch\.float32"),
    ("graph-labels-list", lambda t: _graph(labels=[0, 1, 2, 0, 1, 2]), TypeError,
     r"labels must be a torch\.Tensor, got list"),
    ("graph-embeddings-1d", lambda t: _graph(embeddings=torch.randn(6)), ValueError,
     r"embeddings must have shape \[B, D\], got \(6,\)"),
    ("graph-embeddings-int", lambda t: _graph(embeddings=torch.ones(6, 8, dtype=torch.long)), TypeError,
     r"embeddings must be floating point, got torch\.int64"),
    ("graph-embeddings-nan", lambda t: gca.build_batch_graph(*_nan_batch()), ValueError,
     r"embeddings contain NaN or infinite values \(rows \[2\]\)"),
    ("graph-edges-unknown", lambda t: _graph(edges="ring"), ValueError,
     r"edges must be one of 'full', 'knn'; got 'ring'"),
    ("graph-knn-without-k", lambda t: _graph(edges="knn"), TypeError,
     r"edges='knn' needs an integer k \(neighbours per node\), got None"),
    ("graph-knn-k-too-large", lambda t: _graph(edges="knn", k=6), ValueError,
     r"k must be in \[1, B-1\] = \[1, 5\] for a batch of 6, got 6"),
    ("graph-full-with-k", lambda t: _graph(k=3), ValueError, r"k \(3\) is only used with edges='knn'"),
    # layers
    ("layer-unknown", lambda t: gca.create_layer("gat", 16), ValueError,
     r"unknown layer type 'gat' \(did you mean 'gatv2'\?\); available: gatv2, gca, gen, gine, "),
    ("layer-heads-divide", lambda t: gca.create_layer("gca", 18, heads=4), ValueError,
     r"channels \(18\) must be divisible by heads \(4\)"),
    ("layer-heads-zero", lambda t: gca.create_layer("gca", 16, heads=0), ValueError, r"heads must be >= 1, got 0"),
    ("layer-channels-float", lambda t: gca.create_layer("gca", 16.0), TypeError,
     r"channels must be an integer, got 16\.0 \(float\)"),
    ("layer-dropout-range", lambda t: gca.create_layer("gca", 16, dropout=1.5), ValueError,
     r"dropout must be in \[0, 1\), got 1\.5"),
    ("propagation-negative-layers", lambda t: gca.GraphPropagation(16, num_layers=-1), ValueError,
     r"num_layers must be >= 0, got -1"),
    # the model
    ("model-unknown-layer", lambda t: gca.GCAHNG(16, 10, layer="nope"), ValueError,
     r"unknown layer type 'nope'(?: \(did you mean '[a-z0-9]+'\?\))?; available: gatv2, gca"),
    ("model-unknown-layer-no-layers", lambda t: gca.GCAHNG(16, 10, num_layers=0, layer="nope"), ValueError,
     r"unknown layer type 'nope'"),
    ("model-dropout-range", lambda t: gca.GCAHNG(16, 10, dropout=2.0), ValueError,
     r"dropout must be in \[0, 1\), got 2\.0"),
    ("model-embedding-width", lambda t: gca.GCAHNG(16, 10, num_layers=1).metric_losses(*_batch(d=12)), ValueError,
     r"embeddings have D=12 but the model was built for D=16"),
    ("model-label-range", lambda t: gca.GCAHNG(8, 2, num_layers=1).metric_losses(*_batch()), ValueError,
     r"labels must lie in \[0, 2\) for a classifier over 2 training classes; got min 0, max 2"),
    # synthesis
    ("synth-lam-shape", lambda t: _synth(lam=torch.rand(36, 5)), ValueError,
     r"lam must have shape \[E, D\] = \[36, 8\] or \[E, 1\], got \(36, 5\)"),
    ("synth-edge-index-shape", lambda t: _synth(edge_index=torch.zeros(3, 36, dtype=torch.long)), ValueError,
     r"edge_index must have shape \[2, E\], got \(3, 36\)"),
    ("synth-edge-index-float", lambda t: _synth(edge_index=full_edge_index(6).float()), TypeError,
     r"edge_index must be an integer \(int64\) tensor, got torch\.float32"),
    ("synth-labels-length", lambda t: _synth(labels=torch.arange(5)), ValueError,
     r"embeddings and labels differ in length: 6 embeddings, 5 labels"),
    ("synth-mixing-unknown", lambda t: _synth(mixing="median"), ValueError,
     r"mixing must be one of 'sequential', 'dirichlet', 'mean'; got 'median'"),
    ("synth-negatives-unknown", lambda t: _synth(negatives_per_class="two"), ValueError,
     r"negatives_per_class must be one of 'all', 'one'; got 'two'"),
    ("synth-gamma-range", lambda t: _synth(gamma=1.5), ValueError, r"gamma must be in \[0, 1\], got 1\.5"),
]

# GCAHNG keeps edges/mixing/negatives_per_class: checked when it is built, not at the first batch
MODEL_OPTION_CASES = [
    ("model-edges-unknown", lambda t: gca.GCAHNG(16, 10, edges="ring"), ValueError,
     r"edges must be one of 'full', 'knn'; got 'ring'"),
    ("model-mixing-unknown", lambda t: gca.GCAHNG(16, 10, mixing="median"), ValueError,
     r"mixing must be one of 'sequential', 'dirichlet', 'mean'; got 'median'"),
    ("model-negatives-unknown", lambda t: gca.GCAHNG(16, 10, negatives_per_class="two"), ValueError,
     r"negatives_per_class must be one of 'all', 'one'; got 'two'"),
]

CONFIG_CASES = [
    # types
    ("cfg-lr-not-a-number", _cfg("solver.lr=abc"), ValueError,
     r"^config key 'solver\.lr' must be a number, got 'abc' \(str\)$"),
    ("cfg-lr-bool", _cfg("solver.lr=true"), ValueError, r"config key 'solver\.lr' must be a number, got True \(bool\)"),
    ("cfg-epochs-float", _cfg("solver.epochs=2.5"), ValueError,
     r"config key 'solver\.epochs' must be an integer, got 2\.5 \(float\)"),
    ("cfg-bool-key", _cfg("plots=maybe"), ValueError, r"config key 'plots' must be true or false, got 'maybe' \(str\)"),
    ("cfg-optional-int", _cfg("gca.k=abc"), ValueError,
     r"config key 'gca\.k' must be an integer or null, got 'abc' \(str\)"),
    ("cfg-ks-not-list", _cfg("eval.ks=5"), ValueError, r"config key 'eval\.ks' must be a list, got 5 \(int\)"),
    ("cfg-unknown-generator-step", _cfg("gca.step=fast"), ValueError,
     r"config key 'gca\.step' must be one of .*two_pass.*fused.*got 'fast'"),
    ("cfg-fused-step-with-hdml", _cfg("gca.step=fused", "gca.generator=hdml"), ValueError,
     r"config key 'gca\.step' is fused, which needs gca\.generator=gca, not 'hdml'"),
    ("cfg-kwargs-not-mapping", _cfg("loss.metric_kwargs=3"), ValueError,
     r"config key 'loss\.metric_kwargs' must be a mapping, got 3 \(int\)"),
    ("cfg-section-not-mapping", _cfg("solver=5"), ValueError,
     r"config section 'solver' must be a mapping, got 5 \(int\)"),
    # ranges
    ("cfg-lr-negative", _cfg("solver.lr=-0.1"), ValueError, r"config key 'solver\.lr' must be > 0, got -0\.1"),
    ("cfg-lr-nan", _cfg("solver.lr=.nan"), ValueError, r"config key 'solver\.lr' must be a finite number, got nan"),
    ("cfg-dropout-range", _cfg("gca.dropout=1"), ValueError,
     r"config key 'gca\.dropout' must be in \[0, 1\), got 1\.0"),
    ("cfg-batch-size-zero", _cfg("eval.batch_size=0"), ValueError,
     r"config key 'eval\.batch_size' must be >= 1, got 0"),
    ("cfg-ks-zero", _cfg("eval.ks=[1, 0]"), ValueError, r"config key 'eval\.ks\[1\]' must be >= 1, got 0"),
    ("cfg-samples-per-class", _cfg("data.samples_per_class=1"), ValueError,
     r"config key 'data\.samples_per_class' must be >= 2 \(anchors need a positive\), got 1"),
    ("cfg-heads-divide", _cfg("gca.heads=3"), ValueError,
     r"config key 'model\.embedding_dim' \(64\) must be divisible by gca\.heads \(3\)"),
    ("cfg-knn-without-k", _cfg("gca.edges=knn"), ValueError, r"config key 'gca\.k' is required with gca\.edges=knn"),
    ("cfg-knn-k-range", _cfg("gca.edges=knn", "gca.k=64"), ValueError,
     r"config key 'gca\.k' must be in \[1, 63\] \(batch of .* = 64\), got 64"),
    ("cfg-select-metric", _cfg("eval.select_metric=R@3"), ValueError,
     r"config key 'eval\.select_metric' must be one of R@1, R@2, R@4, R@8, MAP@R, R-Precision; got 'R@3'"),
    ("cfg-device", _cfg("device=gpu"), ValueError, r"config key 'device' must be 'auto' or a torch device .*got 'gpu'"),
    # unknown names
    ("cfg-unknown-key", _cfg("solver.lrr=0.1"), ValueError,
     r"unknown config key 'solver\.lrr' \(did you mean 'lr'\?\); known keys of solver: amp, "),
    ("cfg-unknown-dataset", _cfg("data.dataset=foo"), ValueError,
     r"config key 'data\.dataset': unknown dataset 'foo'; available: caltech101, cars196, cub200, imagefolder, "),
    ("cfg-unknown-backbone", _cfg("model.backbone=resnet5"), ValueError,
     r"config key 'model\.backbone': unknown backbone 'resnet5' \(did you mean 'resnet50'\?\); available: "),
    ("cfg-unknown-loss", _cfg("loss.metric=npar"), ValueError,
     r"config key 'loss\.metric': unknown metric loss 'npar' \(did you mean 'npair'\?\); available: .*proxy_anchor"),
    ("cfg-unknown-layer", _cfg("gca.layer=gat"), ValueError,
     r"config key 'gca\.layer': unknown layer type 'gat' \(did you mean 'gatv2'\?\); available: gatv2, gca, "),
    ("cfg-unknown-edges", _cfg("gca.edges=ring"), ValueError,
     r"config key 'gca\.edges' must be one of full, knn; got 'ring'"),
    ("cfg-unknown-mixing", _cfg("gca.mixing=median"), ValueError,
     r"config key 'gca\.mixing' must be one of sequential, dirichlet, mean; got 'median'"),
    ("cfg-unknown-negatives", _cfg("gca.negatives_per_class=two"), ValueError,
     r"config key 'gca\.negatives_per_class' must be one of all, one; got 'two'"),
    ("cfg-unknown-head-init", _cfg("model.head_init=xavier"), ValueError,
     r"config key 'model\.head_init' must be one of orthogonal, kaiming, default; got 'xavier'"),
    ("cfg-unknown-transform", _cfg("data.transform=rgb"), ValueError,
     r"config key 'data\.transform' must be one of imagenet, omniglot, tensor, none; got 'rgb'"),
    ("cfg-unknown-loss-option", _cfg("loss.metric_kwargs={marg: 1}"), ValueError,
     r"config key 'loss\.metric_kwargs\.marg': loss 'npair' takes no option 'marg'; its options: l2_reg"),
    ("cfg-unknown-dataset-option", _cfg("data.dataset_kwargs={foo: 1}"), ValueError,
     r"config key 'data\.dataset_kwargs\.foo': dataset 'omniglot' takes no option 'foo'; its options: source, "),
    ("cfg-imagefolder-without-root", _cfg("data.dataset=imagefolder"), ValueError,
     r"config key 'data\.root' is required with data\.dataset=imagefolder"),
    # overrides and files
    ("override-bad-yaml", _cfg("solver.lr=[1"), ValueError,
     r"override 'solver\.lr=\[1': the value '\[1' is not valid YAML \(expected ',' or '\]'"),
    ("override-without-equals", _cfg("solver.lr"), ValueError,
     r"override 'solver\.lr' must look like section\.key=value"),
    ("override-empty-key-part", _cfg("solver..lr=1"), ValueError,
     r"override 'solver\.\.lr=1': 'solver\.\.lr' is not a key like section\.key"),
    ("override-into-a-value", _cfg("name.x=1"), ValueError, r"override 'name\.x=1': 'name' is not a section"),
    ("config-yaml-syntax", lambda t: load_config(str(_write(t / "bad.yaml", "solver:\n  lr: [0.1\n  epochs: 2\n"))),
     ValueError, r"config file '.*bad\.yaml', line 3, column \d+: invalid YAML \(expected ',' or '\]'"),
    ("config-yaml-tab", lambda t: load_config(str(_write(t / "tab.yaml", "solver:\n\tlr: 0.1\n"))),
     ValueError, r"config file '.*tab\.yaml', line 2, column 1: invalid YAML"),
    ("config-not-a-mapping", lambda t: load_config(str(_write(t / "list.yaml", "- a\n- b\n"))), ValueError,
     r"config file '.*list\.yaml' must hold a mapping of sections at the top level, got \['a', 'b'\] \(list\)"),
    ("config-not-text", lambda t: load_config(str(_write(t / "bin.yaml", b"\xff\xfe\x00garbage"))), ValueError,
     r"config file '.*bin\.yaml' is not UTF-8 text"),
    ("config-missing", lambda t: load_config(str(t / "nope.yaml")), FileNotFoundError,
     r"config '.*nope\.yaml' is neither a file nor a packaged config; packaged: .*omniglot"),
]

DATA_CASES = [
    ("data-root-missing", lambda t: resolve_data_root(t / "nope"), FileNotFoundError,
     r"Data root '.*nope' \(given as argument\) does not exist\. Pass root=\.\.\. \(data\.root=\.\.\. on the gca"),
    ("folder-missing", lambda t: ImageFolderDML(t / "nope"), FileNotFoundError,
     r"Image folder '.*nope' not found\. Expected one sub-folder per class: .*nope/<class>/<image>\.jpg"),
    ("folder-is-a-file", lambda t: ImageFolderDML(_write(t / "file.txt", "x")), NotADirectoryError,
     r"Image folder '.*file\.txt' is a file, not a folder\. Expected one sub-folder per class"),
    ("folder-empty", lambda t: (t / "empty").mkdir() or ImageFolderDML(t / "empty"), FileNotFoundError,
     r"Image folder '.*empty' holds no class sub-folders with images \(0 sub-folder\(s\)\)\. Expected one sub-folder"),
    ("folder-flat-layout", lambda t: ImageFolderDML(_png(t / "flat" / "a.png").parent), FileNotFoundError,
     r"Image folder '.*flat' holds no class sub-folders with images \(found 1 image file\(s\) directly in it, "),
    ("folder-empty-class", _empty_class, FileNotFoundError,
     r"Class folder '.*class_9' holds no image file \(extensions \.jpg"),
    ("folder-one-class", lambda t: ImageFolderDML(_folder(t / "one", classes=1)), ValueError,
     r"Image folder '.*one' holds 1 class folder \('class_0'\); a class-disjoint train split needs at least 2"),
    ("folder-bad-split", lambda t: ImageFolderDML(_folder(t / "f"), split="val"), ValueError,
     r"ImageFolderDML: unknown split 'val'; expected one of 'train', 'test', 'all'"),
    ("image-corrupt", _corrupt_image, CorruptImageError,
     r"Cannot decode image file '.*class_0/0\.png' \(truncated or corrupt\?\)"),
    ("image-truncated", _truncated_image, CorruptImageError,
     r"Cannot decode image file '.*class_1/0\.png' \(truncated or corrupt\?\)"),
    ("omniglot-missing", lambda t: Omniglot(root=t), FileNotFoundError,
     r"Omniglot train split \(images_background\) not found under '.*'\. Expected either the numpy archives; "
     r"<root>/omniglot/images_background\.npz"),
    ("caltech-missing", lambda t: Caltech101(root=t), FileNotFoundError,
     r"Caltech-101: folder '.*caltech101/101_ObjectCategories' not found; expected layout: "
     r"<root>/caltech101/101_ObjectCategories/<class>/image_0001\.jpg"),
    ("cub-missing", lambda t: CUB200(root=t), FileNotFoundError,
     r"CUB-200-2011: annotation file '.*CUB_200_2011/images\.txt' not found; expected layout: "),
    ("sop-missing", lambda t: StanfordOnlineProducts(root=t), FileNotFoundError,
     r"Stanford Online Products: annotation file '.*Ebay_train\.txt' not found; expected layout: "),
    ("dataset-unknown", lambda t: create_dataset("mnist"), ValueError,
     r"unknown dataset 'mnist' \(did you mean 'omniglot'\?\); available: caltech101, cars196, cub200, imagefolder, "
     r"inshop, omniglot, sop$"),
    ("transform-unknown", lambda t: build_transforms("rgb", train=True), ValueError,
     r"unknown transform kind 'rgb'; expected one of imagenet, omniglot, tensor, none"),
    ("transform-channels", lambda t: build_transforms("omniglot", train=True, channels=2), ValueError,
     r"channels must be 1 \(grayscale\) or 3 \(RGB\), got 2"),
    ("transform-image-size", lambda t: build_transforms("omniglot", train=True, image_size=0), ValueError,
     r"image_size must be a positive integer, got 0"),
    ("backbone-channels", lambda t: OmniglotCNN()(torch.randn(2, 4, 8, 8)), ValueError,
     r"OmniglotCNN takes 1-channel images \[N, 1, H, W\], got 4 channels \(shape \(2, 4, 8, 8\)\); "
     r"build the transform with channels=1"),
    ("backbone-unknown", lambda t: create_backbone("resnet5"), ValueError,
     r"unknown backbone 'resnet5' \(did you mean 'resnet50'\?\); available: dino_vits16, "),
    ("weights-missing", lambda t: create_backbone("omniglot_cnn", weights=t / "w.pt"), FileNotFoundError,
     r"weights file not found: '.*w\.pt'"),
    ("weights-garbage", lambda t: create_backbone("omniglot_cnn", weights=_write(t / "w.pt", b"\x80\x02 garbage")),
     ValueError, r"could not read weights file '.*w\.pt' \((not a PyTorch file|truncated or corrupt)"),
    ("weights-other-config", _mismatched_weights, ValueError,
     r"weights from '.*narrow\.pt' do not match OmniglotCNN: shape mismatches \(\d+\): features\.0\.weight: "
     r"checkpoint \(16, 1, 3, 3\) vs model \(64, 1, 3, 3\)"),
]

# ---- checkpoints: missing, empty, garbage, truncated, crafted, foreign, incomplete, from another config ----
class _Crafted:
    """Unpickling this calls ``os.system``: what a malicious checkpoint does."""

    def __reduce__(self):
        import os
        return os.system, ("echo crafted-checkpoint-ran",)


def _real_checkpoint(t):
    path = t / "real.pt"
    torch.save({"config": {}, "model": {"w": torch.randn(64, 64)}}, path)
    return path


def _truncated_checkpoint(t):
    data = _real_checkpoint(t).read_bytes()
    return _write(t / "cut.pt", data[: len(data) // 2])


def _crafted_checkpoint(t):
    path = t / "crafted.pt"
    torch.save({"config": {}, "model": {}, "payload": _Crafted()}, path)
    return path


def _saved(t, obj, name="obj.pt"):
    torch.save(obj, t / name)
    return t / name


def _tiny_run(t, *extra):
    root = t / "imgs"
    if not root.exists():
        _folder(root, classes=4, per_class=3)
    return [f"data.root={root}", "data.dataset=imagefolder", "data.transform=omniglot", "data.image_size=8",
            "data.val_fraction=0", "data.classes_per_batch=2", "model.embedding_dim=8", "gca.heads=2",
            "plots=false", f"output_dir={t / 'runs'}", *extra]


def _resume_from_other_config(t):
    from gca.train import Trainer
    first = Trainer(load_config("omniglot", _tiny_run(t)), progress=False)
    first.save_checkpoint()
    other = Trainer(load_config("omniglot", _tiny_run(t, "model.embedding_dim=16")), progress=False)
    other.resume()


def _weights_of_another_model(t):
    from gca.train import Trainer
    trainer = Trainer(load_config("omniglot", _tiny_run(t)), progress=False)
    trainer.load_model_weights({"head.weight": torch.zeros(3, 3)}, source="other.pt")


CHECKPOINT_CASES = [
    ("ckpt-missing", lambda t: load_checkpoint(t / "none.pt"), FileNotFoundError,
     r"checkpoint .*none\.pt does not exist"),
    ("ckpt-folder", lambda t: load_checkpoint(t), CheckpointError, r"checkpoint .* is a folder; expected a \.pt file"),
    ("ckpt-empty", lambda t: load_checkpoint(_write(t / "e.pt", b"")), CheckpointError,
     r"checkpoint .*e\.pt is empty \(0 bytes\)"),
    ("ckpt-garbage", lambda t: load_checkpoint(_write(t / "g.pt", b"\x80\x02 garbage bytes")), CheckpointError,
     r"checkpoint .*g\.pt is not a readable PyTorch checkpoint \(garbage or corrupt"),
    ("ckpt-text", lambda t: load_checkpoint(_write(t / "notes.pt", b"epoch 3: R@1 0.7")), CheckpointError,
     r"checkpoint .*notes\.pt is not a readable PyTorch checkpoint"),
    ("ckpt-truncated", lambda t: load_checkpoint(_truncated_checkpoint(t)), CheckpointError,
     r"checkpoint .*cut\.pt is not a readable PyTorch checkpoint \(truncated or corrupt\? "),
    ("ckpt-crafted", lambda t: load_checkpoint(_crafted_checkpoint(t)), CheckpointError,
     r"checkpoint .*crafted\.pt holds a (posix|nt|os)\.system object, not only tensors.*refusing to unpickle"),
    ("ckpt-not-a-dict", lambda t: load_checkpoint(_saved(t, [1, 2])), CheckpointError,
     r"checkpoint .*obj\.pt holds a list, not a gca checkpoint dict"),
    ("ckpt-missing-key", lambda t: load_checkpoint(_saved(t, {"model": {}})), CheckpointError,
     r"checkpoint .*obj\.pt is not a gca checkpoint: it has no 'config' entry \(keys: model\)"),
    ("ckpt-other-config", _resume_from_other_config, CheckpointError,
     r"checkpoint .*last\.pt was written by a different config \(model\.embedding_dim is 8 there and 16 here\)"),
    ("ckpt-weights-of-another-model", _weights_of_another_model, CheckpointError,
     r"checkpoint other\.pt does not fit the configured model: Error\(s\) in loading state_dict"),
]

CASES = [pytest.param(fn, exc, pattern, id=name) for name, fn, exc, pattern in
         API_CASES + MODEL_OPTION_CASES + CONFIG_CASES + DATA_CASES + CHECKPOINT_CASES]


@pytest.mark.parametrize("make_error, exc, pattern", CASES)
def test_bad_input_is_named_in_one_line(tmp_path, make_error, exc, pattern):
    with pytest.raises(exc) as info:
        make_error(tmp_path)
    message = str(info.value)
    assert "\n" not in message, message
    assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"


def test_table_size():
    assert len(API_CASES + MODEL_OPTION_CASES + CONFIG_CASES + DATA_CASES + CHECKPOINT_CASES) >= 30
    assert len(CHECKPOINT_CASES) >= 5


# ------------------------------------------------------------------------------------------------ CLI
def _yaml_error(t):
    return ["train", "--config", str(_write(t / "broken.yaml", "data:\n  dataset: omniglot\n solver: {}\n"))]


CLI_CASES = [
    ("cli-lr-not-a-number", lambda t: ["train", "--config", "omniglot", "solver.lr=abc"],
     r"gca train: error: config key 'solver\.lr' must be a number, got 'abc' \(str\)"),
    ("cli-unknown-dataset", lambda t: ["train", "--config", "omniglot", "data.dataset=foo"],
     r"gca train: error: config key 'data\.dataset': unknown dataset 'foo'; available: "),
    ("cli-yaml-syntax", _yaml_error, r"gca train: error: config file '.*broken\.yaml', line 3, column 2: invalid YAML"),
    ("cli-missing-config", lambda t: ["train", "--config", str(t / "nope.yaml")],
     r"gca train: error: config '.*nope\.yaml' is neither a file nor a packaged config"),
    ("cli-bad-override", lambda t: ["compare", "--config", "omniglot", "gca.edges=ring"],
     r"gca compare: error: config key 'gca\.edges' must be one of full, knn; got 'ring'"),
    ("cli-override-yaml", lambda t: ["train", "--config", "omniglot", "eval.ks=[1,2"],
     r"gca train: error: override 'eval\.ks=\[1,2': the value '\[1,2' is not valid YAML"),
    ("cli-missing-image-folder", lambda t: ["train", "--config", "omniglot", "data.dataset=imagefolder",
                                            f"data.root={t / 'nope'}", f"output_dir={t / 'runs'}", "--no-progress"],
     r"gca train: error: Image folder '.*nope' not found\. Expected one sub-folder per class"),
]

CHECKPOINT_CLI_CASES = [
    ("cli-eval-missing", lambda t: ["eval", "--checkpoint", str(t / "nope.pt")],
     r"gca eval: error: checkpoint .*nope\.pt does not exist"),
    ("cli-eval-garbage", lambda t: ["eval", "--checkpoint", str(_write(t / "g.pt", b"\x80\x02 garbage"))],
     r"gca eval: error: checkpoint .*g\.pt is not a readable PyTorch checkpoint"),
    ("cli-eval-truncated", lambda t: ["eval", "--checkpoint", str(_truncated_checkpoint(t))],
     r"gca eval: error: checkpoint .*cut\.pt is not a readable PyTorch checkpoint \(truncated or corrupt"),
    ("cli-eval-crafted", lambda t: ["eval", "--checkpoint", str(_crafted_checkpoint(t))],
     r"gca eval: error: checkpoint .*crafted\.pt holds a (posix|nt|os)\.system object"),
    ("cli-eval-not-a-checkpoint", lambda t: ["eval", "--checkpoint", str(_saved(t, {"w": torch.ones(2)}))],
     r"gca eval: error: checkpoint .*obj\.pt is not a gca checkpoint: it has no 'config' entry"),
    ("cli-resume-missing", lambda t: ["train", "--config", "omniglot", *_tiny_run(t), "--no-progress",
                                      "--resume", str(t / "gone.pt")],
     r"gca train: error: checkpoint .*gone\.pt does not exist"),
]


@pytest.mark.parametrize("argv, pattern", [pytest.param(a, p, id=i) for i, a, p in CLI_CASES + CHECKPOINT_CLI_CASES])
def test_cli_reports_bad_input_in_one_line(tmp_path, capsys, monkeypatch, argv, pattern):
    monkeypatch.delenv("GCA_DEBUG", raising=False)
    assert cli_main(argv(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert re.fullmatch(pattern + r".*\n", err), f"{err!r} does not match {pattern!r}"


def test_cli_debug_reraises(monkeypatch):
    monkeypatch.setenv("GCA_DEBUG", "1")
    with pytest.raises(ValueError, match="config key 'solver.lr' must be a number"):
        cli_main(["train", "--config", "omniglot", "solver.lr=abc"])


# ------------------------------------------------------------------------------------------------ good input
@pytest.mark.parametrize("name", sorted(str(p.relative_to(CONFIG_DIR))[:-5] for p in CONFIG_DIR.rglob("*.yaml")))
def test_packaged_config_loads(name):
    cfg = load_config(name)
    assert cfg.model.embedding_dim % cfg.gca.heads == 0


def test_float_keys_accept_ints_and_yaml_exponents():
    cfg = load_config("omniglot", ["solver.lr=1e-4", "solver.gnn_lr=1", "name=2024"])
    assert cfg.solver.lr == 1e-4 and isinstance(cfg.solver.gnn_lr, float) and cfg.name == "2024"


@pytest.mark.parametrize("folder_mode", ["L", "RGB"])
@pytest.mark.parametrize("kind, backbone_channels", [("omniglot", 1), ("omniglot", 3), ("imagenet", 3),
                                                     ("imagenet", 1)])
def test_image_folder_channels_just_work(tmp_path, folder_mode, kind, backbone_channels):
    """Grayscale or colour PNGs feed a 1- or 3-channel backbone, whatever the transform kind."""
    root = _folder(tmp_path / "digits", classes=4, mode=folder_mode)
    transform = build_transforms(kind, train=True, image_size=16)
    dataset = create_dataset("imagefolder", root=root, split="train", transform=transform)
    batch = torch.stack([dataset[i][0] for i in range(len(dataset))])
    backbone = create_backbone("omniglot_cnn", in_channels=backbone_channels, num_blocks=2, channels=8).eval()
    assert batch.shape[1] == (1 if kind == "omniglot" else 3)
    with torch.no_grad():
        assert backbone(batch).shape == (len(dataset), 8)
    # with the backbone's channel count the transform converts the image itself
    matched = build_transforms(kind, train=False, image_size=16, channels=backbone.in_channels)
    assert matched(Image.open(root / "class_0" / "0.png")).shape == (backbone_channels, 16, 16)


def test_a_process_group_without_its_address_is_named(tmp_path, capsys, monkeypatch):
    """WORLD_SIZE > 1 without the rendezvous address torchrun sets: one line, before any run folder exists."""
    monkeypatch.delenv("GCA_DEBUG", raising=False)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert cli_main(["train", "--config", "omniglot", *_tiny_run(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"gca train: error: WORLD_SIZE=2 but MASTER_ADDR and MASTER_PORT not set: start "
                        r"data-parallel training with torchrun .*\n", err), err
    assert not (tmp_path / "runs").exists()
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "3")
    assert cli_main(["train", "--config", "omniglot", *_tiny_run(tmp_path), "--no-progress"]) == 2
    assert re.fullmatch(r"gca train: error: RANK=3 is not in \[0, WORLD_SIZE=3\)\n", capsys.readouterr().err)
