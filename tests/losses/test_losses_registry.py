"""Metric losses by name."""
import pytest

import gca


def test_metric_loss_by_name():
    from gca.losses import create_metric_loss, list_metric_losses
    assert {"npair", "proxy_anchor", "multi_similarity"} <= set(list_metric_losses())
    loss = create_metric_loss("proxy_anchor", num_classes=6, embedding_dim=16)
    model = gca.GCAHNG(16, 6, num_layers=1, metric_loss=loss)
    assert len(list(model.metric_loss_parameters())) == 1
    with pytest.raises(ValueError, match="unknown metric loss"):
        create_metric_loss("arcface2", 6, 16)
