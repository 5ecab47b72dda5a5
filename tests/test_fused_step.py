"""The fused step (``GCAHNG.fused_losses``, ``train_step(fused=True)``) against its plain reference: the
two-pass phase losses evaluated on one generator state, with J_gce kept out of the embedding network."""
import copy

import pytest
import torch
from torch import nn

from gca import GCAHNG
from gca.losses import create_metric_loss
from gca.objective import MetricLossObjective
from gca.train.step import Optimisers, train_step

D, CLASSES, PER_CLASS = 16, 4, 3


def _setup(loss_name):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, D))
    objective = GCAHNG(D, CLASSES, num_layers=2, heads=2, dropout=0.0,
                       metric_loss=create_metric_loss(loss_name, CLASSES, D)).train()
    x = torch.randn(CLASSES * PER_CLASS, 8)
    y = torch.arange(CLASSES).repeat(PER_CLASS)
    return net, objective, x, y


def _grads(params):
    return [None if p.grad is None else p.grad.clone() for p in params]


def _loss_params(objective):
    return list(objective.metric_loss.parameters()) if isinstance(objective.metric_loss, nn.Module) else []


@pytest.mark.parametrize("loss_name", ["npair", "proxy_anchor", "multi_similarity"])
def test_fused_gradients_equal_the_phase_losses_on_one_generator_state(loss_name):
    net, objective, x, y = _setup(loss_name)
    net_ref, objective_ref = copy.deepcopy(net), copy.deepcopy(objective)

    # the synthesis draws its mixing weights: the same seed before each sequence of draws (A's, then C's)
    torch.manual_seed(1)
    parts, g = objective.fused_losses(net(x), y)
    (parts["total"] + g["total"]).backward()

    # reference, embedding network and proxies: phase A's J_m + w_syn J_syn (J_gce left out)
    metric_ref = copy.deepcopy(objective_ref)
    metric_ref.node_loss_weight = 0.0
    torch.manual_seed(1)
    ref_parts = metric_ref.metric_losses(net_ref(x), y)
    ref_net = torch.autograd.grad(ref_parts["total"], list(net_ref.parameters()) + _loss_params(metric_ref),
                                  allow_unused=True)
    # reference, GNN: J_gce of phase A plus J_gen of phase C, from the same weights (no step in between)
    gnn_ref = copy.deepcopy(objective_ref)
    z_detached = net_ref(x).detach()
    torch.manual_seed(1)
    j_gce = gnn_ref.metric_losses(z_detached, y)["node"]
    j_gen = gnn_ref.generator_losses(z_detached, y)["total"]
    gnn_params = list(gnn_ref.generator_parameters())
    ref_gnn = torch.autograd.grad(gnn_ref.node_loss_weight * j_gce + j_gen, gnn_params, allow_unused=True)

    assert parts["metric"].item() == pytest.approx(ref_parts["metric"].item(), rel=1e-6)
    assert parts["synthetic"].item() == pytest.approx(ref_parts["synthetic"].item(), rel=1e-6)
    assert g["total"].item() == pytest.approx(j_gen.item(), rel=1e-6)
    for got, want in zip(_grads(list(net.parameters()) + _loss_params(objective)), ref_net):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    got_gnn = _grads(list(objective.generator_parameters()))
    assert sum(w is not None for w in ref_gnn) == len(gnn_params)      # every GNN parameter is trained
    for got, want in zip(got_gnn, ref_gnn):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_fused_keeps_the_node_loss_and_the_generator_losses_out_of_the_embeddings():
    net, objective, x, y = _setup("npair")
    two_pass = copy.deepcopy(objective)
    z = net(x)
    torch.manual_seed(1)
    parts, g = objective.fused_losses(z, y)
    grad_fused = torch.autograd.grad(parts["total"] + g["total"], z)[0]
    # the two-pass phase A sends J_gce through the GNN into z: a different gradient
    z2 = z.detach().requires_grad_()
    grad_two_pass = torch.autograd.grad(two_pass.metric_losses(z2, y)["total"], z2)[0]
    assert not torch.allclose(grad_fused, grad_two_pass, atol=1e-6)
    # ... while the fused gradient is exactly that of J_m + w_syn J_syn
    z3 = z.detach().requires_grad_()
    no_node = copy.deepcopy(two_pass)
    no_node.node_loss_weight = 0.0
    torch.manual_seed(1)
    grad_without_node = torch.autograd.grad(no_node.metric_losses(z3, y)["total"], z3)[0]
    torch.testing.assert_close(grad_fused, grad_without_node, rtol=1e-5, atol=1e-7)


def test_fused_train_step_steps_each_optimiser_once_classifier_first():
    net, objective, x, y = _setup("proxy_anchor")
    optimisers = Optimisers(metric=torch.optim.SGD(list(net.parameters()) + _loss_params(objective), lr=0.1),
                            generator=torch.optim.SGD(objective.generator_parameters(), lr=0.1),
                            classifier=torch.optim.SGD(objective.classifier_parameters(), lr=0.1))
    order = []
    for name in ("metric", "generator", "classifier"):
        opt = getattr(optimisers, name)
        original = opt.step
        opt.step = lambda *a, _o=original, _n=name, **k: (order.append(_n), _o(*a, **k))[1]
    classifier_before = objective.classifier.weight.detach().clone()
    # the classifier's phase-B loss on the batch before the step
    expected_classifier = objective.classifier_loss(net(x), y).item()
    logs = train_step(net, objective, x, y, optimisers, fused=True)
    assert order == ["classifier", "metric", "generator"]
    assert logs["classifier"] == pytest.approx(expected_classifier, rel=1e-6)
    assert not torch.equal(objective.classifier.weight, classifier_before)
    assert {"metric", "synthetic", "node", "generator", "gen_label", "total"} <= set(logs)


def test_fused_step_refuses_an_objective_without_a_generator():
    net = nn.Linear(8, D)
    objective = MetricLossObjective(create_metric_loss("npair", CLASSES, D))
    optimisers = Optimisers(metric=torch.optim.SGD(net.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="the fused step needs an objective that trains a generator"):
        train_step(net, objective, torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2]), optimisers, fused=True)
