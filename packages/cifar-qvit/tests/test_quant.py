"""LSQ/LSQ+ against the papers' formulas, and the layers they wrap."""

import math

import pytest
import torch

from cifar_qvit.attention import IRM
from cifar_qvit.model import QViT
from cifar_qvit.quant import LsqPlusAct, LsqWeight, QuantLinear, lsq_quantize


def test_lsq_step_gradient_matches_the_paper_on_a_hand_made_example():
    # LSQ (Esser et al. 2020), eq. 3: d v̂/d s = -v/s + round(v/s) inside [Q_n, Q_p], Q_n or Q_p
    # outside; the step's gradient is scaled by g = 1/sqrt(N Q_p), N the weights per step.
    w = torch.tensor([[0.30, -0.90, 0.05, 2.00]])  # one output channel, N = 4; 3 bits: Q_n=-4, Q_p=3
    q = LsqWeight(w, bits=3)
    with torch.no_grad():
        q.step.fill_(0.25)
    q(w).sum().backward()
    v = [0.30 / 0.25, -0.90 / 0.25, 0.05 / 0.25, 2.00 / 0.25]  # 1.2, -3.6, 0.2, 8.0 (clipped to 3)
    by_hand = (round(v[0]) - v[0]) + (round(v[1]) - v[1]) + (round(v[2]) - v[2]) + 3
    assert by_hand == pytest.approx(-0.2 + -0.4 - 0.2 + 3)
    assert q.step.grad.item() == pytest.approx(by_hand / math.sqrt(4 * 3), rel=1e-6)


def test_lsq_values_and_straight_through_input_gradient():
    w = torch.tensor([[0.30, -0.90, 0.05, 2.00]], requires_grad=True)
    q = LsqWeight(w, bits=3)
    with torch.no_grad():
        q.step.fill_(0.25)
    out = q(w)
    assert out.tolist() == [[0.25, -1.0, 0.0, 0.75]]  # codes 1, -4, 0, 3 (clipped)
    out.sum().backward()
    assert w.grad.tolist() == [[1.0, 1.0, 1.0, 0.0]]  # STE inside the range, zero where clipped


def test_lsq_plus_offset_gradient_and_first_batch_init():
    x = torch.tensor([[-1.0, 0.0, 0.4, 5.0]])
    q = LsqPlusAct(bits=2).train()
    q(x)  # the first batch sets step and offset
    assert bool(q.initialized) and q.step.item() > 0
    with torch.no_grad():
        q.step.fill_(0.5)
        q.beta.fill_(-0.5)
    q.step.grad = None
    q.beta.grad = None
    out = q(x)  # v = (x + 0.5) / 0.5 = -1, 1, 1.8, 11 -> codes 0 (clipped), 1, 2, 3 (clipped)
    assert out.tolist() == [[-0.5, 0.0, 0.5, 1.0]]
    out.sum().backward()
    g = 1 / math.sqrt(4 * 3)
    assert q.beta.grad.item() == pytest.approx(2 * g)  # d/dbeta: 1 where clipped, 0 inside (STE)
    assert q.step.grad.item() == pytest.approx(((0 + 3) + (1 - 1) + (2 - 1.8)) * g)


def _composed_lsq(x, step, beta, qn, qp, g):
    """LSQ+ as the papers write it, from autograd's parts: round with a straight-through
    estimator, and the step/offset gradients scaled by g."""
    round_ste = lambda t: (t.round() - t).detach() + t
    scaled = lambda t: (t - t * g).detach() + t * g
    s, b = scaled(step), scaled(beta) if beta is not None else 0.0
    return round_ste(((x - b) / s).clamp(qn, qp)) * s + b


