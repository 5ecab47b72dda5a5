"""build_transforms: ImageNet, Omniglot and the other transform kinds."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from gca.data import build_transforms
from gca.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def test_imagenet_transforms():
    tr = build_transforms("imagenet", train=True)
    te = build_transforms("imagenet", train=False)
    rrc = next(t for t in tr.transforms if isinstance(t, T.RandomResizedCrop))
    assert rrc.size == (224, 224) and rrc.scale == (0.08, 1.0)
    assert any(isinstance(t, T.RandomHorizontalFlip) for t in tr.transforms)
    resize = next(t for t in te.transforms if isinstance(t, T.Resize))
    crop = next(t for t in te.transforms if isinstance(t, T.CenterCrop))
    assert resize.size == 256 and crop.size == (224, 224)
    norm = te.transforms[-1]
    assert isinstance(norm, T.Normalize) and tuple(norm.mean) == IMAGENET_MEAN and tuple(norm.std) == IMAGENET_STD
    gray = Image.fromarray(np.full((300, 400), 128, np.uint8))  # grayscale input -> 3 channels
    x = te(gray)
    assert x.shape == (3, 224, 224)
    assert torch.allclose(x[:, 0, 0], (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD), atol=1e-3)
    assert tr(gray).shape == (3, 224, 224)
    assert build_transforms("imagenet", train=False, image_size=112).transforms[1].size == 128
    pickle.dumps(tr)  # usable in DataLoader workers


def test_omniglot_and_other_kinds():
    img = Image.fromarray(np.where(np.random.default_rng(0).random((105, 105)) > 0.1, 255, 0).astype(np.uint8))
    tr = build_transforms("omniglot", train=True)
    te = build_transforms("omniglot", train=False, image_size=32)
    assert any(isinstance(t, T.RandomAffine) for t in tr.transforms)
    x = tr(img)
    assert x.shape == (1, 28, 28) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert te(img).shape == (1, 32, 32)
    assert not any(isinstance(t, T.RandomAffine) for t in te.transforms)
    torch.manual_seed(0)
    assert torch.equal(te(img), te(img))
    assert build_transforms("none", train=True) is None
    assert build_transforms("tensor", train=False)(img).shape == (1, 105, 105)
    with pytest.raises(ValueError, match="unknown transform kind 'resnet'"):
        build_transforms("resnet", train=True)
