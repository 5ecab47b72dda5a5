"""Strict weight loading for backbones: read a state dict from a file, check it, load it.

:func:`read_state_dict` reads ``.pth``/``.pt``/``.bin`` files with ``torch.load(weights_only=True)`` (no
arbitrary unpickling) and ``.safetensors`` files with :mod:`safetensors`; :func:`load_state_dict_strict`
requires exactly matching keys and shapes; :func:`load_backbone_weights` chains the two through a
backbone's ``remap_state_dict``. :func:`gca.backbones.create_backbone` calls the latter for ``weights=PATH``.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any, Dict, List, Mapping, Union

import torch
from torch import nn

__all__ = ["PathLike", "read_state_dict", "load_state_dict_strict", "load_backbone_weights"]

PathLike = Union[str, "os.PathLike[str]"]

_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read a state dict from ``path`` onto the CPU.

    ``.safetensors`` files are read with :mod:`safetensors`; anything else with
    ``torch.load(..., weights_only=True)``. A checkpoint that wraps the state dict under
    ``"state_dict"``, ``"model_state_dict"``, ``"model"``, ``"module"`` or ``"net"`` is
    unwrapped, and a ``"module."`` prefix on every key (DataParallel) is stripped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r}")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError(
                f"reading {path!r} requires the 'safetensors' package (pip install safetensors)"
            ) from e
        try:
            obj: Any = load_file(path, device="cpu")
        except Exception as e:
            raise ValueError(f"could not read safetensors file {path!r}: {e}") from e
    else:
        if os.path.getsize(path) == 0:
            raise ValueError(f"weights file {path!r} is empty (0 bytes)")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            # torch's message spans many lines; keep the part that says what was refused
            text = " ".join(str(e).split())
            found = re.search(r"GLOBAL ([\w.]+)", text)
            if found:
                raise ValueError(
                    f"could not read weights file {path!r}: it holds a {found.group(1)} object, not only tensors; "
                    f"torch.load(weights_only=True) refused it, as unpickling it could run code"
                ) from e
            detail = re.search(r"Unsupported \w+ \S+", text)
            raise ValueError(
                f"could not read weights file {path!r} (not a PyTorch file, or corrupt?"
                f"{' ' + detail.group(0) if detail else ''})"
            ) from e
        except Exception as e:  # zip reader, EOF, pickle framing: the file is truncated or not a torch file
            first = (str(e).strip().splitlines() or [""])[0]
            first = first.split(". This is an internal miniz error")[0][:160]
            raise ValueError(
                f"could not read weights file {path!r} (truncated or corrupt? {type(e).__name__}: {first})"
            ) from e
    for _ in range(3):  # unwrap nested containers such as {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"weights file {path!r} does not contain a (non-empty) state dict")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"weights file {path!r} is not a state dict of tensors (offending keys: {bad[:5]})"
        )
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _fmt(keys: List[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``model`` requiring exactly matching keys and shapes.

    Raises:
        ValueError: listing missing keys, unexpected keys and shape mismatches.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_fmt(mismatched, 3)}")
        raise ValueError(f"weights from {source} do not match {type(model).__name__}: {'; '.join(parts)} "
                         f"(is the file for this backbone / these options?)")
    model.load_state_dict(state_dict, strict=True)


def load_backbone_weights(model: nn.Module, path: PathLike) -> nn.Module:
    """Load a local weights file into a backbone with strict key matching.

    The checkpoint goes through :func:`read_state_dict` and then the backbone's
    ``remap_state_dict`` (if it defines one) before :func:`load_state_dict_strict`.
    """
    sd = read_state_dict(path)
    remap = getattr(model, "remap_state_dict", None)
    if callable(remap):
        sd = remap(sd)
    load_state_dict_strict(model, sd, source=repr(os.fspath(path)))
    if hasattr(model, "weights_source"):
        model.weights_source = f"file:{os.fspath(path)}"
    return model
