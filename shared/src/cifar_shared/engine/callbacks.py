"""Run bookkeeping: metrics.json (per-epoch history + test) and one train.log line per epoch."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from cifar_shared.engine.module import epoch_end_lr

log = logging.getLogger("cifar_shared.run")


def _number(v) -> float:
    v = float(v)
    return v if math.isfinite(v) else None


class RunRecorder(pl.Callback):
    """Keeps the history in its state, so it is saved in checkpoints and restored on resume."""

    def __init__(self, path: str | Path, classes: list[str]):
        self.path = Path(path)
        self.history: list[dict] = []
        self.extra: dict = {"classes": classes}
        self._epoch_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        metrics = {k: _number(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
        if trainer.optimizers:  # read here: the module logs it after this hook (Lightning calls callbacks first)
            metrics["lr"] = epoch_end_lr(trainer)
        row = {"epoch": trainer.current_epoch + 1, "time_s": round(time.perf_counter() - self._epoch_start, 3), **dict(sorted(metrics.items()))}
        self.history = [r for r in self.history if r["epoch"] != row["epoch"]] + [row]  # an epoch rerun after a kill replaces its row
        log.info(_epoch_line(row, trainer.max_epochs))
        self.write()

    def record(self, key: str, value) -> None:
        self.extra[key] = value
        self.write()

    @rank_zero_only  # under DDP every rank records, one writes
    def write(self) -> None:
        from cifar_shared.engine.atomic import atomic_write

        atomic_write(self.path, json.dumps({**self.extra, "history": self.history}, indent=2).encode())

    def load_state_dict(self, state):
        """Merge, never shrink: testing the best checkpoint (or any restore) hands back an older
        history; rows this recorder already holds win, rows it lacks (a resumed run) come back."""
        rows = {r["epoch"]: r for r in state.get("history", [])}
        rows.update({r["epoch"]: r for r in self.history})
        self.history = [rows[e] for e in sorted(rows)]
        self.extra = {**state.get("extra", {}), **self.extra}

    def state_dict(self):
        return {"history": self.history, "extra": self.extra}


class TimeToAccuracy(pl.Callback):
    """The speedrun clock (``callbacks.extra.time_to_accuracy``, set by ``experiment=speedrun``).

    After every training epoch it measures test accuracy and records, in metrics.json under
    ``time_to_accuracy``, the training time at which each target was first reached. The clock
    starts when training starts (torch.compile's first-step compilation included) and leaves out
    its own test passes; the GPU is synchronized at each reading, so queued work is counted.
    """

    def __init__(self, targets: list[float] = (0.93, 0.94, 0.95)):
        self.targets = sorted(float(t) for t in targets)
        self.reached: dict[str, float] = {}
        self.curve: list[dict] = []
        self.train_s = 0.0  # training time before this process (a resumed run)
        self._start = 0.0
        self._loader = None

    def on_train_start(self, trainer, pl_module):
        self._loader = trainer.datamodule.test_dataloader()
        self._start = self._now(pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        self.train_s += self._now(pl_module) - self._start
        acc = self.test_accuracy(trainer, pl_module)
        self.curve.append({"epoch": trainer.current_epoch + 1, "train_s": round(self.train_s, 3), "test_acc": round(acc, 4)})
        for t in self.targets:
            if acc >= t and f"{t:.2f}" not in self.reached:
                self.reached[f"{t:.2f}"] = round(self.train_s, 3)
        log.info("epoch %d: test acc %.4f after %.2f s of training%s", trainer.current_epoch + 1, acc, self.train_s,
                 "".join(f"; {k} reached at {v:.2f} s" for k, v in self.reached.items() if v == round(self.train_s, 3)))
        for cb in trainer.callbacks:
            if isinstance(cb, RunRecorder):
                cb.record("time_to_accuracy", {"targets": self.reached, "curve": self.curve, "device": _device_name(pl_module)})
        self._start = self._now(pl_module)

    @torch.no_grad()
    def test_accuracy(self, trainer, pl_module) -> float:
        net = pl_module.net
        was_training = net.training
        net.eval()
        correct, total = torch.zeros((), dtype=torch.long, device=pl_module.device), 0
        try:  # eager: no second compilation for eval mode
            with trainer.precision_plugin.forward_context(), torch.compiler.set_stance("force_eager"):
                for x, y in self._loader:
                    correct += (net(x).argmax(-1) == y).sum()
                    total += y.numel()
        finally:
            net.train(was_training)
        return correct.item() / max(1, total)

    @staticmethod
    def _now(pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def state_dict(self):
        return {"reached": self.reached, "curve": self.curve, "train_s": self.train_s}

    def load_state_dict(self, state):
        self.reached, self.curve, self.train_s = dict(state["reached"]), list(state["curve"]), float(state["train_s"])


def _device_name(pl_module) -> str:
    if pl_module.device.type == "cuda":
        return torch.cuda.get_device_name(pl_module.device)
    return str(pl_module.device)


def _epoch_line(row: dict, max_epochs: int | None) -> str:
    def part(split: str) -> str:
        loss, acc = row.get(f"{split}/loss"), row.get(f"{split}/acc")
        return f"{split} loss {loss:.4f} acc {acc:.4f}" if loss is not None and acc is not None else f"{split} -"

    lr = row.get("lr")
    lr_text = f"lr {lr:.3g}" if lr is not None else "lr -"
    return f"epoch {row['epoch']}/{max_epochs}  {row['time_s']:.1f}s  {part('train')} | {part('val')} | {lr_text}"
