"""The numbers the probes report, as plain tensor functions (tested against hand-built layers)."""

from __future__ import annotations

import torch
from torch import nn

DEAD_KINDS = (nn.ReLU, nn.ReLU6)  # activations whose "off" output is exactly zero
BOUNDED = {nn.Tanh: (-1.0, 1.0), nn.Hardtanh: (-1.0, 1.0), nn.Sigmoid: (0.0, 1.0)}
SATURATION_MARGIN = 0.01  # within 1 % of the range of a bound counts as saturated


def activation_stats(x: torch.Tensor) -> torch.Tensor:
    """min, max, mean, std (population) of a layer's output, as one float tensor."""
    x = x.detach().float()
    return torch.stack([x.min(), x.max(), x.mean(), x.std(correction=0)])


def dead_units(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(count, units): units are the features of an (N, F) output, the channels of an (N, C, ...)
    one; a unit is dead when it is zero for every sample (and every position) of the batch."""
    alive = x.detach().ne(0).any(dim=0)
    if alive.ndim > 1:
        alive = alive.flatten(1).any(dim=1)
    return (~alive).sum(), alive.numel()


def saturated_fraction(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Share of outputs within ``SATURATION_MARGIN`` of either bound of a bounded activation."""
    margin = SATURATION_MARGIN * (high - low)
    x = x.detach()
    return ((x <= low + margin) | (x >= high - margin)).float().mean()


def grad_norms(named_params) -> dict[str, torch.Tensor | None]:
    """L2 norm of each parameter tensor's gradient (None when it got none)."""
    return {name: None if p.grad is None else torch.linalg.vector_norm(p.grad.detach()) for name, p in named_params}


def update_ratios(before: dict[str, torch.Tensor], named_params) -> dict[str, torch.Tensor]:
    """||w_after - w_before|| / ||w_before|| per parameter tensor: ~1e-3 is the usual healthy size.

    Left out for an all-zero tensor (a BatchNorm bias at init), where the ratio has no meaning (it
    printed as 5.7e9 for the first step's biases)."""
    out = {}
    for name, p in named_params:
        if name in before:
            w = before[name]
            norm = torch.linalg.vector_norm(w)
            if norm > 0:
                out[name] = torch.linalg.vector_norm(p.detach() - w) / norm
    return out


def bounds_of(module: nn.Module) -> tuple[float, float] | None:
    for kind, bounds in BOUNDED.items():
        if isinstance(module, kind):
            if isinstance(module, nn.Hardtanh):
                return float(module.min_val), float(module.max_val)
            return bounds
    return None
