"""Propagation layers of GCA-HNG and the registry of swappable layer types."""
from gca.nn.blocks import GCABlock, PyGConvBlock
from gca.nn.functional import masked_edge_softmax
from gca.nn.gca_edge_conv import GCAEdgeConv
from gca.nn.gca_node_conv import GCANodeConv
from gca.nn.propagation import GraphPropagation
from gca.nn.registry import LAYERS, create_layer, list_layers, register_layer

__all__ = ["GCABlock", "PyGConvBlock", "GCAEdgeConv", "GCANodeConv", "GraphPropagation", "LAYERS", "create_layer",
           "list_layers", "register_layer", "masked_edge_softmax"]
