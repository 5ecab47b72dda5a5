"""gca-hng: Globally Correlation-Aware Hard Negative Generation for deep metric learning, on PyG."""
import warnings

with warnings.catch_warnings():
    # torch_geometric's import calls torch.jit.script, which torch 2.14 marks deprecated
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    import torch_geometric  # noqa: F401

from gca.generator import GCAGenerator, Generation
from gca.graph import build_batch_graph, channel_correlation
from gca.model import GCAHNG
from gca.nn import LAYERS, GraphPropagation, create_layer, list_layers, register_layer
from gca.objective import MetricLossObjective, Objective
from gca.registry import Registry, UnknownNameError
from gca.synthesis import Synthetics, synthesize_negatives

__version__ = "0.1.0"

__all__ = ["build_batch_graph", "channel_correlation", "GCAHNG", "GCAGenerator", "Generation", "GraphPropagation",
           "Objective", "MetricLossObjective",
           "LAYERS", "create_layer", "list_layers", "register_layer", "Registry", "UnknownNameError", "Synthetics",
           "synthesize_negatives"]
