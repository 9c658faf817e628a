"""What a checkpoint must hold besides weights and optimizer for a resumed run to continue exactly
as an unbroken one: the RNG states and the epoch's metric accumulators (plain types and tensors
only, so checkpoints load with ``weights_only=True``)."""

from __future__ import annotations

import random

import numpy as np
import torch
from torchmetrics import Metric

from cifar_shared.engine.lightning_internals import metric_accumulators, restore_metric


def rng_states() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # plain types: checkpoints load with weights_only=True
    states = {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss], "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def metric_states(module: torch.nn.Module) -> dict:
    """The accumulators of every torchmetrics ``Metric`` in the module (train/loss, train/acc, ...)."""
    def copy(v):
        return v.detach().clone().cpu() if torch.is_tensor(v) else [t.detach().clone().cpu() for t in v]

    states = {}
    for name, m in module.named_modules():
        if isinstance(m, Metric):
            state, count = metric_accumulators(m)
            states[name] = {"state": {k: copy(v) for k, v in state.items()}, "count": count}
    return states


def load_metric_states(module: torch.nn.Module, states: dict) -> None:
    for name, m in module.named_modules():
        if isinstance(m, Metric) and name in states:
            device = m.device
            state = {k: v.to(device) if torch.is_tensor(v) else [t.to(device) for t in v] for k, v in states[name]["state"].items()}
            restore_metric(m, state, states[name]["count"])
