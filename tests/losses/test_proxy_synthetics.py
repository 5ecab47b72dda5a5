"""Synthetic negatives in proxy losses: the gradient must make them hard negatives of the anchor's class."""
import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import MultiSimilarityLoss, ProxyAnchorLoss

import gca
from gca.graph import full_edge_index
from gca.losses import NPairLoss, anchor_proxy_loss, synthetic_metric_loss
from gca.synthesis import synthesize_negatives


def _trained_state(seed, classes=12, per_class=3, dim=32):
    """Embeddings clustered around their class proxies, as after some training."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    y = torch.arange(classes).repeat(per_class)
    z = (centres[y] + 0.35 * torch.randn(len(y), dim, generator=g)).requires_grad_()
    loss = ProxyAnchorLoss(classes, dim)
    with torch.no_grad():
        loss.proxies.copy_(centres)
    edge_index = full_edge_index(len(y), self_loops=True)
    lam = torch.rand(edge_index.shape[1], dim, generator=g)
    return z, y, loss, edge_index, lam, g


def _own_proxy_cosine_change(mode, anchor_gradient, seed, gamma=0.5):
    """First-order change of each sample's cosine to its own proxy along -grad J_syn, counting only the
    gradient that reaches z through the synthetics (the real samples enter J_syn detached)."""
    z, y, loss, edge_index, lam, g = _trained_state(seed)
    syn = synthesize_negatives(z, y, edge_index, lam, gamma, generator=g, anchor_gradient=anchor_gradient)
    grad, = torch.autograd.grad(synthetic_metric_loss(loss, z.detach(), y, syn, mode), z)
    probe = z.detach().requires_grad_()
    dcos, = torch.autograd.grad(F.cosine_similarity(probe, loss.proxies[y].detach()).sum(), probe)
    return -(grad * dcos).sum(1)


@pytest.mark.parametrize("mode", ["embeddings", "anchor_proxy"])
@pytest.mark.parametrize("seed", range(4))
def test_routed_synthetics_move_samples_towards_their_own_proxy(mode, seed):
    change = _own_proxy_cosine_change(mode, anchor_gradient=False, seed=seed)
    assert change.mean() > 0


def test_unrouted_synthetics_pull_anchors_away_from_their_own_proxy():
    # the defect the routing fixes: with the anchor's share attached, most samples lose cosine to their proxy
    for mode in ("embeddings", "anchor_proxy"):
        changes = torch.cat([_own_proxy_cosine_change(mode, anchor_gradient=True, seed=s) for s in range(4)])
        assert (changes < 0).float().mean() > 0.5, mode
    changes = torch.cat([_own_proxy_cosine_change("anchor_proxy", anchor_gradient=True, seed=s) for s in range(4)])
    assert changes.mean() < 0


def test_negatives_only_routing_keeps_values_and_sends_no_gradient_to_anchors():
    z, y, _, edge_index, lam, _ = _trained_state(0)
    full = synthesize_negatives(z, y, edge_index, lam, 0.3, generator=torch.Generator().manual_seed(1))
    routed = synthesize_negatives(z, y, edge_index, lam, 0.3, generator=torch.Generator().manual_seed(1),
                                  anchor_gradient=False)
    assert torch.equal(full.embeddings, routed.embeddings)
    # one synthetic: its gradient reaches the samples of its negative class only, never its anchor
    row = 5
    grad, = torch.autograd.grad(routed.embeddings[row].sum(), z)
    touched = grad.abs().sum(1) > 0
    assert not touched[routed.anchor_index[row]]
    assert set(y[touched].tolist()) == {int(routed.labels[row])}
    grad_full, = torch.autograd.grad(full.embeddings[row].sum(), z)
    assert grad_full[full.anchor_index[row]].abs().sum() > 0


def test_anchor_proxy_loss_matches_a_loop():
    z, y, loss, edge_index, lam, g = _trained_state(1)
    syn = synthesize_negatives(z, y, edge_index, lam, 0.5, generator=g)
    value = anchor_proxy_loss(loss, y, syn)
    total = 0.0
    for c in range(loss.num_classes):
        rows = [s for s in range(len(syn)) if y[syn.anchor_index[s]] == c]
        terms = [math.exp(loss.alpha * (F.cosine_similarity(syn.embeddings[s], loss.proxies[c], dim=0).item()
                                        + loss.margin)) for s in rows]
        total += math.log(1 + sum(terms))
    assert value.item() == pytest.approx(total / loss.num_classes, rel=1e-5)


def test_auto_routing_per_loss():
    pa = ProxyAnchorLoss(8, 16)
    assert gca.GCAHNG(16, 8, metric_loss=pa).synthetic_gradient == "negatives"
    assert gca.GCAHNG(16, 8, metric_loss=pa, synthetic_loss_mode="anchor_proxy").synthetic_gradient == "negatives"
    assert gca.GCAHNG(16, 8, metric_loss=pa, synthetic_gradient="full").synthetic_gradient == "full"
    assert gca.GCAHNG(16, 8, metric_loss=NPairLoss()).synthetic_gradient == "full"
    assert gca.GCAHNG(16, 8, metric_loss=MultiSimilarityLoss()).synthetic_gradient == "full"
    with pytest.raises(ValueError, match="MultiSimilarityLoss cannot use synthetic_loss_mode='anchor_proxy'"):
        gca.GCAHNG(16, 8, metric_loss=MultiSimilarityLoss(), synthetic_loss_mode="anchor_proxy")
    with pytest.raises(ValueError, match="synthetic_gradient must be one of"):
        gca.GCAHNG(16, 8, synthetic_gradient="anchors")


def test_model_phase_a_follows_the_routing():
    torch.manual_seed(0)
    z, y = torch.randn(24, 16), torch.arange(8).repeat(3)
    grads = {}
    for routing in ("full", "negatives"):
        torch.manual_seed(3)
        model = gca.GCAHNG(16, 8, num_layers=1, dropout=0.0, metric_loss=ProxyAnchorLoss(8, 16),
                           synthetic_gradient=routing)
        torch.manual_seed(1)
        model.metric_loss.proxies.data.normal_()
        zz = z.clone().requires_grad_()
        out = model.metric_losses(zz, y, generator=torch.Generator().manual_seed(2))
        grads[routing], = torch.autograd.grad(out["synthetic"], zz)
        grads[routing, "value"] = out["synthetic"].item()
    assert grads["full", "value"] == grads["negatives", "value"]     # same synthetics, other gradient
    assert not torch.allclose(grads["full"], grads["negatives"])
