"""RNG states: recorded as data, restored exactly."""
import numpy as np
import torch

from gca.rng import rng_state, seed_everything, set_rng_state


def test_rng_state_round_trip():
    import random
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    state = rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    np.random.randn()           # leaves a cached Gaussian in NumPy's state
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


def test_seed_everything_repeats_every_generator():
    import random
    draws = []
    for _ in range(2):
        seed_everything(5)
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(1))))
    assert draws[0] == draws[1]
