"""The LightningModule every package trains with: the package only supplies the network."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from cifar_shared.engine.metrics import classification_metrics


class ClassificationModule(pl.LightningModule):
    """Cross-entropy classifier; optimizer and scheduler come in as factories built from config."""

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., dict] | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
    ):
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.num_classes = num_classes
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.label_smoothing = label_smoothing
        self.train_metrics = classification_metrics(num_classes, "train/")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.test_metrics = classification_metrics(num_classes, "test/")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # survives resume
        self.test_confusion = MulticlassConfusionMatrix(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, metrics, loss_metric, split: str, smoothing: float) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        loss_metric.update(loss.detach(), weight=y.shape[0])
        metrics.update(logits.detach(), y)
        self.log(f"{split}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=y.shape[0])
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=y.shape[0])
        if split == "test":
            self.test_confusion.update(logits.detach(), y)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, self.train_metrics, self.train_loss, "train", self.label_smoothing)

    def validation_step(self, batch, batch_idx):
        self._step(batch, self.val_metrics, self.val_loss, "val", 0.0)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(self.val_metrics["acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch, batch_idx):
        self._step(batch, self.test_metrics, self.test_loss, "test", 0.0)

    def on_train_epoch_start(self):
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False, on_epoch=True)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer, total_steps=total, steps_per_epoch=per_epoch)}
