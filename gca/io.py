"""Writing files so that a kill or a power cut never leaves half of one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` the way :func:`atomic_save` writes a checkpoint (same folder, fsync, rename)."""
    _atomic_write(Path(path), lambda fh: fh.write(text.encode()))


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path``: either the old file or the whole new one survives any interruption.

    The data go to a temporary file in the same folder, which is flushed to disk before it is renamed over
    ``path``; the folder is synced after the rename so that the new name itself is on disk.
    """
    _atomic_write(Path(path), lambda fh: torch.save(obj, fh))


def _atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
