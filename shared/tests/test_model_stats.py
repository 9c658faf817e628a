"""FLOPs per image from torch's flop counter, checked against counts written out by hand."""

import torch
from torch import nn

from cifar_shared.engine.model_stats import model_stats
from cifar_shared.engine.train import write_model_info


def tiny_net() -> nn.Module:
    # conv 3->4, 3x3, padding 1 on 8x8, ReLU, flatten, linear 256 -> 5
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))


def test_flops_of_a_conv_and_a_linear_layer_match_the_formula():
    conv = 2 * (4 * 8 * 8) * (3 * 3 * 3)  # 2 x outputs x (in_channels x k x k): 13,824
    linear = 2 * 256 * 5  # 2,560
    stats = model_stats(tiny_net(), (3, 8, 8))
    assert stats.forward_flops == conv + linear
    # backward: the conv's weight gradient (same size as its forward; the input needs no gradient),
    # the linear layer's weight gradient and its input gradient (each the size of its forward)
    assert stats.train_flops == (conv + linear) + conv + 2 * linear
    assert stats.params == stats.trainable == (4 * 27 + 4) + (256 * 5 + 5)


def test_frozen_layers_need_no_weight_gradient():
    net = tiny_net()
    net[0].requires_grad_(False)
    stats = model_stats(net, (3, 8, 8))
    linear = 2 * 256 * 5
    assert stats.train_flops == stats.forward_flops + linear  # only the linear weight gradient
    assert stats.trainable == 256 * 5 + 5


def test_counting_shifts_neither_the_rng_nor_the_weights_nor_the_grads(tmp_path):
    net = nn.Sequential(tiny_net(), nn.Dropout(0.5))
    net.train()
    before = [p.detach().clone() for p in net.parameters()]
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    text = write_model_info(net, "tiny", (3, 8, 8), tmp_path / "model_info.txt")
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters()) and net.training
    assert "1,397 parameters (1,397 trainable); FLOPs per image: forward 0.016 M, forward+backward 0.035 M" in text


def test_counting_a_compiled_net_compiles_nothing(tmp_path):
    """``compile: auto`` compiles the net in place before the run counts it; tracing torchinfo's
    hooks then recompiled to dynamo's limit before the first step (seen on an H200)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    net = tiny_net()
    net.compile()
    counters.clear()
    write_model_info(net, "tiny", (3, 8, 8), tmp_path / "model_info.txt")
    assert sum(counters["frames"].values()) == 0, dict(counters["frames"])
