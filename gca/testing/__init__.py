"""Test references, kept apart from the library as PyG keeps its own in ``torch_geometric.testing``.

:mod:`gca.testing.dense` is a plain dense PyTorch version of the GCA layers on ``[N, N, D]`` edge tensors; the
tests and the cost benchmark compare the message-passing layers against it. Nothing in :mod:`gca` imports it.
"""
from gca.testing.dense import dense_correlation, dense_edge_update, dense_node_update, dense_propagation  # noqa: F401

__all__ = ["dense_correlation", "dense_edge_update", "dense_node_update", "dense_propagation"]
