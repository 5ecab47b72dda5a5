"""Propagation blocks: GCABlock builds its two layers from named arguments; PyGConvBlock wraps a PyG conv."""
import pytest
import torch
from torch_geometric.nn import GATv2Conv

import gca
from gca.nn import GCABlock, PyGConvBlock


def test_gca_block_passes_each_argument_to_its_layer():
    block = GCABlock(16, heads=2, dropout=0.3, attention_dropout=0.2, zero_logit=False, edge_aggr="mean",
                     ffn_ratio=2, fast=False)
    node, edge = block.node, block.edge
    assert (node.heads, node.dropout, node.zero_logit, node.edge_aggr, node.ffn_ratio) == (2, 0.2, False, "mean", 2)
    assert (edge.dropout, edge.ffn_ratio, edge.fast) == (0.3, 2, False)
    assert node.ffn_in.out_features == edge.ffn_in.out_features == 32


@pytest.mark.parametrize("block_fn", [
    lambda: GCABlock(16, heads=4, dropout=0.0),
    lambda: PyGConvBlock(GATv2Conv(16, 4, heads=4, edge_dim=16, add_self_loops=False), 16, dropout=0.0),
], ids=["gca", "pyg"])
def test_pairs_mode_equals_directed(block_fn):
    torch.manual_seed(0)
    z, y = torch.randn(8, 16, dtype=torch.float64), torch.arange(8) % 3
    g = gca.build_batch_graph(z, y)
    block = block_fn().double().eval()
    h, e = block(g.x, g.edge_index, g.edge_attr, g.same_class)
    pair_edge, edge_to_pair = gca.nn.propagation.symmetric_pairs(g.edge_index, 8)
    h2, e2 = block(g.x, g.edge_index, g.edge_attr[pair_edge], g.same_class,
                   pairs=(g.edge_index[:, pair_edge], edge_to_pair))
    torch.testing.assert_close(h2, h)
    torch.testing.assert_close(e2[edge_to_pair], e)


def test_pyg_block_refuses_unknown_message_edges():
    with pytest.raises(ValueError, match="message_edges must be one of"):
        PyGConvBlock(GATv2Conv(16, 16, edge_dim=16), 16, message_edges="positive")
