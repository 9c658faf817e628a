"""LR schedulers from config, as Lightning scheduler dicts.

Each factory is told the step counts explicitly (as timm's schedulers are) and says whether it
steps per batch or per epoch, so the module needs no special cases.
"""

from __future__ import annotations

from torch.optim import lr_scheduler as S


def plateau(optimizer, total_steps: int, steps_per_epoch: int, factor: float = 0.1, patience: int = 2, monitor: str = "val/loss", mode: str = "min"):
    sched = S.ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience)
    return {"scheduler": sched, "interval": "epoch", "monitor": monitor}


def _with_warmup(optimizer, warmup_steps: int, main: S.LRScheduler, start_factor: float):
    if warmup_steps <= 0:
        return main
    warmup = S.LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps)
    return S.SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


def cosine(optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0, min_lr: float = 0.0, warmup_start_factor: float = 0.01):
    """Linear warmup, then cosine decay to ``min_lr`` over the remaining steps; stepped per batch."""
    warmup = int(round(warmup_epochs * steps_per_epoch))
    main = S.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=min_lr)
    return {"scheduler": _with_warmup(optimizer, warmup, main, warmup_start_factor), "interval": "step"}


def step(optimizer, total_steps: int, steps_per_epoch: int, step_epochs: float = 30, gamma: float = 0.1, warmup_epochs: float = 0.0, warmup_start_factor: float = 0.01):
    """Linear warmup, then multiply the LR by ``gamma`` every ``step_epochs``; stepped per batch."""
    warmup = int(round(warmup_epochs * steps_per_epoch))
    main = S.StepLR(optimizer, step_size=max(1, int(round(step_epochs * steps_per_epoch))), gamma=gamma)
    return {"scheduler": _with_warmup(optimizer, warmup, main, warmup_start_factor), "interval": "step"}


def onecycle(optimizer, total_steps: int, steps_per_epoch: int, max_lr: float | None = None, pct_start: float = 0.3, anneal_strategy: str = "cos", div_factor: float = 25.0, final_div_factor: float = 1e4):
    """OneCycle peaking at ``max_lr`` (default: the optimizer's lr, e.g. the LR finder's pick)."""
    peak = max_lr if max_lr is not None else optimizer.param_groups[0]["lr"]
    sched = S.OneCycleLR(
        optimizer, max_lr=peak, total_steps=total_steps, pct_start=pct_start,
        anneal_strategy=anneal_strategy, div_factor=div_factor, final_div_factor=final_div_factor,
    )
    return {"scheduler": sched, "interval": "step"}


def constant(optimizer, total_steps: int, steps_per_epoch: int):
    return {"scheduler": S.LambdaLR(optimizer, lambda _: 1.0), "interval": "epoch"}


__all__ = ["plateau", "cosine", "step", "onecycle", "constant"]
