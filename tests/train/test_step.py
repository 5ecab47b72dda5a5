"""``train_step``: which optimiser moves which parameters, in which order, with which (clipped) gradients."""
import copy
import functools

import pytest
import torch

from gca.baselines import HDMLInterpolation
from gca.testing.runs import tiny_run_overrides
from gca.train import Trainer, load_config
from gca.train.step import train_step


def _trainer(tmp_path, *extra, name="run"):
    cfg = load_config(None, tiny_run_overrides(tmp_path, "solver.epochs=2", "device=cpu", f"name={name}", *extra))
    trainer = Trainer(cfg, progress=False)
    trainer.model.train()
    trainer.objective.train()
    return trainer


def _step(trainer, images, labels):
    """train_step with the trainer's own models, objective, optimisers and clip value."""
    return train_step(trainer.model, trainer.objective, images, labels, trainer.optimisers,
                      amp_autocast=trainer._autocast, clip_value=trainer.cfg.solver.grad_clip_value)


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(6, 1, 16, 16, generator=gen), torch.tensor([0, 0, 0, 1, 1, 1])


def _named_parameters(trainer):
    """Every parameter of the run once, by a readable name (the generator holds the metric loss too)."""
    named = {}
    for prefix, module in (("model.", trainer.model), ("loss.", trainer.metric_loss), ("gen.", trainer.objective)):
        for name, p in module.named_parameters():
            if all(p is not q for q in named.values()):
                named[prefix + name] = p
    return named


def _record_steps(trainer):
    """Wrap each optimiser's ``step``: per call, the optimiser's name, the parameters that changed during
    it, and a copy of every gradient it saw."""
    params = _named_parameters(trainer)
    calls = []

    def wrap(opt, tag):
        original = opt.step

        @functools.wraps(original)      # keeps the LR scheduler's mark on the wrapped step
        def step(*args, **kwargs):
            before = {n: p.detach().clone() for n, p in params.items()}
            grads = {n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None}
            out = original(*args, **kwargs)
            changed = {n for n, p in params.items() if not torch.equal(before[n], p.detach())}
            calls.append({"opt": tag, "changed": changed, "grads": grads})
            return out
        opt.step = step

    for tag in ("opt_metric", "opt_gnn", "opt_cls"):
        if getattr(trainer, tag) is not None:
            wrap(getattr(trainer, tag), tag)
    return params, calls


def _names(trainer, params):
    named = _named_parameters(trainer)
    ids = {id(p) for p in params}
    return {n for n, p in named.items() if id(p) in ids}


def _optimiser_steps(opt, p):
    return int(opt.state[p]["step"])


def test_gca_step_moves_each_parameter_set_with_its_own_optimiser(tmp_path):
    trainer = _trainer(tmp_path, "loss.metric=proxy_anchor")
    gen = trainer.objective
    params, calls = _record_steps(trainer)
    embedding = _names(trainer, [p for p in trainer.model.parameters() if p.requires_grad])
    proxies = _names(trainer, trainer.metric_loss.parameters())
    gnn = _names(trainer, gen.generator_parameters())
    lam_head = _names(trainer, gen.generator.lambda_head.parameters()) & gnn
    node_head = _names(trainer, gen.generator.node_head.parameters()) & gnn
    classifier = _names(trainer, gen.classifier_parameters())
    assert proxies and lam_head and node_head and len(classifier) == 2
    before = {n: p.detach().clone() for n, p in params.items()}

    logs = _step(trainer, *_batch())

    # the order of METHOD 2.6: embedding network, GNN (J_gce), classifier, GNN (J_gen)
    assert [c["opt"] for c in calls] == ["opt_metric", "opt_gnn", "opt_cls", "opt_gnn"]
    metric, gnn_a, cls, gnn_c = calls
    # phase A: the whole embedding network and the proxies, nothing of the generator; the classifier
    # has not even a gradient (J_m + J_syn + J_gce never reach it)
    assert metric["changed"] == embedding | proxies
    assert not classifier & set(metric["grads"])
    # the GNN's first step: J_gce through the node states; lambda is detached in phase A
    assert gnn_a["changed"] <= gnn
    assert node_head <= gnn_a["changed"] and "gen.generator.propagation.input_proj.weight" in gnn_a["changed"]
    assert not lam_head & gnn_a["changed"]
    # phase B: the classifier and nothing else
    assert cls["changed"] == classifier
    # phase C: J_gen trains lambda's head through the edges, never the node classifier
    assert gnn_c["changed"] <= gnn
    assert lam_head <= gnn_c["changed"] and "gen.generator.propagation.input_proj.weight" in gnn_c["changed"]
    assert not node_head & gnn_c["changed"]
    assert gnn_a["changed"] | gnn_c["changed"] == gnn
    # nothing moved outside these four steps
    moved = {n for n, p in params.items() if not torch.equal(before[n], p.detach())}
    assert moved == embedding | proxies | gnn | classifier
    # the optimisers' own counters: the GNN stepped twice on the parameters both phases reach
    input_proj = gen.generator.propagation.input_proj.weight
    assert _optimiser_steps(trainer.opt_gnn, input_proj) == 2
    assert _optimiser_steps(trainer.opt_gnn, gen.generator.node_head.linear.weight) == 1
    assert _optimiser_steps(trainer.opt_gnn, gen.generator.lambda_head.linear.weight) == 1
    assert _optimiser_steps(trainer.opt_cls, gen.classifier.weight) == 1
    assert all(_optimiser_steps(trainer.opt_metric, p) == 1 for p in trainer.model.head_parameters())
    assert {"metric", "synthetic", "node", "classifier", "generator", "total"} <= set(logs)
    assert logs["total"] == pytest.approx(logs["metric"] + logs["synthetic_weight"] * logs["synthetic"]
                                          + trainer.cfg.gca.node_loss_weight * logs["node"], rel=1e-5)


