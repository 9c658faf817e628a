"""LR finder: Lightning's exponential sweep, read with our own curve and rules.

Lightning runs the sweep (``Tuner.lr_find``: one batch per lr, lr growing exponentially). We record
the raw batch losses ourselves and smooth them with a correctly debiased moving average: the
curve Lightning stores divides by ``1 - beta**(step + 1)`` with a step that starts at 1, which
makes its first points read up to 2x too low, and a "minimum" at the very start of the sweep.

Rules turn the curve into a learning rate; which one fits depends on what the lr is for:
- ``valley`` (for a constant or plateau-scheduled lr): fastai's default since 2021, a point in the
  steepest part of the longest valley of the smoothed curve (its longest decreasing run), half-way
  into that valley's middle third;
- ``onecycle`` (for OneCycle's peak): Leslie Smith's range test bounds the peak by where the loss
  diverges; OneCycle warms up to it and anneals away from it, so the peak sits just inside that
  bound. The pick is ``ONECYCLE_FRACTION`` of the last lr before the smoothed loss rises
  ``DIVERGED`` above its start for good (a loss that turns non-finite has diverged too). Its
  evidence is the divergence, not a dip: a from-scratch ResNet-18's loss barely falls in 100 steps
  (the CIFAR-10 subset: 3 %) but diverges clearly, and the dip's minimum (~5e-3) is a factor 6
  below the best peak of a 1-epoch grid (0.03). No divergence in the sweep: no pick;
- ``min_over_10``: fastai's older rule, a tenth of the lr at the loss minimum;
- ``steepest``: Lightning's, the lr where the smoothed loss falls fastest (first 10 points skipped).
``auto`` (default) picks ``onecycle`` when the run's scheduler is OneCycle, ``valley`` otherwise.
For the other rules, if the loss never falls clearly below where it started (a network that learns
nothing in the sweep's few steps), no pick means anything: the finder says so and keeps the
configured lr.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.tuner import Tuner

from cifar_shared.engine.console import is_terminal

log = logging.getLogger("cifar_shared.lr_finder")

SMOOTH_SPAN = 0.05  # the moving average spans 5 % of the sweep's points
MIN_DROP = 0.05    # the smoothed loss must fall 5 % below its starting level for a pick to count
SKIP_BEGIN = 10    # points the steepest rule ignores at the start (as Lightning's suggestion)
DIVERGED = 0.10   # onecycle rule: the smoothed loss 10 % above its start (and staying there) has diverged
ONECYCLE_FRACTION = 1 / 3  # onecycle rule: the peak as a fraction of the last lr before the divergence
RULES = ("auto", "valley", "onecycle", "min_over_10", "steepest")


def rule_for(rule: str, scheduler_target: str | None) -> str:
    """``auto`` -> ``onecycle`` under a OneCycle scheduler, ``valley`` under any other (or none)."""
    if rule != "auto":
        return rule
    return "onecycle" if scheduler_target and "onecycle" in str(scheduler_target).lower() else "valley"


def valley_index(curve: np.ndarray) -> int:
    """fastai's ``valley``: the longest strictly decreasing subsequence of the curve marks the
    valley; the pick sits in its middle third, half-way in (fastai.callback.schedule.valley). Unlike
    fastai, never before the first point: a short valley from the first point (``[3, 2, 5, 6]``)
    gives index -1 there, which picks the sweep's last and largest lr."""
    n = len(curve)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if curve[i] < curve[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max(0, max_start + int(sections) + int(sections / 2))


def divergence_index(curve: np.ndarray, start: float) -> int | None:
    """The first point from which the smoothed loss stays ``DIVERGED`` above its start to the end of
    the sweep (non-finite counts as above), or None when the sweep ends below that."""
    diverged = ~(curve <= (1 + DIVERGED) * start)  # NaN compares False: diverged
    if not diverged[-1]:
        return None
    below = np.nonzero(~diverged)[0]
    return int(below[-1]) + 1 if len(below) else 0


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
    start = float(np.median(np.asarray(raw_losses, float)[np.isfinite(raw_losses)][: max(3, int(finite.sum()) // 10)]))
    if rule == "onecycle":
        edge = divergence_index(curve, start)
        if edge is None:
            return None, f"the loss never rose {DIVERGED:.0%} above its start for good (no divergence up to lr {lrs_arr[-1]:.3g}; raise lr_find.max_lr)"
        if edge == 0:
            return None, "the loss was above its start from the first step"
        return float(lrs_arr[edge - 1] * ONECYCLE_FRACTION), "ok"
    lrs_arr, curve = lrs_arr[finite], curve[finite]
    if curve.min() > (1 - MIN_DROP) * start:
        return None, f"the loss never fell {MIN_DROP:.0%} below its start ({start:.3g} -> min {curve.min():.3g})"
    if rule == "min_over_10":
        return float(lrs_arr[curve.argmin()] / 10), "ok"
    if rule == "valley":
        return float(lrs_arr[valley_index(curve)]), "ok"
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


def find_lr(trainer: pl.Trainer, module: pl.LightningModule, datamodule, cfg, plot_path: Path,
            scheduler_target: str | None = None) -> dict:
    """Sweep the lr for ``cfg.num_steps`` batches; return the pick, the rule and the curve.
    ``scheduler_target``: the run's scheduler (its ``_target_``), which ``rule: auto`` reads."""
    rule = rule_for(cfg.get("rule", "auto"), scheduler_target)
    # Lightning's sweep runs inside fit, so it also stops at max_epochs: lift that for the sweep,
    # or a small dataset (few batches per epoch) ends the sweep after one epoch.
    max_epochs = trainer.fit_loop.max_epochs
    trainer.fit_loop.max_epochs = max(max_epochs, cfg.num_steps)
    import pytorch_lightning.tuner.lr_finder as lightning_lr_finder

    bar = lightning_lr_finder.tqdm
    if not is_terminal():  # Lightning's sweep draws its own tqdm bar whatever the trainer says
        lightning_lr_finder.tqdm = functools.partial(bar, disable=True)
    try:
        with record_batch_losses(module) as (step_lrs, raw_losses):
            Tuner(trainer).lr_find(
                module, datamodule=datamodule, min_lr=cfg.min_lr, max_lr=cfg.max_lr,
                num_training=cfg.num_steps, update_attr=False,
            )
    finally:
        trainer.fit_loop.max_epochs = max_epochs
        lightning_lr_finder.tqdm = bar
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
        ax.axvline(suggestion, color="C3", linestyle="--", label=f"{rule} rule: {suggestion:.3g}")
        ok = [i for i, c in enumerate(curve) if math.isfinite(c)]
        at = float(np.interp(np.log(suggestion), np.log([lrs[i] for i in ok]), [curve[i] for i in ok]))
        ax.plot([suggestion], [at], "o", color="C3")
    finite = [x for x in raw if math.isfinite(x)]
    if finite:  # a diverging tail would squash the interesting part of the curve
        ax.set_ylim(min(finite) * 0.95, min(max(finite), 2 * float(np.median(finite[:10]))) * 1.05)
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss",
           title=f"LR finder ({rule}): {suggestion:.3g}" if suggestion else "LR finder: no pick")
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
