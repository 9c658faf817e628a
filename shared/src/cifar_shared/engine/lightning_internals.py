"""Every private detail of Lightning and torchmetrics that exact resume relies on, in one place.

None of these is public API; an upgrade may rename them. ``shared/tests/test_lightning_internals.py``
exercises each against the installed versions and fails, naming the one that changed, when an
upgrade breaks it: fix it here, nowhere else.
"""

from __future__ import annotations

from torchmetrics import Metric


def fit_loaders(trainer) -> list | None:
    """The training loaders the fit loop iterates this epoch (None before it has built them)."""
    combined = trainer.fit_loop._combined_loader
    return None if combined is None else list(combined.flattened)


def saved_loader_states(checkpoint: dict) -> list:
    """The loaders' ``state_dict()``s Lightning stored in a checkpoint, in ``fit_loaders`` order."""
    return checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader", [])


def batches_started(trainer) -> int:
    """Training batches started in this epoch so far (the current one included)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.ready


def metric_accumulators(metric: Metric) -> tuple[dict, int]:
    """A metric's accumulated states and how many updates went into them."""
    return metric.metric_state, metric._update_count


def restore_metric(metric: Metric, state: dict, count: int) -> None:
    """Put back what ``metric_accumulators`` returned; the next ``compute()`` recomputes."""
    for k, v in state.items():
        setattr(metric, k, v)
    metric._update_count = count
    metric._computed = None
