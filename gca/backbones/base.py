"""Base class shared by all registered backbones."""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["Backbone", "IMAGENET_MEAN", "IMAGENET_STD"]

# ITU-R 601-2 luma, the weights of PIL's convert("L")
_LUMA = (0.299, 0.587, 0.114)

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

_TRANSFORM_KINDS = ("imagenet", "omniglot")


class Backbone(nn.Module):
    """An image feature extractor: ``[N, C, H, W] -> [N, num_features]``.

    Attributes:
        num_features: dimension of the output feature vector.
        default_transform: which input pipeline the backbone expects, ``"imagenet"``
            (RGB, normalised with :attr:`input_mean` / :attr:`input_std`) or
            ``"omniglot"`` (single-channel character images).
        input_mean, input_std: per-channel normalisation the (pretrained) weights
            expect, or ``None`` when the backbone prescribes none.
        in_channels: channels of the images the backbone takes (3 for RGB, 1 for
            grayscale); pass it as ``build_transforms(..., channels=in_channels)``. A
            batch with 1 channel where 3 are expected (or 3 where 1) is converted in
            :meth:`match_channels` (grey repeated, or ITU-R 601-2 luma), so grayscale
            and colour image folders both just work.
        weights_source: human-readable origin of the current weights (``"random"``,
            ``"file:<path>"``, a URL, ...), useful for logging.
        bn_freeze: when ``True`` every BatchNorm layer of the backbone stays in eval
            mode (running statistics are not updated) even after :meth:`train`.

    Subclasses call :meth:`set_bn_freeze` at the end of ``__init__``. They may set
    :attr:`native_prefix` / :attr:`native_discard_prefixes` so that state dicts in the
    wrapped library's own format (e.g. an official torchvision ``.pth``) can be loaded
    with ``weights=PATH`` (see :meth:`remap_state_dict`).
    """

    #: Prefix under which the wrapped third-party model lives in this module's state dict.
    native_prefix: str = ""
    #: Keys (prefixes) of a native checkpoint that are dropped, e.g. a classifier head.
    native_discard_prefixes: Tuple[str, ...] = ()

    def __init__(
        self,
        num_features: int,
        default_transform: str,
        input_mean: Optional[Sequence[float]] = None,
        input_std: Optional[Sequence[float]] = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        if default_transform not in _TRANSFORM_KINDS:
            raise ValueError(f"default_transform must be one of {_TRANSFORM_KINDS}, got {default_transform!r}")
        self.num_features = int(num_features)
        self.default_transform = default_transform
        self.input_mean = tuple(input_mean) if input_mean is not None else None
        self.input_std = tuple(input_std) if input_std is not None else None
        self.weights_source = "random"
        self.bn_freeze = False
        self.bn_freeze_affine = False
        self._always_frozen: Tuple[str, ...] = ()

    # ------------------------------------------------------------------ input channels

    def match_channels(self, x: torch.Tensor) -> torch.Tensor:
        """Bring an image batch ``[N, C, H, W]`` to :attr:`in_channels` channels.

        Grey (``C = 1``) is repeated for an RGB backbone, RGB (``C = 3``) becomes its luma for a grayscale
        one; any other mismatch is a ``ValueError`` naming both channel counts.
        """
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} takes image batches [N, C, H, W], got shape {tuple(x.shape)}")
        channels = x.shape[1]
        if channels == self.in_channels:
            return x
        if channels == 1 and self.in_channels == 3:
            return x.expand(-1, 3, -1, -1)
        if channels == 3 and self.in_channels == 1:
            luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            return (x * luma).sum(dim=1, keepdim=True)
        raise ValueError(
            f"{type(self).__name__} takes {self.in_channels}-channel images [N, {self.in_channels}, H, W], got "
            f"{channels} channels (shape {tuple(x.shape)}); build the transform with channels={self.in_channels}"
        )

    # ------------------------------------------------------------------ batch norm freezing

    def _batchnorms(self):
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def set_bn_freeze(self, enabled: bool, freeze_affine: bool = True) -> "Backbone":
        """Enable/disable BatchNorm freezing for this backbone.

        Args:
            enabled: keep every BatchNorm layer in eval mode, also in ``train()``, so
                the running mean/variance are neither used from the batch nor updated.
            freeze_affine: additionally set ``requires_grad=False`` on the BatchNorm
                weight and bias (the Proxy-Anchor/GCA-HNG convention). Ignored when
                ``enabled`` is ``False``; disabling restores ``requires_grad=True``
                on those parameters.
        """
        previously_frozen = set(self._always_frozen)
        self.bn_freeze = bool(enabled)
        self.bn_freeze_affine = bool(enabled and freeze_affine)
        frozen = []
        for mod_name, m in self.named_modules():
            if not isinstance(m, nn.modules.batchnorm._BatchNorm):
                continue
            for p_name, p in m.named_parameters(recurse=False):
                full = f"{mod_name}.{p_name}" if mod_name else p_name
                if self.bn_freeze_affine:
                    p.requires_grad_(False)
                    frozen.append(full)
                elif full in previously_frozen:
                    p.requires_grad_(True)
        self._always_frozen = tuple(frozen)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> "Backbone":
        """Set train/eval mode; BatchNorm layers stay in eval mode when ``bn_freeze``."""
        super().train(mode)
        if self.bn_freeze:
            for m in self._batchnorms():
                m.eval()
        return self

    @property
    def always_frozen_parameters(self) -> Tuple[str, ...]:
        """Names of parameters that must stay frozen (BatchNorm affine under bn_freeze)."""
        return self._always_frozen

    # ------------------------------------------------------------------ weights

    def remap_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Convert a checkpoint to this module's key names before strict loading.

        A state dict saved from this module is returned unchanged. If the module wraps a
        third-party model under :attr:`native_prefix` and no key carries that prefix, the
        checkpoint is treated as the third-party model's own state dict: keys starting
        with :attr:`native_discard_prefixes` (e.g. a classifier) are dropped and the
        prefix is added to the others.
        """
        sd = dict(state_dict)
        prefix = self.native_prefix
        if prefix and sd and not any(k.startswith(prefix) for k in sd):
            sd = {
                prefix + k: v
                for k, v in sd.items()
                if not (self.native_discard_prefixes and k.startswith(self.native_discard_prefixes))
            }
        return sd

    def extra_repr(self) -> str:
        return (
            f"num_features={self.num_features}, default_transform={self.default_transform!r}, "
            f"bn_freeze={self.bn_freeze}, weights={self.weights_source!r}"
        )
