"""The frozen-backbone feature cache: cached_features, load_features and FeatureDataset."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import transforms as T

from gca.data import FeatureDataset, ImageFolderDML, cached_features, carve_validation, load_features


class CountingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 5)
        self.drop = nn.Dropout(0.9)
        self.calls = 0
        self.modes = []

    def forward(self, x):
        self.calls += 1
        self.modes.append(self.training)
        assert not torch.is_grad_enabled()
        return self.drop(self.fc(x.flatten(1)))


@pytest.fixture
def img_ds(tmp_path, builders):
    root = tmp_path / "imgs"
    for c in range(3):
        for j in range(3 + c):
            builders.write_image(root / f"c{c}" / f"{j}.jpg", seed=c * 10 + j)
    tf = T.Compose([T.Resize((8, 8)), T.ToTensor()])
    return ImageFolderDML(root, "all", transform=tf)


def test_cached_features_compute_then_reuse(tmp_path, img_ds):
    net = CountingNet()
    net.train()
    cache = tmp_path / "cache"
    feats = cached_features(net, img_ds, cache, batch_size=4, device="cpu", backbone_name="tiny", progress=False)
    assert isinstance(feats, FeatureDataset)
    assert feats.features.shape == (len(img_ds), 5) and feats.dim == 5
    assert np.array_equal(feats.labels, img_ds.labels) and feats.labels.dtype == np.int64
    assert feats.class_names == img_ds.class_names
    assert net.calls == 3 and not any(net.modes) and net.training  # eval during, mode restored
    files = list(cache.iterdir())
    assert files == [feats.path] and feats.path.name.startswith("imagefolder_all_tiny_")
    x, y = feats[2]
    assert x.shape == (5,) and y == int(img_ds.labels[2])
    # deterministic (eval mode: dropout off)
    with torch.no_grad():
        net.eval()
        direct = net.fc(torch.stack([img_ds[i][0] for i in range(len(img_ds))]).flatten(1))
    assert torch.allclose(feats.features, direct, atol=1e-6)

    again = cached_features(net, img_ds, cache, batch_size=4, backbone_name="tiny", progress=False)
    assert net.calls == 3  # loaded from the cache, no new forward passes
    assert torch.equal(again.features, feats.features)
    blob = torch.load(feats.path, weights_only=True)
    assert set(blob) >= {"features", "labels", "key", "hash"} and blob["key"]["backbone"] == "tiny"
    assert torch.equal(load_features(feats.path).features, feats.features)


def test_cache_key_distinguishes_inputs(tmp_path, img_ds):
    net = CountingNet()
    cache = tmp_path / "c"
    a = cached_features(net, img_ds, cache, backbone_name="tiny", progress=False)
    b = cached_features(net, img_ds, cache, backbone_name="other", progress=False)
    assert a.path != b.path
    sub, val = carve_validation(img_ds, val_fraction=0.34, seed=0)
    v = cached_features(net, val, cache, backbone_name="tiny", progress=False)
    assert v.path != a.path and len(v) == len(val) and np.array_equal(v.labels, val.labels)
    with torch.no_grad():
        net.fc.weight.add_(1.0)  # retrained weights -> new key
    c = cached_features(net, img_ds, cache, backbone_name="tiny", progress=False)
    assert c.path != a.path and not torch.allclose(c.features, a.features)
    assert len(list(cache.glob("*.pt"))) == 4
    assert not [p for p in cache.iterdir() if p.suffix != ".pt"]  # no temp files left


def test_explicit_file_path_and_stale_cache(tmp_path, img_ds):
    net = CountingNet()
    path = tmp_path / "f" / "feats.pt"
    cached_features(net, img_ds, path, backbone_name="x", progress=False)
    calls = net.calls
    cached_features(net, img_ds, path, backbone_name="x", progress=False)
    assert net.calls == calls
    cached_features(net, img_ds, path, backbone_name="y", progress=False)  # different key -> recompute
    assert net.calls > calls and torch.load(path, weights_only=True)["key"]["backbone"] == "y"
    path.write_bytes(b"garbage")  # corrupt cache -> recompute
    out = cached_features(net, img_ds, path, backbone_name="y", progress=False)
    assert out.features.shape[0] == len(img_ds)


def test_atomic_write_leaves_no_partial_file(tmp_path, img_ds, monkeypatch):
    net = CountingNet()
    path = tmp_path / "feats.pt"

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        cached_features(net, img_ds, path, backbone_name="x", progress=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "imgs"]


def test_feature_dataset_validation():
    with pytest.raises(ValueError, match="features must be"):
        FeatureDataset(torch.zeros(3, 2), np.zeros(4))
    fd = FeatureDataset(torch.zeros(3, 2), np.array([0, 1, 1]))
    assert fd.num_classes == 2 and fd.tensors[1].dtype == torch.int64
