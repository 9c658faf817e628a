"""``debugcnn-bench``: what the probes cost, at their default cadence, against no probes.

One training run (the debugcnn config, synthetic data by default) whose epochs alternate between
probes on and probes off, so machine load hits both sides alike. Reported: the mean training step
time of each side (start-to-start of consecutive batches, so a watched step's table, TensorBoard
writes and hooks are inside it) and the epoch time (which also holds the epoch-end figures,
``debug.json`` and, in the probes' epochs, the watched validation batch), and their ratios.

At the default cadence the probes run code in one step per epoch (the first); the other steps
have no hook. Their on/off difference is the epochs' drift, which can be larger than the probes'
cost, so the bench also prints the ratio from the first steps alone: an epoch's steps with probes
cost (off-epoch steps + first step on - first step off) / off-epoch steps.

    uv run debugcnn-bench                      # synthetic, 3,728 images (the subset's training split)
    uv run debugcnn-bench --epochs 9 data=cifar10 data.root=../shared/data/cifar10-subset data.download=false
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import pytorch_lightning as pl

from cifar_shared.bench import timer


class Alternate(pl.Callback):
    """Turns the probes on in even epochs and off in odd ones; times steps and epochs of each."""

    def __init__(self, probes):
        self.probes = probes
        self.steps = {True: [], False: []}
        self.first_steps = {True: [], False: []}  # each timed epoch's first step (the watched one when on)
        self.epochs = {True: [], False: []}
        self._last = self._epoch_start = None
        self._last_idx = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._close_epoch(trainer)
        self.probes.enabled = trainer.current_epoch % 2 == 0
        self._last, self._epoch_start = None, timer.now(pl_module.device)

    def on_train_end(self, trainer, pl_module):
        self._close_epoch(trainer, ended=True)

    def _close_epoch(self, trainer, ended: bool = False) -> None:
        """An epoch runs from its start to the next one's: steps, validation and epoch-end work."""
        finished = trainer.current_epoch - (0 if ended else 1)
        if self._epoch_start is not None and finished > 1:
            self.epochs[self.probes.enabled].append(timer.now(trainer.strategy.root_device) - self._epoch_start)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._close_step(trainer)
        self._last, self._last_idx = timer.now(pl_module.device), batch_idx

    def on_validation_epoch_start(self, trainer, pl_module):  # closes the epoch's last step
        self._close_step(trainer)
        self._last = None

    def _close_step(self, trainer) -> None:
        if self._last is not None and trainer.current_epoch > 1:  # epochs 0 and 1: warm-up, one of each
            took = timer.now(trainer.strategy.root_device) - self._last
            self.steps[self.probes.enabled].append(took)
            if self._last_idx == 0:
                self.first_steps[self.probes.enabled].append(took)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="total epochs (the first two are warm-up, one of each); even count")
    parser.add_argument("overrides", nargs="*", help="debugcnn config overrides")
    args = parser.parse_args(argv)

    import logging
    from pathlib import Path

    import torch
    from omegaconf import open_dict

    from cifar_debugcnn.probes import LayerProbes
    from cifar_shared.data.datamodule import ImageDataModule
    from cifar_shared.engine.callbacks import RunRecorder
    from cifar_shared.engine.cli import compose_config, fail, one_line
    from cifar_shared.engine.train import build_module, build_trainer, setup_logging

    # synthetic data the size of the real subset, unless the overrides pick a data source
    data = [] if any(o.startswith("data=") for o in args.overrides) else ["data=synthetic", "data.train_size=4660", "data.test_size=10"]
    try:
        cfg = compose_config("cifar_debugcnn.conf", [*data, *args.overrides, f"epochs={args.epochs}", "data.val_fraction=0.2"])
    except Exception as e:  # Hydra's composition errors: one line, exit 2
        fail(one_line(e))
    if not (cfg.callbacks.get("extra") or {}).get("probes"):
        fail("error: debugcnn-bench measures the probes: leave callbacks.extra.probes on")
    setup_logging(Path(tempfile.mkdtemp(prefix="debugcnn-bench-")) / "bench.log")  # debugcnn-train's quiet console
    pl.seed_everything(cfg.seed, verbose=False)
    dm = ImageDataModule(cfg.data, cfg.augment, cfg.batch_size, cfg.seed)
    module = build_module(cfg, dm.num_classes)  # debugcnn-train's module, scheduler included
    timer = Alternate(None)
    quiet = [logging.getLogger("cifar_debugcnn"), logging.getLogger("cifar_shared.run")]  # no tables, no epoch lines
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as out, open_dict(cfg):
            # debugcnn-train's trainer (its loggers, checkpoints, probes), in a folder thrown away after
            cfg.output_dir, cfg.checkpoint_dir = out, str(Path(out) / "checkpoints")
            cfg.callbacks.extra.probes.table = True
            cfg.callbacks.early_stopping = None  # every epoch is timed
            cfg.trainer.limit_val_batches = 1  # the watched validation batch, not a whole pass
            cfg.trainer.num_sanity_val_steps = 0
            cfg.trainer.accelerator = "cpu"
            cfg.trainer.enable_progress_bar = False
            trainer = build_trainer(cfg, RunRecorder(Path(out) / "metrics.json", dm.classes), extra=[timer])
            timer.probes = next(c for c in trainer.callbacks if isinstance(c, LayerProbes))
            trainer.fit(module, datamodule=dm)
            watched = len(timer.probes.steps)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)  # a caller's logging (tests in one process) stays as it was
    on, off = timer.steps[True], timer.steps[False]
    step_on, step_off = statistics.mean(on), statistics.mean(off)
    epoch_on, epoch_off = statistics.mean(timer.epochs[True]), statistics.mean(timer.epochs[False])
    print(f"debugcnn probes, every_n_steps={cfg.callbacks.extra.probes.every_n_steps} (0: first batch of each epoch); "
          f"{len(dm.train_set)} train images {dm.image_shape[-1]} px, batch {cfg.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"epochs timed: {len(timer.epochs[True])} with probes, {len(timer.epochs[False])} without, interleaved; {watched} watched steps in all")
    print(f"step time  with probes {step_on * 1000:8.1f} ms   without {step_off * 1000:8.1f} ms   ratio {step_on / step_off:.3f}  ({len(on)} / {len(off)} steps)")
    print(f"epoch time with probes {epoch_on:8.2f} s    without {epoch_off:8.2f} s    ratio {epoch_on / epoch_off:.3f}  (epoch-end figures + debug.json included)")
    first_on, first_off = statistics.mean(timer.first_steps[True]), statistics.mean(timer.first_steps[False])
    per_epoch_off = step_off * len(off) / len(timer.first_steps[False])
    print(f"first step with probes {first_on * 1000:8.1f} ms   without {first_off * 1000:8.1f} ms   "
          f"step-time ratio from them {(per_epoch_off + first_on - first_off) / per_epoch_off:.3f}  "
          f"(the other steps run no probe code)")


if __name__ == "__main__":
    main()
