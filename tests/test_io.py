"""atomic_save: durable (fsync of the file and its folder) and all-or-nothing."""
import os

import pytest
import torch

from gca.io import atomic_save


def test_atomic_save_syncs_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_save({"a": torch.ones(2)}, path)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    atomic_save({"a": torch.zeros(2)}, path)
    assert len(synced) == 2                          # the file before the rename, the folder after it
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(2))

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"a": torch.full((2,), 7.0)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
