"""Lightning's LR finder, plotted into the run folder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.tuner import Tuner

log = logging.getLogger("cifar_shared.lr_finder")


def find_lr(trainer: pl.Trainer, module: pl.LightningModule, datamodule, cfg, plot_path: Path) -> dict:
    """Sweep the LR exponentially for ``cfg.num_steps`` batches; return the suggestion and its range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finder = Tuner(trainer).lr_find(
        module, datamodule=datamodule, min_lr=cfg.min_lr, max_lr=cfg.max_lr,
        num_training=cfg.num_steps, update_attr=False,
    )
    suggestion = finder.suggestion()
    fig = finder.plot(suggest=suggestion is not None, show=False)
    fig.axes[0].set_title(f"LR finder: suggestion {suggestion:.3g}" if suggestion else "LR finder: no suggestion")
    fig.savefig(plot_path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    if suggestion is None:
        log.warning("LR finder found no clear slope; keeping the configured lr")
    else:
        log.info("LR finder suggests lr %.4g (max_lr of the run that follows); plot in %s", suggestion, plot_path)
    return {"suggestion": suggestion, "min_lr": cfg.min_lr, "max_lr": cfg.max_lr, "num_steps": cfg.num_steps}
