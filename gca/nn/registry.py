"""Registry of propagation layer types, in the style of timm's ``create_model``.

A layer type is a builder ``fn(channels, heads, dropout, **kwargs) -> nn.Module`` whose module is called
as ``block(x, edge_index, edge_attr, same_class)`` and returns ``(x, edge_attr)``. Register your own with::

    from gca.nn import register_layer, PyGConvBlock
    from torch_geometric.nn import GATConv

    @register_layer("gat")
    def gat(channels, heads, dropout, **kwargs):
        conv = GATConv(channels, channels // heads, heads=heads, edge_dim=channels, add_self_loops=False)
        return PyGConvBlock(conv, channels, dropout, **kwargs)
"""
from __future__ import annotations

from typing import Callable, Dict, List

from torch import nn
from torch_geometric.nn import MLP, GATv2Conv, GENConv, GINEConv, TransformerConv

from gca._checks import check_dropout, check_int
from gca.nn.blocks import GCABlock, PyGConvBlock

LayerBuilder = Callable[..., nn.Module]
_LAYERS: Dict[str, LayerBuilder] = {}


def register_layer(name: str, builder: LayerBuilder = None, *, overwrite: bool = False):
    """Register ``builder`` under ``name``; usable as a decorator (``@register_layer("name")``)."""
    def _register(fn: LayerBuilder) -> LayerBuilder:
        if not callable(fn):
            raise TypeError(f"a layer builder must be callable, got {type(fn).__name__}")
        if name in _LAYERS and not overwrite:
            raise ValueError(f"layer type {name!r} is already registered; pass overwrite=True to replace it")
        _LAYERS[name] = fn
        return fn
    return _register(builder) if builder is not None else _register


def list_layers() -> List[str]:
    """Names of every registered layer type, sorted."""
    return sorted(_LAYERS)


def create_layer(name: str, channels: int, heads: int = 4, dropout: float = 0.1, **kwargs) -> nn.Module:
    """Build one propagation block of type ``name`` (see :func:`list_layers`).

    Raises:
        ValueError: an unknown ``name``, ``channels`` not divisible by ``heads``, a dropout outside ``[0, 1)``.
        TypeError: ``channels`` or ``heads`` not an integer.
    """
    if not isinstance(name, str) or name not in _LAYERS:
        raise ValueError(f"unknown layer type {name!r}; registered: {', '.join(list_layers())}")
    check_layer_args(channels, heads, dropout)
    return _LAYERS[name](channels, heads, dropout, **kwargs)


def check_layer_args(channels: int, heads: int, dropout: float) -> None:
    """The arguments every layer builder gets, checked before any builder runs."""
    check_int("channels", channels, 1)
    check_int("heads", heads, 1)
    if channels % heads != 0:
        raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
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
