"""Run bookkeeping: metrics.json (per-epoch history + test) and one train.log line per epoch."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

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
        metrics = {k: _number(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/")) or k == "lr"}
        row = {"epoch": trainer.current_epoch + 1, "time_s": round(time.perf_counter() - self._epoch_start, 3), **dict(sorted(metrics.items()))}
        self.history = [r for r in self.history if r["epoch"] != row["epoch"]] + [row]  # an epoch rerun after a kill replaces its row
        log.info(_epoch_line(row, trainer.max_epochs))
        self.write()

    def record(self, key: str, value) -> None:
        self.extra[key] = value
        self.write()

    @rank_zero_only  # under DDP every rank records, one writes
    def write(self) -> None:
        from cifar_shared.engine.resilience import atomic_write

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



def _epoch_line(row: dict, max_epochs: int | None) -> str:
    def part(split: str) -> str:
        loss, acc = row.get(f"{split}/loss"), row.get(f"{split}/acc")
        return f"{split} loss {loss:.4f} acc {acc:.4f}" if loss is not None and acc is not None else f"{split} -"

    lr = row.get("lr")
    lr_text = f"lr {lr:.3g}" if lr is not None else "lr -"
    return f"epoch {row['epoch']}/{max_epochs}  {row['time_s']:.1f}s  {part('train')} | {part('val')} | {lr_text}"
