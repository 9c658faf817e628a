"""LR finder: Lightning's exponential sweep, read with our own curve and rules.

Lightning runs the sweep (``Tuner.lr_find``: one batch per lr, lr growing exponentially). We record
the raw batch losses ourselves and smooth them with a correctly debiased moving average: the
curve Lightning stores divides by ``1 - beta**(step + 1)`` with a step that starts at 1, which
makes its first points read up to 2x too low, and a "minimum" at the very start of the sweep.

Two rules turn the curve into a learning rate:
- ``min_over_10`` (default): fastai's, a tenth of the lr at the loss minimum;
- ``steepest``: Lightning's, the lr where the smoothed loss falls fastest (first 10 points skipped).
If the loss never falls clearly below where it started (a network that learns nothing in the
sweep's few steps), neither pick means anything: the finder says so and keeps the configured lr.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.tuner import Tuner

log = logging.getLogger("cifar_shared.lr_finder")

SMOOTH_SPAN = 0.05  # the moving average spans 5 % of the sweep's points
MIN_DROP = 0.05    # the smoothed loss must fall 5 % below its starting level for a pick to count
SKIP_BEGIN = 10    # points the steepest rule ignores at the start (as Lightning's suggestion)


def smoothing_beta(num_points: int) -> float:
    """EMA factor whose span is ``SMOOTH_SPAN`` of the sweep: fastai's fixed 0.98 (a 50-point span)
    lags a 100-step sweep by half its length and flattens the dip the finder is looking for."""
    span = max(2.0, SMOOTH_SPAN * num_points)
    return 1 - 1 / span


def smooth(losses: list[float], beta: float | None = None) -> list[float]:
    """Exponential moving average, debiased by the number of finite losses seen (NaN stays NaN)."""
    beta = smoothing_beta(len(losses)) if beta is None else beta
    avg, seen, out = 0.0, 0, []
    for loss in losses:
        if not math.isfinite(loss):
            out.append(float("nan"))
            continue
        seen += 1
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**seen))
    return out


def pick_lr(lrs: list[float], raw_losses: list[float], rule: str) -> tuple[float | None, str]:
    """The lr ``rule`` reads off a sweep, or None and the reason when the curve cannot tell."""
    lrs_arr, curve = np.asarray(lrs, float), np.asarray(smooth(raw_losses), float)
    finite = np.isfinite(curve)
    if finite.sum() < 5:
        return None, f"only {int(finite.sum())} finite losses"
    lrs_arr, curve = lrs_arr[finite], curve[finite]
    start = float(np.median(np.asarray(raw_losses, float)[np.isfinite(raw_losses)][: max(3, len(curve) // 10)]))
    if curve.min() > (1 - MIN_DROP) * start:
        return None, f"the loss never fell {MIN_DROP:.0%} below its start ({start:.3g} -> min {curve.min():.3g})"
    if rule == "min_over_10":
        return float(lrs_arr[curve.argmin()] / 10), "ok"
    if len(curve) <= SKIP_BEGIN + 2:
        return None, f"only {len(curve)} points for the steepest rule"
    slope = np.gradient(curve[SKIP_BEGIN:-1], np.log(lrs_arr[SKIP_BEGIN:-1]))
    return float(lrs_arr[SKIP_BEGIN + slope.argmin()]), "ok"


class record_batch_losses:
    """Each optimizer step's lr and loss during the sweep (the mean over its accumulated batches).

    Lightning swaps out the trainer's callbacks for the sweep, so this listens on the module's
    own hooks (instance attributes, removed again on exit). It counts optimizer steps itself:
    Lightning's sweep keeps a point only when ``(batch_idx + 1) % accumulate_grad_batches == 0``,
    which misses the step Lightning takes on an epoch's last, partial accumulation.
    """

    def __init__(self, module: pl.LightningModule):
        self.module, self.losses, self.lrs = module, [], []

    def __enter__(self) -> tuple[list[float], list[float]]:
        module, losses, lrs = self.module, self.losses, self.lrs
        original_end, original_step = module.on_train_batch_end, module.on_before_optimizer_step
        pending: list[float] = []

        def on_before_optimizer_step(optimizer):
            lrs.append(float(optimizer.param_groups[0]["lr"]))  # the lr this step uses
            return original_step(optimizer)

        def on_train_batch_end(outputs, batch, batch_idx):
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            pending.append(float(loss) if loss is not None else float("nan"))
            if len(lrs) > len(losses):  # this batch ended with an optimizer step
                losses.append(sum(pending) / len(pending))
                pending.clear()
            return original_end(outputs, batch, batch_idx)

        module.on_train_batch_end = on_train_batch_end
        module.on_before_optimizer_step = on_before_optimizer_step
        return lrs, losses

    def __exit__(self, *exc) -> None:
        del self.module.on_train_batch_end
        del self.module.on_before_optimizer_step


def find_lr(trainer: pl.Trainer, module: pl.LightningModule, datamodule, cfg, plot_path: Path) -> dict:
    """Sweep the lr for ``cfg.num_steps`` batches; return the pick, the rule and the curve."""
    rule = cfg.get("rule", "min_over_10")
    # Lightning's sweep runs inside fit, so it also stops at max_epochs: lift that for the sweep,
    # or a small dataset (few batches per epoch) ends the sweep after one epoch.
    max_epochs = trainer.fit_loop.max_epochs
    trainer.fit_loop.max_epochs = max(max_epochs, cfg.num_steps)
    try:
        with record_batch_losses(module) as (step_lrs, raw_losses):
            Tuner(trainer).lr_find(
                module, datamodule=datamodule, min_lr=cfg.min_lr, max_lr=cfg.max_lr,
                num_training=cfg.num_steps, update_attr=False,
            )
    finally:
        trainer.fit_loop.max_epochs = max_epochs
    n = min(len(step_lrs), len(raw_losses))
    lrs, raw = step_lrs[:n], raw_losses[:n]
    suggestion, why = pick_lr(lrs, raw, rule)
    curve = smooth(raw)
    plot_sweep(lrs, raw, curve, suggestion, rule, plot_path)
    if suggestion is None:
        log.warning("LR finder: no pick (%s in %d steps); keeping the configured lr. More steps "
                    "(lr_find.num_steps) or a look at %s may help", why, n, plot_path)
    else:
        log.info("LR finder (%s rule) picks lr %.4g for the run that follows; check the curve in %s", rule, suggestion, plot_path)
    return {
        "suggestion": suggestion, "rule": rule, "min_lr": cfg.min_lr, "max_lr": cfg.max_lr, "num_steps": cfg.num_steps,
        "lr": lrs, "loss": curve, "raw_loss": raw,
    }


def plot_sweep(lrs: list[float], raw: list[float], curve: list[float], suggestion: float | None, rule: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, raw, color="0.75", linewidth=0.8, label="batch loss")
    ax.plot(lrs, curve, color="C0", label=f"smoothed (beta {smoothing_beta(len(raw)):.2f})")
    if suggestion is not None:
        ax.axvline(suggestion, color="C3", linestyle="--", label=f"{rule}: {suggestion:.3g}")
    finite = [x for x in raw if math.isfinite(x)]
    if finite:  # a diverging tail would squash the interesting part of the curve
        ax.set_ylim(min(finite) * 0.95, min(max(finite), 2 * float(np.median(finite[:10]))) * 1.05)
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss",
           title=f"LR finder ({rule}): {suggestion:.3g}" if suggestion else "LR finder: no pick")
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
