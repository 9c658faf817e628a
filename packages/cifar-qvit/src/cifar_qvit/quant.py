"""Fake quantizers (LSQ for weights, LSQ+ for activations) and the layers that use them.

Both round with a straight-through estimator and scale the step's gradient as LSQ prescribes
(Esser et al., ICLR 2020): g = 1 / sqrt(N * Q_p), N the number of values one step covers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FULL_PRECISION = (-1, 32)  # bit widths that mean "do not quantize"


def is_quantized(bits: int | None) -> bool:
    return bits is not None and bits not in FULL_PRECISION


class _LsqPlus(torch.autograd.Function):
    """s * clamp(round((x - beta) / s), qn, qp) + beta in one autograd node, with LSQ's gradients:
    x: straight-through inside the range, 0 outside; step: (round(v) - v) inside and the clamp
    bound outside (v = (x - beta) / s), times g; beta: the gradient of clipped values, times g.

    Composing round/clamp with straight-through and gradient-scale tricks gives the same values
    and gradients (tests/test_quant.py checks against that composition) but costs about a dozen
    passes over x in backward; here forward saves the in-range mask and the step's factor, and
    backward is one select and the reductions. ``step``/``beta`` come broadcastable to x with the
    same number of dims; beta may be None."""

    @staticmethod
    def forward(ctx, x, step, beta, qn: int, qp: int, g: float):
        v = (x - beta) / step if beta is not None else x / step
        q = v.clamp(qn, qp)
        inside = q == v
        q = q.round_()
        ctx.save_for_backward(inside, torch.where(inside, q - v, q))
        ctx.g, ctx.has_beta, ctx.step_shape = g, beta is not None, step.shape
        return torch.addcmul(beta, q, step) if beta is not None else q * step

    @staticmethod
    def backward(ctx, grad):
        inside, step_factor = ctx.saved_tensors
        grad_x = torch.where(inside, grad, 0.0)
        grad_step = _sum_to(grad * step_factor, ctx.step_shape) * ctx.g
        grad_beta = (_sum_to(grad, ctx.step_shape) - _sum_to(grad_x, ctx.step_shape)) * ctx.g if ctx.has_beta else None
        return grad_x, grad_step, grad_beta, None, None, None


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum ``t`` over the dims where ``shape`` (same number of dims) broadcasts."""
    dims = [d for d, n in enumerate(shape) if n == 1 and t.shape[d] != 1]
    return t.sum(dims, keepdim=True) if dims else t


def lsq_quantize(x: torch.Tensor, step: torch.Tensor, beta: torch.Tensor | None, qn: int, qp: int, g: float) -> torch.Tensor:
    return _LsqPlus.apply(x, step, beta, qn, qp, g)


class LsqWeight(nn.Module):
    """LSQ: signed codes in [-2^(b-1), 2^(b-1)-1], one learnable step per output channel."""

    def __init__(self, weight: torch.Tensor, bits: int):
        super().__init__()
        self.bits = bits
        self.qn, self.qp = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        per_channel = weight.detach().flatten(1)
        # LSQ's init: 2 * mean|w| / sqrt(Q_p), per output channel
        step = 2 * per_channel.abs().mean(1) / math.sqrt(self.qp)
        self.step = nn.Parameter(step.clamp_min(1e-8))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        g = 1.0 / math.sqrt(weight[0].numel() * self.qp)
        return lsq_quantize(weight, self.step.view(-1, *([1] * (weight.dim() - 1))), None, self.qn, self.qp, g)

    @torch.no_grad()
    def codes(self, weight: torch.Tensor) -> torch.Tensor:
        """The integer codes export stores (int64, same shape as the weight)."""
        s = self.step.view(-1, *([1] * (weight.dim() - 1)))
        return torch.clamp(weight / s, self.qn, self.qp).round().long()


class FirstBatchInit(nn.Module):
    """A module whose parameters are set from its first training batch (``init_from_batch``).

    The ``initialized`` buffer is saved with the weights; forward reads a Python copy of it, set
    when a state dict is loaded: reading the buffer every step was a GPU->host sync per module,
    and a graph break under torch.compile that made dynamo give up compiling the layers around it."""

    def __init__(self):
        super().__init__()
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._ready = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "initialized" in state_dict:  # a checkpoint, the LR finder's restore
            self._ready = bool(state_dict[prefix + "initialized"])

    def needs_init(self) -> bool:
        """True when this forward should initialise from its batch: training, and not done yet."""
        return not self._ready and self.training

    @torch.compiler.disable  # once per run; compiled steps after it never see this branch
    @torch.no_grad()
    def init_from_batch(self, x: torch.Tensor) -> None:
        self._init(x)
        self.initialized.fill_(True)
        self._ready = True

    def _init(self, x: torch.Tensor) -> None:
        raise NotImplementedError