@pytest.mark.parametrize("extra", ["gca.enabled=false", "gca.generator=hdml"])
def test_baseline_and_hdml_step_only_the_embedding_network(tmp_path, extra):
    trainer = _trainer(tmp_path, extra)
    assert trainer.opt_gnn is None and trainer.opt_cls is None and trainer.sched_gnn is None
    params, calls = _record_steps(trainer)
    images, labels = _batch()
    reference_model = copy.deepcopy(trainer.model)
    with torch.no_grad():
        z0 = reference_model(images)                       # train mode: the same batch statistics
        expected_metric = trainer.metric_loss(z0, labels).item()
    logs = _step(trainer, images, labels)
    assert [c["opt"] for c in calls] == ["opt_metric"]
    assert calls[0]["changed"] == _names(trainer, [p for p in trainer.model.parameters() if p.requires_grad])
    # the logged losses are those of the batch before the update
    assert logs["metric"] == pytest.approx(expected_metric, rel=1e-5)
    if not isinstance(trainer.objective, HDMLInterpolation):
        assert set(logs) == {"metric", "total"} and logs["total"] == logs["metric"]
    else:
        assert logs["synthetic"] > 0
        assert logs["total"] == pytest.approx(logs["metric"] + logs["synthetic_weight"] * logs["synthetic"], rel=1e-5)
    with torch.no_grad():
        assert not torch.allclose(trainer.model(images), z0)


def test_value_clipping_clamps_the_gradients_each_optimiser_sees(tmp_path):
    clip = 1e-3
    runs = {}
    for name, value in (("free", "null"), ("clipped", clip)):
        trainer = _trainer(tmp_path, f"solver.grad_clip_value={value}", name=name)
        _, calls = _record_steps(trainer)
        _step(trainer, *_batch())
        runs[name] = calls
    free, clipped = runs["free"], runs["clipped"]
    # phase A (the embedding network's step and the GNN's first one) starts from the same weights and
    # batch: the clipped gradients are exactly the free ones clamped to [-clip, clip]
    for i in (0, 1):
        assert free[i]["grads"].keys() == clipped[i]["grads"].keys()
        stepped = free[i]["changed"]
        assert any(free[i]["grads"][n].abs().max() > 10 * clip for n in stepped)   # clipping has work to do
        for n in stepped:
            torch.testing.assert_close(clipped[i]["grads"][n], free[i]["grads"][n].clamp(-clip, clip),
                                       rtol=1e-5, atol=1e-9)
    # phase C's GNN step is clipped too
    gnn_c_grads = [clipped[3]["grads"][n] for n in clipped[3]["changed"]]
    assert max(g.abs().max().item() for g in gnn_c_grads) == pytest.approx(clip)
    assert max(free[3]["grads"][n].abs().max().item() for n in free[3]["changed"]) > 10 * clip
