"""Output heads: the frozen-shift BN and a reset that really re-initialises every parameter."""
import math

import pytest
import torch

from gca.heads import ChannelWeightHead, FrozenBiasBatchNorm1d, NodeClassifierHead

HEADS = {
    "lambda": lambda: ChannelWeightHead(8),
    "lambda_scalar": lambda: ChannelWeightHead(8, per_channel=False),
    "classifier": lambda: NodeClassifierHead(8, 5),
}


def _disturb(head):
    head.train()
    head(torch.randn(32, 8) * 3 + 1)            # moves the running statistics
    with torch.no_grad():
        for p in head.parameters():
            p.add_(5.0)


@pytest.mark.parametrize("name", HEADS)
def test_reset_equals_a_fresh_head_drawn_from_the_same_seed(name):
    torch.manual_seed(1)
    fresh = HEADS[name]()
    head = HEADS[name]()
    _disturb(head)
    torch.manual_seed(1)
    head.reset_parameters()
    for (key, got), expected in zip(head.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(got, expected), key
    assert not head.norm.bias.requires_grad and head.norm.weight.requires_grad


@pytest.mark.parametrize("name", HEADS)
def test_reset_restores_the_init_values_and_distribution(name):
    head = HEADS[name]()
    _disturb(head)
    head.reset_parameters()
    norm, linear = head.norm, head.linear
    assert torch.equal(norm.weight, torch.ones(8)) and torch.equal(norm.bias, torch.zeros(8))
    assert torch.equal(norm.running_mean, torch.zeros(8)) and torch.equal(norm.running_var, torch.ones(8))
    assert norm.num_batches_tracked.item() == 0
    bound = 1 / math.sqrt(8)                    # PyTorch's Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert linear.weight.abs().max() <= bound and linear.bias.abs().max() <= bound


def test_frozen_bias_stays_zero_through_training():
    bn = FrozenBiasBatchNorm1d(4)
    assert not bn.bias.requires_grad
    opt = torch.optim.SGD([p for p in bn.parameters() if p.requires_grad], lr=0.1)
    bn(torch.randn(16, 4)).pow(2).sum().backward()
    opt.step()
    assert torch.equal(bn.bias, torch.zeros(4)) and bn.bias.grad is None


@pytest.mark.parametrize("momentum", [0.1, None])
def test_weighted_rows_normalise_as_the_rows_repeated(momentum):
    """One state per unordered pair with weight 2 (1 for a self-loop) must give the BN of the directed edges."""
    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(10, 8, generator=gen, dtype=torch.float64) * 2 + 1
    weight = torch.tensor([1, 2, 2, 1, 2, 2, 2, 1, 2, 2], dtype=torch.float64)
    repeated = rows.repeat_interleave(weight.long(), dim=0)
    weighted_bn = FrozenBiasBatchNorm1d(8, momentum=momentum).double()
    plain_bn = FrozenBiasBatchNorm1d(8, momentum=momentum).double()
    with torch.no_grad():
        for bn in (weighted_bn, plain_bn):
            bn.weight.copy_(torch.linspace(0.5, 2, 8))
    for _ in range(2):      # two batches: the running statistics' update and its counter
        out = weighted_bn(rows, row_weight=weight)
        expected = plain_bn(repeated)
        torch.testing.assert_close(out.repeat_interleave(weight.long(), dim=0), expected)
    torch.testing.assert_close(weighted_bn.running_mean, plain_bn.running_mean)
    torch.testing.assert_close(weighted_bn.running_var, plain_bn.running_var)
    assert int(weighted_bn.num_batches_tracked) == int(plain_bn.num_batches_tracked) == 2
    # gradients through the batch statistics too
    x1 = rows.clone().requires_grad_()
    x2 = rows.clone().requires_grad_()
    counts = weight.long()
    upstream = torch.randn(int(counts.sum()), 8, generator=gen, dtype=torch.float64)   # one per directed edge
    (weighted_bn(x1, row_weight=weight).repeat_interleave(counts, dim=0) * upstream).sum().backward()
    (plain_bn(x2.repeat_interleave(counts, dim=0)) * upstream).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    # evaluation mode: the running statistics, whatever the weights
    weighted_bn.eval()
    plain_bn.eval()
    torch.testing.assert_close(weighted_bn(rows, row_weight=weight), plain_bn(rows))
