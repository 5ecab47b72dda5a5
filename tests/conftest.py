import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GCA_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def class_major_batch(num_classes: int, per_class: int, dim: int, seed: int = 0):
    """Embeddings and labels, class-major (all samples of class 0 first)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return torch.randn(num_classes * per_class, dim, generator=gen), labels