class LsqPlusAct(FirstBatchInit):
    """LSQ+: unsigned codes in [0, 2^b-1] with a learnable step and offset (``beta``).

    ``channels``/``dim``: one step and offset per slice of that dimension (per head for queries,
    keys and attention probabilities), else one for the tensor. Initialised from the first
    training batch (mean ± 3 std clipped to the batch's range); until then, and in eval mode
    before that, it passes values through.
    """

    def __init__(self, bits: int, channels: int = 1, dim: int = 1):
        super().__init__()
        self.bits, self.dim = bits, dim
        self.qn, self.qp = 0, 2**bits - 1
        self.step = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def _shape(self, x: torch.Tensor) -> list[int]:
        shape = [1] * x.dim()
        if self.step.numel() > 1:
            shape[self.dim] = self.step.numel()
        return shape

    def _init(self, x: torch.Tensor) -> None:  # under init_from_batch's no_grad
        dims = [d for d in range(x.dim()) if not (self.step.numel() > 1 and d == self.dim)]
        xf = x.detach().float()
        mean, std = xf.mean(dims), xf.std(dims)
        lo = torch.maximum(mean - 3 * std, xf.amin(dims))
        hi = torch.minimum(mean + 3 * std, xf.amax(dims))
        step = ((hi - lo) / (self.qp - self.qn)).clamp_min(1e-8)
        self.step.copy_(step.reshape(-1).expand_as(self.step))
        self.beta.copy_((lo - self.qn * step).reshape(-1).expand_as(self.beta))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.needs_init():
            self.init_from_batch(x)
        elif not self._ready:  # eval mode before any training batch: pass through
            return x
        n = x.numel() / x.shape[0] / (self.step.numel() if self.step.numel() > 1 else 1)
        g = 1.0 / math.sqrt(n * self.qp)
        shape = self._shape(x)
        return lsq_quantize(x, self.step.view(shape), self.beta.view(shape), self.qn, self.qp, g)


def _requantize(cls: type, layer: nn.Module, wbits: int, abits: int) -> nn.Module:
    """The same layer (same parameter objects and names) as ``cls``, with its quantizers added."""
    q = cls.__new__(cls)
    q.__dict__.update(layer.__dict__)
    q._parameters, q._buffers, q._modules = dict(layer._parameters), dict(layer._buffers), dict(layer._modules)
    q.wq = LsqWeight(layer.weight, wbits).to(layer.weight.device) if is_quantized(wbits) else None
    q.aq = LsqPlusAct(abits).to(layer.weight.device) if is_quantized(abits) else None
    return q


def dequantize(layer: nn.Module) -> nn.Module:
    """The plain nn.Linear/nn.Conv2d under a quantized layer (same parameter objects)."""
    base = nn.Linear if isinstance(layer, QuantLinear) else nn.Conv2d
    plain = base.__new__(base)
    plain.__dict__.update(layer.__dict__)
    plain._parameters, plain._buffers = dict(layer._parameters), dict(layer._buffers)
    plain._modules = {k: v for k, v in layer._modules.items() if k not in ("wq", "aq")}
    return plain


class QuantLinear(nn.Linear):
    """nn.Linear with fake-quantized input and weight; keeps ``weight``/``bias`` names so FP
    state dicts load into it."""

    @classmethod
    def from_float(cls, layer: nn.Linear, wbits: int, abits: int) -> QuantLinear:
        return _requantize(cls, layer, wbits, abits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.aq(x) if self.aq is not None else x
        w = self.wq(self.weight) if self.wq is not None else self.weight
        return F.linear(x, w, self.bias)


class QuantConv2d(nn.Conv2d):
    """nn.Conv2d with fake-quantized input and weight (the patch embedding)."""

    @classmethod
    def from_float(cls, layer: nn.Conv2d, wbits: int, abits: int) -> QuantConv2d:
        return _requantize(cls, layer, wbits, abits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.aq(x) if self.aq is not None else x
        w = self.wq(self.weight) if self.wq is not None else self.weight
        return self._conv_forward(x, w, self.bias)
