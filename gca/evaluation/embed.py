"""Compute embeddings for a whole dataset with a trained model."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Iterable, Mapping, Optional, Tuple, Union

import torch
from torch import nn

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is a declared dependency
    tqdm = None

__all__ = ["embed_dataset"]

_IMAGE_KEYS = ("image", "images", "img", "x", "input", "inputs")
_LABEL_KEYS = ("label", "labels", "target", "targets", "y")


def _split_batch(batch: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """Extract ``(images, labels)`` from a batch (tuple/list or mapping)."""
    if isinstance(batch, Mapping):
        img = next((batch[k] for k in _IMAGE_KEYS if k in batch), None)
        lab = next((batch[k] for k in _LABEL_KEYS if k in batch), None)
        if img is None or lab is None:
            raise ValueError(
                f"cannot find images/labels in a batch dict with keys {sorted(batch)}; expected one of "
                f"{_IMAGE_KEYS} and one of {_LABEL_KEYS}"
            )
        return img, lab
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(
        "each batch must be a (images, labels, ...) tuple/list or a dict with image and label keys, "
        f"got {type(batch).__name__}"
    )


def embed_dataset(
    model: nn.Module,
    loader: Iterable,
    device: Union[str, torch.device],
    amp: bool = False,
    progress: bool = True,
    desc: str = "embedding",
    amp_dtype: Optional[torch.dtype] = None,
    keep_on_device: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Embed every sample yielded by ``loader``.

    The model is put in eval mode and run under :func:`torch.no_grad`; its previous
    train/eval mode is restored afterwards.

    Args:
        model: maps an image batch ``[B, C, H, W]`` to embeddings ``[B, D]``.
        loader: iterable of batches, each ``(images, labels, ...)`` or a dict with an
            image key (``image``/``images``/``img``/...) and a label key
            (``label``/``labels``/``target``/...).
        device: device to run the model on (the model is *not* moved; move it first).
        amp: run the forward pass under :func:`torch.autocast` (float16 on CUDA,
            bfloat16 on CPU). Embeddings are returned in float32 either way.
        progress: show a tqdm progress bar.
        desc: progress bar description.
        amp_dtype: the autocast dtype when ``amp`` (default: float16 on CUDA, bfloat16 on CPU).
        keep_on_device: return the tensors on ``device`` (for metrics computed there) instead of the CPU.

    Returns:
        ``(embeddings, labels)``: a float32 ``[N, D]`` tensor and an int64 ``[N]``
        tensor, on the CPU (or ``device`` with ``keep_on_device``), in loader order.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    embs, labs = [], []
    iterator = loader
    if progress and tqdm is not None:
        total = len(loader) if hasattr(loader, "__len__") else None
        iterator = tqdm(loader, desc=desc, total=total, leave=False)
    if amp:
        amp_dtype = amp_dtype or (torch.float16 if device.type == "cuda" else torch.bfloat16)
        autocast = torch.autocast(device_type=device.type, dtype=amp_dtype)
    else:
        autocast = nullcontext()
    try:
        with torch.no_grad():
            for batch in iterator:
                images, labels = _split_batch(batch)
                images = images.to(device, non_blocking=True)
                with autocast:
                    out = model(images)
                if not isinstance(out, torch.Tensor) or out.dim() != 2:
                    raise ValueError(
                        "model must return a [batch, dim] tensor, got "
                        f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
                    )
                embs.append(out.float().cpu())
                labs.append(torch.as_tensor(labels).reshape(-1).to("cpu", torch.int64))
    finally:
        model.train(was_training)
    if not embs:
        raise ValueError("loader yielded no batches")
    out_device = device if keep_on_device else torch.device("cpu")
    return torch.cat(embs).to(out_device), torch.cat(labs).to(out_device)
