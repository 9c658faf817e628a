"""The callback that makes a run survive Ctrl-C, SIGTERM and NaN, and resume exactly.

``RunGuard`` puts into each checkpoint what the rest of the run depends on besides weights and
optimizer (RNG states, the epoch's metric accumulators, the lr the epoch started with, the run
name), restores it on resume, saves mid-epoch checkpoints every ``every_n_minutes`` and on
SIGINT/SIGTERM (then exits 130/143 with a resume line), and stops at the first non-finite loss.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torchmetrics import Metric

from cifar_shared.engine.lightning_internals import (
    batches_started,
    fit_loaders,
    saved_loader_states,
)
from cifar_shared.engine.run_state import (
    load_metric_states,
    metric_states,
    rng_states,
    set_rng_states,
)
from cifar_shared.errors import UserError

log = logging.getLogger("cifar_shared.guard")


def nonfinite_weights(module: torch.nn.Module) -> list[str]:
    """Parameters and buffers (BatchNorm statistics) that hold NaN/inf; metric states (a max that
    starts at -inf) are not weights."""
    metric_prefixes = tuple(f"{n}." for n, m in module.named_modules() if isinstance(m, Metric) and n)
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [k for k, v in tensors if v.is_floating_point() and not k.startswith(metric_prefixes) and not torch.isfinite(v).all()]


class Interrupted(SystemExit):
    """Raised after the interrupt checkpoint is saved; exit status 128 + signal number.

    ``train()`` hands the caller its own signal handlers back (a notebook's Ctrl-C still interrupts
    its next cell). A process that exits on this calls ``exiting()`` first (the CLI does), so that a
    late copy of the signal cannot kill it on the way out.
    """

    def __init__(self, signum: int, signalled_at: float):
        super().__init__(128 + signum)
        self.signum, self.signalled_at = signum, signalled_at

    def exiting(self) -> None:
        signal.signal(self.signum, self._on_signal_while_exiting)
        # At shutdown CPython puts SIG_DFL back wherever Python set a handler, unless that handler
        # is SIG_IGN: a copy landing then would kill the process (status -2, not 130). The last
        # exit hooks (log flushes) run with the signal ignored; registered last, this runs first.
        atexit.register(signal.signal, self.signum, signal.SIG_IGN)

    def _on_signal_while_exiting(self, signum, frame) -> None:
        """The checkpoint is saved and the resume line printed: a late copy of the interrupt is
        ignored, a real second one ends the exit at once, with the same status (nothing is lost)."""
        if time.monotonic() - self.signalled_at >= RunGuard.REPEAT_WINDOW_S:
            os._exit(128 + signum)


class _DropRepeat:
    """The caller's handler back after an interrupt, behind a filter that drops a copy of that
    interrupt arriving within the repeat window (``uv run`` forwards Ctrl-C to a group that got it
    too); any later signal goes to the caller's handler as before."""

    def __init__(self, handler, guard: RunGuard):
        self.handler, self.guard = handler, guard

    def __call__(self, signum, frame) -> None:
        if time.monotonic() - self.guard._signalled_at < self.guard.REPEAT_WINDOW_S:
            return
        if callable(self.handler):
            self.handler(signum, frame)
        elif self.handler != signal.SIG_IGN:  # SIG_DFL (or a handler set outside Python): the default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


