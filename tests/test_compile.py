"""Optional torch.compile of the propagation blocks (``GCAGenerator.compile_layers``, config key ``gca.compile``).

The tests compile with the ``aot_eager`` backend: it traces the blocks and their backward as inductor does, but
runs no C++ compiler, so they stay fast. The inductor backend is measured by the cost benchmark's ``compile``
suite.
"""
import pytest
import torch

import gca
from gca.testing.runs import tiny_run_overrides
from gca.train import Trainer, load_config


def _compile_supported() -> bool:
    try:
        import torch._dynamo
        return hasattr(torch, "compile") and torch._dynamo.is_dynamo_supported()
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _compile_supported(), reason="torch.compile is not available here")

BACKEND = "aot_eager"


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # every test starts with empty compile caches: recompilations of the blocks' shared code would otherwise add
    # up across tests towards dynamo's limit, past which it silently runs the eager code
    import torch._dynamo
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _batch(b=24, d=32, classes=8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, d, generator=g), torch.arange(classes).repeat(b // classes)


def _pair(compile_kwargs=None, **kwargs):
    """An eager generator and a compiled one with the same weights (no dropout: its random masks are drawn
    differently by compiled code)."""
    torch.manual_seed(0)
    eager = gca.GCAGenerator(32, 12, num_layers=2, heads=4, dropout=0.0, **kwargs).train()
    compiled = gca.GCAGenerator(32, 12, num_layers=2, heads=4, dropout=0.0, **kwargs).train()
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled.compile_layers(backend=BACKEND, **(compile_kwargs or {}))


def _run(generator, z, y):
    z = z.clone().requires_grad_()
    out = generator.propagate(z, y)
    (out.lam.square().mean() + out.node_logits.square().mean() + out.node_states.square().mean()).backward()
    grads = {name: p.grad for name, p in generator.named_parameters()}
    return out.lam.detach(), out.node_states.detach(), z.grad, grads


@pytest.mark.parametrize("symmetric, recompute, compile_kwargs", [
    (True, "none", {}), (False, "none", {}), (True, "none", {"dynamic": None}), (True, "gathers", {}),
    (True, "all", {})])
def test_compiled_layers_give_the_eager_values_and_gradients(symmetric, recompute, compile_kwargs):
    eager, compiled = _pair(compile_kwargs, symmetric_edges=symmetric, layer_kwargs={"recompute": recompute})
    assert all(block._compiled_call_impl is not None for block in compiled.propagation.layers)
    for b in (24, 30):      # a second batch size: another number of edges through the same compiled blocks
        z, y = _batch(b=b, classes=b // 3)
        lam_e, h_e, dz_e, grads_e = _run(eager, z, y)
        lam_c, h_c, dz_c, grads_c = _run(compiled, z, y)
        torch.testing.assert_close(lam_c, lam_e, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(h_c, h_e, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(dz_c, dz_e, rtol=1e-4, atol=1e-5)
        assert grads_c.keys() == grads_e.keys()
        for name in grads_e:
            assert (grads_c[name] is None) == (grads_e[name] is None), name
            if grads_e[name] is not None:
                torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-4, atol=1e-5, msg=name)
        eager.zero_grad(set_to_none=True)
        compiled.zero_grad(set_to_none=True)
    from torch._dynamo.utils import counters
    assert counters["frames"]["ok"] >= 1 and not counters["unimplemented"]    # compiled, not fallen back to eager


def test_checkpoints_load_into_compiled_and_eager_generators_alike():
    eager, compiled = _pair()
    z, y = _batch()
    compiled.propagate(z, y)     # compiled now, not only marked for compilation
    assert list(compiled.state_dict()) == list(eager.state_dict())
    with torch.no_grad():
        for p in compiled.parameters():
            p.add_(0.01)
    eager.load_state_dict(compiled.state_dict())            # strict: the same keys
    fresh = gca.GCAGenerator(32, 12, num_layers=2, heads=4, dropout=0.0).compile_layers(backend=BACKEND)
    fresh.load_state_dict(eager.state_dict())
    for key, value in eager.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    eager.eval()
    fresh.eval()
    torch.testing.assert_close(fresh.propagate(z, y).lam, eager.propagate(z, y).lam, rtol=1e-4, atol=1e-5)


def test_dynamic_shapes_cannot_be_forced_on_blocks_that_recompute():
    generator = gca.GCAGenerator(32, 12, num_layers=1, heads=4, layer_kwargs={"recompute": "gathers"})
    with pytest.raises(ValueError, match="dynamic=True fails on blocks that recompute"):
        generator.compile_layers(backend=BACKEND, dynamic=True)


def test_config_key_compiles_the_trainer_generator_and_keeps_its_checkpoint_keys(tmp_path):
    plain = Trainer(load_config(None, tiny_run_overrides(tmp_path, "device=cpu", "name=plain")), progress=False)
    overrides = tiny_run_overrides(tmp_path, "device=cpu", "name=compiled", "gca.compile=true")
    compiled = Trainer(load_config(None, overrides), progress=False)
    assert all(block._compiled_call_impl is None for block in plain.objective.generator.propagation.layers)
    assert all(block._compiled_call_impl is not None for block in compiled.objective.generator.propagation.layers)
    assert list(compiled.objective.state_dict()) == list(plain.objective.state_dict())


@pytest.mark.parametrize("overrides, message", [
    (["gca.compile=maybe"], "'gca.compile' must be true or false"),
    (["gca.compile=true", "gca.generator=hdml"], "'gca.compile' is true, which needs gca.generator=gca"),
])
def test_config_key_is_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)
