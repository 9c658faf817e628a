"""The private Lightning/torchmetrics details exact resume relies on (``engine/lightning_internals.py``)
still mean what it assumes: when an upgrade renames or moves one, this fails here, naming it,
instead of a resumed run silently restarting its epoch or its metrics."""

import pytorch_lightning as pl
import torch
from torchmetrics import MeanMetric

from cifar_shared.data.loader import ShardedPermutation, TensorBatchLoader
from cifar_shared.engine.lightning_internals import (
    batches_started,
    fit_loaders,
    metric_accumulators,
    restore_metric,
    saved_loader_states,
)


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(3 * 4 * 4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x.flatten(1)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Probe(pl.Callback):
    """Reads the internals where RunGuard reads them, and saves a checkpoint mid-epoch."""

    def __init__(self, path):
        self.path, self.seen = path, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append((batch_idx, batches_started(trainer), fit_loaders(trainer)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 1:
            trainer.save_checkpoint(self.path)


def test_the_fit_loop_internals_resume_relies_on(tmp_path):
    g = torch.Generator().manual_seed(0)
    loader = TensorBatchLoader(torch.randint(0, 256, (40, 3, 4, 4), dtype=torch.uint8, generator=g), torch.arange(40) % 2,
                               8, [0.5] * 3, [0.25] * 3, ShardedPermutation(40, seed=1))
    probe = _Probe(tmp_path / "mid.ckpt")
    trainer = pl.Trainer(max_epochs=1, callbacks=[probe], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    assert fit_loaders(trainer) is None, "fit_loop._combined_loader: None before fit builds the loaders"
    trainer.fit(_Tiny(), train_dataloaders=loader)
    for batch_idx, started, loaders in probe.seen:
        assert started == batch_idx + 1, "fit_loop.epoch_loop.batch_progress.current.ready: batches started this epoch"
        assert loaders == [loader], "fit_loop._combined_loader.flattened: the training loaders"
    states = saved_loader_states(torch.load(tmp_path / "mid.ckpt", map_location="cpu", weights_only=True))
    assert len(states) == 1 and states[0]["batch"] == 2, \
        f"checkpoint['loops']['fit_loop']['state_dict']['combined_loader']: the loaders' state_dict()s, got {states}"


def test_the_metric_internals_resume_relies_on():
    whole, first, second = MeanMetric(), MeanMetric(), MeanMetric()
    for m, values in ((whole, [1.0, 2.0, 6.0]), (first, [1.0, 2.0]), (second, [10.0])):
        for v in values:
            m.update(torch.tensor(v))
    second.compute()  # a cached result that a restore must drop
    state, count = metric_accumulators(first)
    assert set(state) == {"mean_value", "weight"} and count == 2, "Metric.metric_state / Metric._update_count"
    restore_metric(second, {k: v.clone() for k, v in state.items()}, count)
    assert second.compute() == 1.5, "Metric._computed: a restored metric must recompute"
    second.update(torch.tensor(6.0))
    assert second.compute() == whole.compute() == 3.0
    assert second._update_count == 3