@pytest.mark.parametrize("case", ["per-tensor offset", "per-head offset", "per-channel weight"])
def test_one_node_lsq_equals_the_composed_formula(case):
    """Values and all three gradients of the one-node quantizer equal the textbook composition,
    on values that fall inside, below and above the range."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 6) * 3
    shape, with_beta, (qn, qp) = {"per-tensor offset": ((1, 1, 1, 1), True, (0, 15)),
                                  "per-head offset": ((1, 3, 1, 1), True, (0, 15)),
                                  "per-channel weight": ((4, 1, 1, 1), False, (-8, 7))}[case]
    step = (torch.rand(shape) * 0.5 + 0.2).requires_grad_()
    beta = (torch.randn(shape) * 0.5).requires_grad_() if with_beta else None
    grads = []
    for fn in (lsq_quantize, _composed_lsq):
        xi = x.clone().requires_grad_()
        out = fn(xi, step, beta, qn, qp, 0.37)
        out.backward(torch.cos(x))  # a gradient that differs per element
        grads.append([out.detach(), xi.grad] + [p.grad.clone() for p in (step, beta) if p is not None])
        for p in (step, beta):
            if p is not None:
                p.grad = None
    ours, composed = grads
    for a, b in zip(ours, composed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert 0 < (ours[1] == 0).float().mean() < 1  # some values were clipped, some were not


def test_irm_is_the_papers_per_head_rectification_and_starts_near_identity():
    """IRM (Q-ViT, Sec. 3.2): (x - mean + beta) / (gamma * std) per image and head, over tokens and
    channels; the first batch sets beta/gamma to the batch's average mean and 1/std."""
    torch.manual_seed(0)
    x = torch.randn(6, 3, 32, 32) * torch.tensor([0.5, 2.0, 4.0]).view(1, 3, 1, 1) + torch.tensor([1.0, -2.0, 0.0]).view(1, 3, 1, 1)
    irm = IRM(heads=3).train()
    first = irm(x)
    off = (first - x).abs().mean((0, 2, 3)) / x.std((0, 2, 3))
    assert (off < 0.1).all()  # near the identity on its first batch (exact when all images share mean and std)
    with torch.no_grad():
        irm.beta.copy_(torch.tensor([0.3, -0.1, 0.7]))
        irm.gamma.copy_(torch.tensor([1.5, 0.5, 2.0]))
    mean = x.mean((2, 3), keepdim=True)
    std = (x.var((2, 3), keepdim=True, unbiased=False) + irm.eps).sqrt()
    by_formula = (x - mean + irm.beta.view(1, 3, 1, 1)) / (irm.gamma.view(1, 3, 1, 1) * std)
    torch.testing.assert_close(irm(x), by_formula)


def test_first_batch_init_follows_loaded_state():
    """Forward reads a Python copy of ``initialized``; loading a state dict (a checkpoint, the LR
    finder's restore) must reset it: an uninitialised state starts over from the next batch, an
    initialised one is used as loaded, even in eval mode."""
    fresh = LsqPlusAct(bits=4).state_dict()
    q = LsqPlusAct(bits=4).train()
    q(torch.tensor([[0.0, 1.0, 2.0, 3.0]]))
    trained = {k: v.clone() for k, v in q.state_dict().items()}
    q.load_state_dict(fresh)
    q(torch.tensor([[0.0, 10.0, 20.0, 30.0]]))  # initialises again, from this batch's range
    assert bool(q.initialized) and q.step.item() == pytest.approx(30 / 15)  # (hi - lo) / (2^4 - 1); loaded: 1.0
    evaluated = LsqPlusAct(bits=4).eval()
    evaluated.load_state_dict(trained)
    x = torch.tensor([[0.1, 1.3, 2.9]])
    assert not torch.equal(evaluated(x), x)  # quantizes with the loaded step, not a pass-through


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_every_quantized_weight_takes_at_most_2_to_the_b_values_per_output_channel(bits):
    torch.manual_seed(0)
    net = QViT(10, pretrained=None, size="tiny", nbits_w=bits, nbits_a=bits).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    for _ in range(2):  # steps and weights move: the bound must hold after training too
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,))).backward()
        opt.step()
    layers = [m for m in net.modules() if hasattr(m, "wq") and m.wq is not None]
    assert len(layers) == len(net.quantized) == 6 * 4 + 2
    for layer in layers:
        wq = layer.wq(layer.weight).detach().flatten(1)
        counts = [len(torch.unique(row)) for row in wq]
        assert max(counts) <= 2**bits
        assert max(counts) > 1


def test_quant_linear_keeps_the_float_layer_parameters():
    lin = torch.nn.Linear(6, 3)
    q = QuantLinear.from_float(lin, 4, 4)
    assert q.weight is lin.weight and q.bias is lin.bias
    assert {"weight", "bias", "wq.step", "aq.step", "aq.beta"} <= set(q.state_dict())
