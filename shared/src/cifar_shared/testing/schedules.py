"""A scheduler's lr step by step, on a one-parameter optimizer: what the scheduler tests compare
against torch's own schedulers and hand formulas."""

from __future__ import annotations

import torch


def one_param_sgd(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def lr_trace(sched_cfg: dict, steps: int) -> list[float]:
    """The lr of each of ``steps`` optimizer steps under a Lightning scheduler dict's scheduler."""
    sched = sched_cfg["scheduler"]
    opt = sched.optimizer
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs
