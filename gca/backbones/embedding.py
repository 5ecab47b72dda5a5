"""Embedding model = backbone -> BatchNorm1d -> Linear (-> optional L2 normalisation)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from gca.backbones.registry import PathLike, create_backbone

__all__ = ["EmbeddingModel", "create_embedding_model"]

_HEAD_INITS = ("orthogonal", "kaiming", "default")


class EmbeddingModel(nn.Module):
    """Maps images to ``embedding_dim``-d embeddings with a backbone and a linear head.

    ``backbone -> BatchNorm1d(num_features) -> Linear(num_features, embedding_dim)``,
    optionally followed by L2 normalisation.

    The head lives in :attr:`head` (``head.bn``, ``head.fc``) so it can get its own
    learning rate (:meth:`head_parameters` / :meth:`backbone_parameters`) and the
    backbone can be frozen during warm-up (:meth:`set_backbone_trainable`).

    Args:
        backbone: module returning ``[N, num_features]`` with a ``num_features`` attribute.
        embedding_dim: output dimension.
        normalize: L2-normalise the output embeddings.
        head_bn: put a BatchNorm1d before the linear layer (default ``True``).
        head_init: ``"orthogonal"`` (orthogonal weight, zero bias; default),
            ``"kaiming"`` (Kaiming-normal fan-out, zero bias, as in Proxy-Anchor) or
            ``"default"`` (PyTorch's default Linear init).
    """

    def __init__(
        self,
        backbone: nn.Module,
        embedding_dim: int,
        normalize: bool = False,
        head_bn: bool = True,
        head_init: str = "orthogonal",
    ) -> None:
        super().__init__()
        num_features = getattr(backbone, "num_features", None)
        if not isinstance(num_features, int) or num_features < 1:
            raise TypeError("backbone must have a positive integer attribute `num_features`")
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be a positive int, got {embedding_dim!r}")
        if head_init not in _HEAD_INITS:
            raise ValueError(f"head_init must be one of {_HEAD_INITS}, got {head_init!r}")
        self.backbone = backbone
        self.num_features = num_features
        self.embedding_dim = embedding_dim
        self.normalize = bool(normalize)
        self.head = nn.Sequential(
            OrderedDict(
                bn=nn.BatchNorm1d(num_features) if head_bn else nn.Identity(),
                fc=nn.Linear(num_features, embedding_dim),
            )
        )
        fc = self.head.fc
        if head_init == "orthogonal":
            nn.init.orthogonal_(fc.weight)
            nn.init.zeros_(fc.bias)
        elif head_init == "kaiming":
            nn.init.kaiming_normal_(fc.weight, mode="fan_out")
            nn.init.zeros_(fc.bias)

    @property
    def default_transform(self) -> Optional[str]:
        """The backbone's input pipeline kind (``"imagenet"`` / ``"omniglot"``)."""
        return getattr(self.backbone, "default_transform", None)

    @property
    def in_channels(self) -> Optional[int]:
        """Channels of the images the backbone takes (``None`` when it does not say)."""
        return getattr(self.backbone, "in_channels", None)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[N, num_features]`` (before the head)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[N, embedding_dim]`` (L2-normalised when ``normalize``)."""
        emb = self.head(self.backbone(x))
        return F.normalize(emb, p=2, dim=1) if self.normalize else emb

    def head_parameters(self) -> List[nn.Parameter]:
        """Parameters of the embedding head (BatchNorm1d + Linear)."""
        return list(self.head.parameters())

    def backbone_parameters(self) -> List[nn.Parameter]:
        """Parameters of the backbone (including any frozen by ``bn_freeze``)."""
        return list(self.backbone.parameters())

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze (``False``) or unfreeze (``True``) the backbone, e.g. for head warm-up.

        Parameters the backbone keeps frozen permanently (BatchNorm affine under
        ``bn_freeze``) stay frozen when unfreezing.
        """
        keep_frozen = set(getattr(self.backbone, "always_frozen_parameters", ()))
        for name, p in self.backbone.named_parameters():
            p.requires_grad_(bool(trainable) and name not in keep_frozen)


def create_embedding_model(
    backbone_name: str,
    embedding_dim: int,
    pretrained: bool = False,
    weights: Optional[PathLike] = None,
    normalize: bool = False,
    head_bn: bool = True,
    head_init: str = "orthogonal",
    **backbone_kwargs: Any,
) -> EmbeddingModel:
    """Build ``EmbeddingModel(create_backbone(backbone_name, pretrained, weights, **backbone_kwargs), ...)``.

    ``weights`` is a backbone state-dict file (see :func:`create_backbone`); to restore
    a whole trained :class:`EmbeddingModel`, use ``model.load_state_dict`` instead.
    """
    backbone = create_backbone(backbone_name, pretrained=pretrained, weights=weights, **backbone_kwargs)
    return EmbeddingModel(backbone, embedding_dim, normalize=normalize, head_bn=head_bn, head_init=head_init)
