"""Tests for gca.evaluation.embed_dataset."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from gca.evaluation import embed_dataset, retrieval_metrics


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5))
        self.seen_training = []

    def forward(self, x):
        self.seen_training.append(self.training)
        return self.body(x)


class _DictDataset(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i], "index": i}


def _data(n=23):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 4, 4, generator=gen), torch.randint(0, 5, (n,), generator=gen)


def test_embed_dataset_tuple_batches_order_and_mode():
    torch.manual_seed(0)
    x, y = _data()
    model = _Net().train()
    loader = DataLoader(TensorDataset(x, y), batch_size=5, shuffle=False)
    emb, labels = embed_dataset(model, loader, "cpu", progress=False)
    assert emb.shape == (23, 8) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert labels.dtype == torch.int64 and torch.equal(labels, y)
    assert model.seen_training and not any(model.seen_training)  # eval mode during embedding
    assert model.training  # restored afterwards
    model.eval()
    with torch.no_grad():
        assert torch.allclose(emb, model(x), atol=1e-6)
    assert not emb.requires_grad
    out = retrieval_metrics(emb, labels, use_faiss=False)
    assert 0.0 <= out["R@1"] <= 1.0


def test_embed_dataset_dict_batches_and_amp():
    x, y = _data(10)
    model = _Net().eval()
    loader = DataLoader(_DictDataset(x, y), batch_size=4)
    emb, labels = embed_dataset(model, loader, torch.device("cpu"), progress=True)
    assert emb.shape == (10, 8) and torch.equal(labels, y)
    emb_amp, _ = embed_dataset(model, loader, "cpu", amp=True, progress=False)
    assert emb_amp.dtype == torch.float32
    assert torch.allclose(emb_amp, emb, atol=0.1)  # bfloat16 autocast on CPU
    assert not model.training


def test_embed_dataset_errors():
    model = _Net()
    with pytest.raises(ValueError, match="no batches"):
        embed_dataset(model, [], "cpu", progress=False)
    with pytest.raises(ValueError, match="keys"):
        embed_dataset(model, [{"foo": torch.zeros(2, 3, 4, 4)}], "cpu", progress=False)
    with pytest.raises(ValueError, match="tuple/list"):
        embed_dataset(model, [torch.zeros(2, 3, 4, 4)], "cpu", progress=False)
    assert model.training  # restored even after an error
