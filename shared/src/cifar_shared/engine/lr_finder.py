"""Lightning's LR finder, plotted into the run folder.

Two rules turn the loss-vs-LR curve into a learning rate:
- ``steepest``: Lightning's suggestion, the LR where the (smoothed) loss falls fastest;
- ``min_over_10``: fastai's rule, a tenth of the LR at the loss minimum. On short, noisy sweeps
  (small data, big models) it is the more robust of the two: the steepest point often sits at the
  very start of the sweep, before anything was learned.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.tuner import Tuner

log = logging.getLogger("cifar_shared.lr_finder")

RULES = ("steepest", "min_over_10")


def lr_at_min_over_10(lrs: list[float], losses: list[float]) -> float | None:
    """fastai's rule: a tenth of the LR at the lowest (smoothed) loss; None for a curve too short to tell."""
    points = [(lr, loss) for lr, loss in zip(lrs, losses) if math.isfinite(loss)]
    if len(points) < 3:
        return None
    return min(points, key=lambda p: p[1])[0] / 10


def find_lr(trainer: pl.Trainer, module: pl.LightningModule, datamodule, cfg, plot_path: Path) -> dict:
    """Sweep the LR exponentially for ``cfg.num_steps`` batches; return the pick, the rule and the curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rule = cfg.get("rule", "steepest")
    # Lightning's finder runs inside fit, so it also stops at max_epochs: lift that for the sweep,
    # or a small dataset (few batches per epoch) ends the sweep after one epoch.
    max_epochs = trainer.fit_loop.max_epochs
    trainer.fit_loop.max_epochs = max(max_epochs, cfg.num_steps)
    try:
        finder = Tuner(trainer).lr_find(
            module, datamodule=datamodule, min_lr=cfg.min_lr, max_lr=cfg.max_lr,
            num_training=cfg.num_steps, update_attr=False,
        )
    finally:
        trainer.fit_loop.max_epochs = max_epochs
    lrs, losses = finder.results["lr"], finder.results["loss"]
    suggestion = finder.suggestion() if rule == "steepest" else lr_at_min_over_10(lrs, losses)

    fig = finder.plot(suggest=False, show=False)
    ax = fig.axes[0]
    if suggestion is not None:
        ax.axvline(suggestion, color="red", linestyle="--", label=f"{rule}: {suggestion:.3g}")
        ax.legend()
    ax.set_title(f"LR finder ({rule}): {suggestion:.3g}" if suggestion else "LR finder: no suggestion")
    fig.savefig(plot_path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    if suggestion is None:
        log.warning("LR finder: too few finite losses in %d steps to suggest an lr; keeping the configured lr (more data or lr_find.num_steps)", len(lrs))
    else:
        log.info("LR finder (%s rule) picks lr %.4g for the run that follows; check the curve in %s", rule, suggestion, plot_path)
    return {
        "suggestion": suggestion, "rule": rule, "min_lr": cfg.min_lr, "max_lr": cfg.max_lr, "num_steps": cfg.num_steps,
        "lr": [float(x) for x in lrs], "loss": [float(x) for x in losses],
    }
