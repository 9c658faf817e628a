"""Q-ViT's attention: IRM + per-head quantized queries/keys/values and quantized attention probabilities.

Registered with transformers as the attention function ``"qvit"`` (its ``AttentionInterface``),
so ViT's own attention module keeps its projections and calls this for the
softmax(q kᵀ) v part. A module's extra parameters live in ``module.qvit`` (a ``QAttention``); a
module without one runs plain eager attention. ``module.capture_qk = True`` keeps the (rectified,
quantized) queries and keys of the last call in ``module.captured_qk`` for distillation.
"""

from __future__ import annotations

import torch
from torch import nn

from cifar_qvit.quant import FirstBatchInit, LsqPlusAct, is_quantized

NAME = "qvit"


class IRM(FirstBatchInit):
    """Information rectification: per-head (x - mean + beta) / (gamma * std), mean/std over each
    head's tokens and channels. beta/gamma are set from the first training batch so that the
    module starts as the identity on it; training then moves them (Q-ViT, Sec. 3.2)."""

    def __init__(self, heads: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.beta = nn.Parameter(torch.zeros(heads))
        self.gamma = nn.Parameter(torch.ones(heads))

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        var, mean = torch.var_mean(x, (2, 3), keepdim=True, correction=0)
        return mean, (var + self.eps).sqrt()

    def _init(self, x: torch.Tensor) -> None:
        mean, std = self._stats(x)
        self.beta.copy_(mean.mean((0, 2, 3)).reshape(-1))
        self.gamma.copy_(1.0 / std.mean((0, 2, 3)).reshape(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, N, D)
        if self.needs_init():
            self.init_from_batch(x)
        mean, std = self._stats(x)
        beta, gamma = self.beta.view(1, -1, 1, 1), self.gamma.view(1, -1, 1, 1)
        scale = 1.0 / (gamma * std)  # per (image, head): one multiply-add over x, not three passes
        return torch.addcmul((beta - mean) * scale, x, scale)


class QAttention(nn.Module):
    """The quantized parts of one attention module: IRM on q/k, then LSQ+ per head on q, k, the
    probabilities and the values v (both operands of probs @ v are low-bit, as in Q-ViT); and
    ``qkv_input``, the one LSQ+ quantizer of the projections' shared input."""

    def __init__(self, heads: int, bits: int, irm: bool = True, qkv_input: LsqPlusAct | None = None):
        super().__init__()
        self.qkv_input = qkv_input
        self.irm_q, self.irm_k = (IRM(heads), IRM(heads)) if irm else (None, None)
        quant = is_quantized(bits)
        self.q_quant = LsqPlusAct(bits, heads, dim=1) if quant else None
        self.k_quant = LsqPlusAct(bits, heads, dim=1) if quant else None
        self.p_quant = LsqPlusAct(bits, heads, dim=1) if quant else None
        self.v_quant = LsqPlusAct(bits, heads, dim=1) if quant else None

    def queries_keys(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.irm_q is not None:
            q, k = self.irm_q(q), self.irm_k(k)
        if self.q_quant is not None:
            q, k = self.q_quant(q), self.k_quant(k)
        return q, k

    def probabilities(self, p: torch.Tensor) -> torch.Tensor:
        return self.p_quant(p) if self.p_quant is not None else p

    def values(self, v: torch.Tensor) -> torch.Tensor:  # v: (B, H, N, D), one step/offset per head
        return self.v_quant(v) if self.v_quant is not None else v


def quantize_qkv_input(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook of an attention module: quantize its input once for query, key and value.

    Q-ViT (on DeiT) has one fused qkv layer with one input quantizer; Hugging Face's ViT has three
    projections reading the same tensor, so quantizing it here keeps the original's one quantizer
    and does a third of the work. A module without ``qvit.qkv_input`` (the DGD teacher) passes."""
    quantizer = getattr(getattr(module, "qvit", None), "qkv_input", None)
    if quantizer is None:
        return None
    if args:
        return (quantizer(args[0]), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": quantizer(kwargs["hidden_states"])}


def qvit_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs):
    """Eager attention with Q-ViT's hooks; same signature and outputs as transformers' eager one."""
    extra: QAttention | None = getattr(module, "qvit", None)
    if extra is not None:
        query, key = extra.queries_keys(query, key)
    if getattr(module, "capture_qk", False):
        module.captured_qk = (query, key)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if extra is not None:
        probs, value = extra.probabilities(probs), extra.values(value)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, probs


def register() -> str:
    """Make ``attn_implementation="qvit"`` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import (
        ALL_MASK_ATTENTION_FUNCTIONS,
        AttentionMaskInterface,
        eager_mask,
    )

    AttentionInterface.register(NAME, qvit_attention)
    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(NAME, eager_mask)
    return NAME
