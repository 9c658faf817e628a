"""The quantizers' set-up and wiring, by the papers' formulas: code ranges, LSQ's and LSQ+'s
initialisation (per channel, with outliers), the gradient scale with several channels and images,
which layers quantize what, and the way back to plain layers. Written to kill the mutants of
cifar_qvit.quant (``uvx nox -s mutants``, docs/testing.md); test_quant.py has the gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from cifar_qvit.quant import (
    LsqPlusAct,
    LsqWeight,
    QuantConv2d,
    QuantLinear,
    _sum_to,
    dequantize,
    is_quantized,
    lsq_quantize,
)


def test_full_precision_bit_widths():
    assert [is_quantized(b) for b in (None, -1, 32, 2, 4, 8, 16)] == [False, False, False, True, True, True, True]


def test_sum_to_reduces_the_broadcast_dims_only():
    t = torch.arange(24.0).view(2, 3, 4)
    torch.testing.assert_close(_sum_to(t, torch.Size([1, 3, 1])), t.sum((0, 2), keepdim=True))
    torch.testing.assert_close(_sum_to(t, torch.Size([2, 1, 1])), t.sum((1, 2), keepdim=True))
    assert _sum_to(t, torch.Size([2, 3, 4])) is t
    ones = torch.ones(1, 3, 1)
    assert _sum_to(ones, torch.Size([1, 1, 1])).shape == (1, 1, 1) and _sum_to(ones, torch.Size([1, 3, 1])) is ones


@pytest.mark.parametrize("bits, qn, qp", [(2, -2, 1), (4, -8, 7), (8, -128, 127)])
def test_weight_codes_range_and_lsq_init(bits, qn, qp):
    w = torch.tensor([[0.5, -1.0, 2.0, 0.0], [0.1, 0.1, -0.1, 0.3]])
    q = LsqWeight(w, bits)
    assert (q.bits, q.qn, q.qp) == (bits, qn, qp)
    # LSQ's init: 2 mean|w| / sqrt(Q_p), one step per output channel
    torch.testing.assert_close(q.step.detach(), torch.tensor([2 * 0.875, 2 * 0.15]) / math.sqrt(qp))
    codes = q.codes(w * 100)
    assert codes.min() == qn and codes.max() == qp


def test_activation_codes_are_unsigned_with_one_step_per_channel_on_dim_1_by_default():
    q = LsqPlusAct(3, channels=4)
    assert (q.bits, q.qn, q.qp, q.dim) == (3, 0, 7, 1)
    assert q.step.tolist() == [1.0] * 4 and q.beta.tolist() == [0.0] * 4
    assert q.initialized.dtype == torch.bool and not bool(q.initialized)


def test_lsq_plus_init_is_mean_3_std_clipped_to_the_range_per_channel():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 50)
    x[:, 1] = torch.rand(6, 50) * 0.2 + 0.4  # channel 1: uniform, narrow: its own min and max clip mean +- 3 std
    x[0, 0, :2] = torch.tensor([40.0, -40.0])  # outliers: channel 0's range is mean +- 3 std, not its min and max
    q = LsqPlusAct(4, channels=2, dim=1).train()
    q(x)
    for c in range(2):
        v = x[:, c].flatten()
        lo = max(v.mean() - 3 * v.std(), v.min())
        hi = min(v.mean() + 3 * v.std(), v.max())
        assert q.step[c].item() == pytest.approx(((hi - lo) / 15).item(), rel=1e-5)
        assert q.beta[c].item() == pytest.approx(lo.item(), rel=1e-5)
    v = x[:, 0].flatten()
    assert q.step[1].item() < 0.02 and v.max() > v.mean() + 3 * v.std() and v.min() < v.mean() - 3 * v.std()
    assert q.beta[1].item() == pytest.approx(x[:, 1].min().item()) and x[:, 1].min() > x[:, 1].mean() - 3 * x[:, 1].std()


def test_lsq_plus_init_per_tensor_clips_to_the_batch_range():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.5, 1.5, 2.5, 3.5]])
    q = LsqPlusAct(2).train()
    q(x)  # mean +- 3 std lies outside [0, 3.5]: the range itself
    assert q.step.item() == pytest.approx(3.5 / 3) and q.beta.item() == pytest.approx(0.0)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_lsq_plus_step_gradient_is_scaled_by_the_values_per_step_and_image(channels):
    """g = 1 / sqrt(N Q_p), N the values one step covers in one image (here 5 per channel)."""
    torch.manual_seed(1)
    x = torch.randn(3, channels, 5) * 2
    q = LsqPlusAct(2, channels=channels).train()
    q(x)  # initialise
    out = q(x)
    out.backward(torch.cos(x))
    shape = (1, channels, 1)
    step = q.step.detach().view(shape).clone().requires_grad_()
    beta = q.beta.detach().view(shape).clone().requires_grad_()
    lsq_quantize(x, step, beta, 0, 3, 1 / math.sqrt(5 * 3)).backward(torch.cos(x))
    torch.testing.assert_close(q.step.grad, step.grad.flatten())
    torch.testing.assert_close(q.beta.grad, beta.grad.flatten())


def test_per_channel_steps_need_a_shape_that_puts_them_on_their_dim():
    q = LsqPlusAct(4, channels=2, dim=2).train()
    x = torch.rand(3, 5, 2)
    q(x)
    assert q.step.shape == (2,) and q(x).shape == x.shape


def test_quant_linear_quantizes_input_and_weight_and_keeps_the_bias():
    torch.manual_seed(2)
    lin = torch.nn.Linear(6, 3)
    with torch.no_grad():
        lin.bias.fill_(0.7)
    q = QuantLinear.from_float(lin, 2, 2).train()
    x = torch.randn(4, 6)
    out = q(x)
    expected = F.linear(q.aq(x), q.wq(lin.weight), lin.bias)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, lin(x), atol=1e-3)  # 2 bits change the result
    plain = QuantLinear.from_float(lin, 32, -1)
    assert plain.wq is None and plain.aq is None
    torch.testing.assert_close(plain(x), lin(x))
    only_w = QuantLinear.from_float(lin, 2, 32)
    assert only_w.aq is None
    torch.testing.assert_close(only_w(x), F.linear(x, only_w.wq(lin.weight), lin.bias))


def test_quant_conv_quantizes_input_and_weight_and_keeps_the_bias():
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        conv.bias.fill_(0.5)
    q = QuantConv2d.from_float(conv, 2, 2).train()
    assert q.aq is not None and q.wq is not None and q.weight is conv.weight
    x = torch.randn(2, 3, 6, 6)
    out = q(x)
    torch.testing.assert_close(out, F.conv2d(q.aq(x), q.wq(conv.weight), conv.bias, padding=1))
    assert not torch.allclose(out, conv(x), atol=1e-3)
    plain = QuantConv2d.from_float(conv, 32, 32)
    assert plain.wq is None and plain.aq is None
    torch.testing.assert_close(plain(x), conv(x))
    only_a = QuantConv2d.from_float(conv, 32, 2).train()
    torch.testing.assert_close(only_a(x), F.conv2d(only_a.aq(x), conv.weight, conv.bias, padding=1))


@pytest.mark.parametrize("layer, x", [(torch.nn.Linear(5, 2), torch.randn(3, 5)),
                                      (torch.nn.Conv2d(2, 3, 3), torch.randn(1, 2, 5, 5))])
def test_dequantize_gives_the_plain_layer_on_the_same_parameters(layer, x):
    quantized = (QuantLinear if isinstance(layer, torch.nn.Linear) else QuantConv2d).from_float(layer, 4, 4).train()
    quantized(x)
    plain = dequantize(quantized)
    assert type(plain) is type(layer) and plain.weight is layer.weight and plain.bias is layer.bias
    assert "wq" not in plain._modules and "aq" not in plain._modules and set(plain.state_dict()) == {"weight", "bias"}
    torch.testing.assert_close(plain(x), layer(x))
