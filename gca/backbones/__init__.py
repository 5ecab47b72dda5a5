"""Backbone registry (timm style) and the embedding model used for metric learning.

Public API:

* :data:`BACKBONES` (a :class:`gca.registry.Registry`), :func:`list_backbones`, :func:`create_backbone`,
  :func:`register_backbone`
* :class:`Backbone` (base class: ``num_features``, ``default_transform``, ``bn_freeze``)
* :class:`EmbeddingModel`, :func:`create_embedding_model`
* :func:`load_backbone_weights`, :func:`read_state_dict`,
  :func:`convert_efficientnet_lite_state_dict` (weight files: :mod:`gca.backbones.weights`)

Registered backbones: ``omniglot_cnn``, ``resnet50``, ``googlenet``, ``dino_vits16``,
``efficientnet_lite0``.
"""

from gca.backbones.base import IMAGENET_MEAN, IMAGENET_STD, Backbone
from gca.backbones.embedding import EmbeddingModel, create_embedding_model
from gca.backbones.models import (
    EfficientNetLite0Backbone,
    GoogLeNetBackbone,
    OmniglotCNN,
    ResNet50Backbone,
    TimmBackbone,
    convert_efficientnet_lite_state_dict,
)
from gca.backbones.registry import BACKBONES, create_backbone, list_backbones, register_backbone
from gca.backbones.weights import load_backbone_weights, load_state_dict_strict, read_state_dict

__all__ = [
    "Backbone",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BACKBONES",
    "register_backbone",
    "list_backbones",
    "create_backbone",
    "read_state_dict",
    "load_state_dict_strict",
    "load_backbone_weights",
    "EmbeddingModel",
    "create_embedding_model",
    "OmniglotCNN",
    "ResNet50Backbone",
    "GoogLeNetBackbone",
    "TimmBackbone",
    "EfficientNetLite0Backbone",
    "convert_efficientnet_lite_state_dict",
]