class RunGuard(pl.Callback):
    """Checkpoint contents for exact resume, mid-epoch saves, Ctrl-C/SIGTERM and the NaN stop.

    A mid-epoch checkpoint is ``last.ckpt`` saved after a training batch; Lightning records the
    batch position, the ``TensorBatchLoader`` its place in the epoch's permutation, this callback
    the rest. Loaders without ``state_dict`` (the per-sample pipeline) get no mid-epoch saves.
    """

    KEY = "cifar_run"
    CHECK_EVERY = 50  # GPU steps between looks at the non-finite-loss flag
    REPEAT_WINDOW_S = 1.0  # the same signal again within this is one interrupt delivered twice, not a second
    defer_check: bool | None = None  # None: deferred on GPUs, at once on CPU (tests force either)

    def __init__(self, checkpoint_dir: str | Path, run_name: str, every_n_minutes: float | None = 10, recorder=None):
        self.last = Path(checkpoint_dir) / "last.ckpt"
        self.run_name, self.recorder = run_name, recorder
        self.every_s = None if not every_n_minutes else float(every_n_minutes) * 60
        self.signum: int | None = None
        self._signalled_at = 0.0
        self._restore: dict | None = None
        self._mid_epoch = False
        self._replay = False
        self._epoch_lrs: list[float] = []
        self._last_save = time.monotonic()
        self._old_handlers: dict = {}
        self._nonfinite: torch.Tensor | None = None  # GPU: first non-finite (loss, step, lr), step -1 while none
        self._unchecked = 0

    # signals ---------------------------------------------------------------------------------
    def install_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            old = signal.signal(sig, self._on_signal)
            self._old_handlers[sig] = old.handler if isinstance(old, _DropRepeat) else old  # an earlier run's filter

    def restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            # after an interrupt, a copy of it may still be on its way: the caller's handler stays behind a filter
            signal.signal(sig, _DropRepeat(handler, self) if sig == self.signum else handler)
        self._old_handlers = {}

    def _on_signal(self, signum, frame) -> None:
        now = time.monotonic()
        if self.signum is not None:
            if signum == self.signum and now - self._signalled_at < self.REPEAT_WINDOW_S:
                return  # the same interrupt delivered twice (`uv run` forwards it to a group that got it too)
            # a second Ctrl-C: stop now; every file on disk is whole
            print("interrupted again: stopping now; run the same command to resume from the last checkpoint", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum, self._signalled_at = signum, now

    def exit_interrupted(self, epoch: int, step: int) -> None:
        print(f"interrupted at epoch {epoch} step {step}; run the same command to resume", file=sys.stderr, flush=True)
        # a copy of the signal that a long save held back counts from here (its Python handler runs
        # only when the interpreter gets back from the save's C code)
        self._signalled_at = time.monotonic()
        log.info("interrupted at epoch %d step %d (signal %d)", epoch, step, self.signum)
        raise Interrupted(self.signum, self._signalled_at)

    # checkpoint contents ---------------------------------------------------------------------
    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        bad = nonfinite_weights(pl_module)
        if bad:  # raised before the checkpoint is written: the last good one stays
            if self.recorder is not None:
                self.recorder.record("stopped", {"reason": "non-finite weights", "tensor": bad[0], "epoch": trainer.current_epoch + 1})
            raise UserError(f"the model's weights are not finite ({bad[0]}) at epoch {trainer.current_epoch + 1}: not saving it; "
                            "the run diverged: lower lr or set trainer.gradient_clip_val=1.0")
        state = {"name": self.run_name, "rng": rng_states(), "mid_epoch": self._mid_epoch}
        if self._mid_epoch:
            state["metrics"] = metric_states(pl_module)
            state["epoch_lrs"] = self._epoch_lrs
        checkpoint[self.KEY] = state

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._restore = checkpoint.get(self.KEY)
        if self._restore:
            self._restore["loaders"] = saved_loader_states(checkpoint)

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_save = time.monotonic()
        state, self._restore = self._restore, None
        if not state:
            return
        set_rng_states(state["rng"])
        if state.get("mid_epoch"):
            # Lightning hands loaders their state only if it builds them after the restore; a
            # scheduler that asks for estimated_stepping_batches builds them before: do it here
            # (the epoch's iterator has not started yet, so it starts at the saved batch)
            loaders = [dl for dl in fit_loaders(trainer) or [] if hasattr(dl, "load_state_dict")]
            for dl, loader_state in zip(loaders, state["loaders"]):
                dl.load_state_dict(loader_state)
            load_metric_states(pl_module, state["metrics"])
            self._epoch_lrs = state["epoch_lrs"]
            self._replay = True

    # training --------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_lrs = [g["lr"] for g in trainer.optimizers[0].param_groups] if trainer.optimizers else []
        if self.signum is not None:  # arrived during validation: last.ckpt now holds the epoch end
            self.exit_interrupted(trainer.current_epoch + 1, 0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._replay:  # Lightning skips on_train_epoch_start when it resumes mid-epoch: replay it with the epoch's lr
            self._replay = False
            groups = trainer.optimizers[0].param_groups
            now = [g["lr"] for g in groups]
            for g, lr in zip(groups, self._epoch_lrs):
                g["lr"] = lr
            pl_module.on_train_epoch_start()
            for g, lr in zip(groups, now):
                g["lr"] = lr

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        loss = loss.detach()
        step = batches_started(trainer)
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        deferred = loss.device.type != "cpu" if self.defer_check is None else self.defer_check
        if not deferred:  # on CPU reading it back costs nothing: stop before this step's update
            if not torch.isfinite(loss).all():
                self._diverged(trainer, float(loss), step, lr)
            return
        # On a GPU, reading the loss back every step would stall the queue of kernels: keep the first
        # non-finite loss on the device and look every CHECK_EVERY steps and before every checkpoint.
        if self._nonfinite is None:
            self._nonfinite = torch.tensor([0.0, -1.0, 0.0], device=loss.device)  # loss, step, lr
        kept = self._nonfinite
        first = ~torch.isfinite(loss).all() & (kept[1] < 0)
        # python numbers go into the kernels as arguments: no host-to-device copy either
        self._nonfinite = torch.stack([torch.where(first, loss.float().reshape(()), kept[0]),
                                       torch.where(first, float(step), kept[1]), torch.where(first, float(lr), kept[2])])
        self._unchecked += 1
        if self._unchecked >= self.CHECK_EVERY:
            self.check_finite(trainer)

    def check_finite(self, trainer) -> None:
        """Raise if a loss since the last look was not finite (one GPU sync; nothing to do on CPU)."""
        self._unchecked = 0
        if self._nonfinite is None:
            return
        loss, step, lr = self._nonfinite.tolist()
        if step >= 0:
            self._diverged(trainer, loss, int(step), lr)

    def _diverged(self, trainer, loss: float, step: int, lr: float) -> None:
        epoch = trainer.current_epoch + 1
        if self.recorder is not None:
            self.recorder.record("stopped", {"reason": "non-finite loss", "loss": str(loss), "epoch": epoch, "step": step, "lr": lr})
        raise UserError(f"loss is {loss} at epoch {epoch} step {step} (lr {lr:.3g}): the run diverged and stopped; "
                        f"try a lower lr (e.g. lr={lr / 10:.3g}), a warm-up (scheduler=cosine) or trainer.gradient_clip_val=1.0; "
                        "no checkpoint holds the diverged model")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            return  # the epoch-end checkpoint follows validation; a signal exits at the next epoch start
        due = self.every_s is not None and time.monotonic() - self._last_save >= self.every_s
        signalled = self.signum is not None
        if trainer.world_size > 1:  # saving is collective: every rank must decide alike, at the same batch
            due = trainer.strategy.broadcast(due, src=0)
            signalled = trainer.strategy.reduce_boolean_decision(signalled, all=False)
            if signalled and self.signum is None:
                self.signum = signal.SIGTERM
        if (due or signalled) and self._resumable(trainer):
            self.check_finite(trainer)
            self._mid_epoch = True
            try:
                trainer.save_checkpoint(self.last, weights_only=False)  # the whole state: a resume needs it (and Lightning logs a note when unset)
            finally:
                self._mid_epoch = False
            self._last_save = time.monotonic()
        if signalled:
            self.exit_interrupted(trainer.current_epoch + 1, batch_idx + 1)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.check_finite(trainer)  # before ModelCheckpoint saves last.ckpt (Lightning runs it after other callbacks)
        self._last_save = time.monotonic()

    @staticmethod
    def _resumable(trainer) -> bool:
        loaders = fit_loaders(trainer)
        return loaders is not None and all(hasattr(dl, "state_dict") and hasattr(dl, "load_state_dict") for dl in loaders)

