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
    alive = _alive(x)
    if alive.ndim > 1:
        alive = alive.flatten(1).any(dim=1)
    return (~alive).sum(), alive.numel()


def dead_elements(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(count, elements): every value of one sample's output is an element (C*H*W of an (N, C, H, W)
    output, F of an (N, F) one), dead when zero for every sample of the batch. The original
    project's "12345/1605632": it also sees a channel that fires in some places only."""
    alive = _alive(x)
    return (~alive).sum(), alive.numel()


def _alive(x: torch.Tensor) -> torch.Tensor:
    """Per element of one sample's output: non-zero for at least one sample of the batch."""
    return x.detach().ne(0).any(dim=0)


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


def leaf_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers the statistics are about: every named module with no children, in definition order."""
    return [(name, m) for name, m in net.named_modules() if name and next(m.children(), None) is None]


@torch.no_grad()
def layer_entry(module: nn.Module, output: torch.Tensor) -> dict:
    """A layer output's numbers, still as tensors: a probe keeps them until the step ends, so a
    watched step waits for the GPU once, not once per layer."""
    entry = {"type": type(module).__name__, "shape": list(output.shape), "stats": activation_stats(output)}
    if isinstance(module, DEAD_KINDS):
        entry["dead"], entry["units"] = dead_units(output)
        entry["dead_elements"], entry["elements"] = dead_elements(output)
    elif (bounds := bounds_of(module)) is not None:
        entry["saturated"] = saturated_fraction(output, *bounds)
    return entry


def layer_row(name: str, entry: dict) -> dict:
    """``layer_entry`` as plain numbers: a row of debug.json's ``layers``, and the value per layer
    of ``DebugCNN.forward(x, debug=True)``."""
    lo, hi, mean, std = entry["stats"].tolist()
    row = {"name": name, "type": entry["type"], "shape": entry["shape"], "min": lo, "max": hi, "mean": mean, "std": std}
    if "dead" in entry:
        dead, elements = int(entry["dead"]), int(entry["dead_elements"])
        row.update(dead=dead, units=entry["units"], dead_fraction=dead / entry["units"],
                   dead_elements=elements, elements=entry["elements"], dead_element_fraction=elements / entry["elements"])
    if "saturated" in entry:
        row["saturated"] = float(entry["saturated"])
    return row
