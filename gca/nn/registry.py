"""Registry of propagation layer types (:data:`LAYERS`), in the style of timm's ``create_model``.

A layer type is a builder ``fn(channels, heads, dropout, **kwargs) -> nn.Module`` whose module is called
as ``block(x, edge_index, edge_attr, same_class)`` and returns ``(x, edge_attr)``. Register your own with::

    from gca.nn import register_layer, PyGConvBlock
    from torch_geometric.nn import GATConv

    @register_layer("gat")
    def gat(channels, heads, dropout, **kwargs):
        conv = GATConv(channels, channels // heads, heads=heads, edge_dim=channels, add_self_loops=False)
        return PyGConvBlock(conv, channels, dropout, **kwargs)

``LAYERS`` is a :class:`gca.registry.Registry`; ``register_layer``, ``list_layers`` are its ``register`` and
``list`` methods.
"""
from __future__ import annotations

from typing import Callable

from torch import nn
from torch_geometric.nn import MLP, GATv2Conv, GENConv, GINEConv, TransformerConv

from gca._checks import check_dropout, check_heads_divide, check_int
from gca.nn.blocks import GCABlock, PyGConvBlock
from gca.registry import Registry

__all__ = ["LAYERS", "LayerBuilder", "register_layer", "list_layers", "create_layer", "check_layer_args"]

LayerBuilder = Callable[..., nn.Module]

#: Layer type name -> builder ``fn(channels, heads, dropout, **kwargs) -> nn.Module``.
LAYERS = Registry("layer type")

#: ``register_layer("name", fn)`` or ``@register_layer("name", overwrite=False)``.
register_layer = LAYERS.register

#: ``list_layers(filter=None)``: registered layer types, sorted (``filter``: a wildcard such as ``"g*"``).
list_layers = LAYERS.list


def create_layer(name: str, channels: int, heads: int = 4, dropout: float = 0.1, **kwargs) -> nn.Module:
    """Build one propagation block of type ``name`` (see :func:`list_layers`).

    Raises:
        gca.registry.UnknownNameError: an unknown ``name`` (a ``ValueError``).
        ValueError: ``channels`` not divisible by ``heads``, a dropout outside ``[0, 1)``.
        TypeError: ``channels`` or ``heads`` not an integer.
    """
    builder = LAYERS.get(name)
    check_layer_args(channels, heads, dropout)
    return builder(channels, heads, dropout, **kwargs)


def check_layer_args(channels: int, heads: int, dropout: float) -> None:
    """The arguments every layer builder gets, checked before any builder runs."""
    check_int("channels", channels, 1)
    check_int("heads", heads, 1)
    check_heads_divide(channels, heads)
    check_dropout("dropout", dropout)


@register_layer("gca")
def _gca(channels, heads, dropout, **kwargs):
    return GCABlock(channels, heads, dropout, **kwargs)


@register_layer("gatv2")
def _gatv2(channels, heads, dropout, message_edges="negative", **kwargs):
    conv = GATv2Conv(channels, channels // heads, heads=heads, edge_dim=channels, add_self_loops=False, **kwargs)
    return PyGConvBlock(conv, channels, dropout, message_edges)


@register_layer("transformer")
def _transformer(channels, heads, dropout, message_edges="negative", **kwargs):
    conv = TransformerConv(channels, channels // heads, heads=heads, edge_dim=channels, **kwargs)
    return PyGConvBlock(conv, channels, dropout, message_edges)


@register_layer("gine")
def _gine(channels, heads, dropout, message_edges="negative", **kwargs):
    mlp = MLP([channels, 2 * channels, channels], norm=None)
    conv = GINEConv(mlp, train_eps=True, edge_dim=channels, **kwargs)
    return PyGConvBlock(conv, channels, dropout, message_edges)


@register_layer("gen")
def _gen(channels, heads, dropout, message_edges="negative", **kwargs):
    conv = GENConv(channels, channels, aggr="softmax", learn_t=True, edge_dim=channels, **kwargs)
    return PyGConvBlock(conv, channels, dropout, message_edges)
