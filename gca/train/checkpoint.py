"""Checkpoints: written atomically, read as data only, checked before use.

A checkpoint is a ``torch.save`` file holding plain tensors, numbers, strings, ``None``, lists, tuples and
dicts (the config as a dict, RNG states as tensors), so it loads with ``torch.load(weights_only=True)``:
a file that needs anything else to unpickle (a class, a function, ``os.system``) is refused before any of
it runs. ``gca.io.atomic_save`` makes a power cut leave either the old file or the new one, never half of one.
"""
from __future__ import annotations

import dataclasses
import pickle
import re
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import torch

from gca.train.config import RunConfig

# config keys that may differ between a checkpoint and the run that resumes it: where files go, how long
# to train, how often to log and evaluate; everything else shapes the models or the optimisation
RESUMABLE_CHANGES = ("name", "output_dir", "device", "plots", "log_every_steps", "checkpoint_every_steps",
                     "solver.epochs", "solver.max_steps", "solver.nonfinite", "solver.max_nonfinite_in_row",
                     "data.root", "data.cache_dir", "data.num_workers", "eval.", "gca.compile")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, unsafe, incomplete or from another config."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, cut at ``limit`` characters: torch's are many lines long."""
    return str(exc).strip().split("\n")[0][:limit]


def load_checkpoint(path, *, map_location="cpu", required: Iterable[str] = ("config", "model")) -> Dict[str, Any]:
    """Read a checkpoint as data (``weights_only=True``) and check that it holds the ``required`` keys.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: ``path`` is a folder, empty, truncated, not a PyTorch file, needs code to unpickle
            (a crafted or foreign file), or lacks a required key.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; expected a .pt file such as last.pt or best.pt")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = " ".join(str(exc).split())
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:       # a pickle that names a class or function to call: crafted, or written by other code
            raise CheckpointError(
                f"checkpoint {path} holds a {found.group(1)} object, not only tensors, numbers, strings, lists and "
                f"dicts; refusing to unpickle it, as that could run code") from None
        detail = re.search(r"Unsupported \w+ \S+", text)
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch checkpoint (garbage or corrupt"
                              f"{': ' + detail.group(0) if detail else ''})") from None
    except Exception as exc:        # zip reader, EOF, pickle framing: all mean "not a usable file"
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch checkpoint (truncated or corrupt? "
                              f"{type(exc).__name__}: {first_line(exc, 160)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a gca checkpoint dict")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a gca checkpoint: it has no {missing[0]!r} entry "
                              f"(keys: {', '.join(sorted(map(str, state))[:8])})")
    return state


def _flatten(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and not key.endswith("kwargs"):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_difference(saved: Dict[str, Any], current: Dict[str, Any]) -> Optional[str]:
    """The first config key whose value differs in a way that makes a checkpoint unusable, described."""
    # a key that a checkpoint of an older version lacks had its default value there
    defaults = _flatten(dataclasses.asdict(RunConfig()))
    a, b = _flatten(saved), _flatten(current)
    for key in sorted(set(a) | set(b)):
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_CHANGES):
            continue
        there, here = a.get(key, defaults.get(key, "<absent>")), b.get(key, "<absent>")
        if there != here:
            return f"{key} is {there!r} there and {here!r} here"
    return None
