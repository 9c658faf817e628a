"""The LightningModule every package trains with: the package only supplies the network."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from cifar_shared.engine.metrics import BatchMean, classification_metrics


class ClassificationModule(pl.LightningModule):
    """Cross-entropy classifier; optimizer and scheduler come in as factories built from config.

    ``loss_hook`` (config key ``loss_hook``, default null) is the seam for packages that change the
    training objective (distillation, regularisers): ``loss_hook(module, x, y, logits)`` returns
    ``{name: scalar tensor}``, added to the cross-entropy in training steps only and logged as
    ``train/loss_<name>``; ``train/loss`` is the total. An ``nn.Module`` hook becomes a submodule
    (moves with the model, and its own parameters and buffers are trained and checkpointed).
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., dict] | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        loss_hook: Callable[..., dict[str, torch.Tensor]] | None = None,
    ):
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.num_classes = num_classes
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.label_smoothing = label_smoothing
        self.loss_hook = loss_hook
        self.train_metrics = classification_metrics(num_classes, "train/")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.test_metrics = classification_metrics(num_classes, "test/")
        self.train_loss, self.val_loss, self.test_loss = BatchMean(), BatchMean(), BatchMean()  # no GPU sync per step
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # survives resume
        self.test_confusion = MulticlassConfusionMatrix(num_classes, validate_args=False)
        self.confusion_matrix: list[list[int]] | None = None  # the last test pass's, set by on_test_epoch_end
        self._logged_this_epoch: set[str] = set()  # splits whose metrics are registered with Lightning this epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, metrics, loss_metric, split: str, smoothing: float) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        if split == "train" and self.loss_hook is not None:
            for name, term in self.loss_hook(self, x, y, logits).items():
                self.log(f"train/loss_{name}", term.detach(), on_step=False, on_epoch=True, batch_size=y.shape[0])
                loss = loss + term
        loss_metric.update(loss.detach(), weight=y.shape[0])
        metrics.update(logits.detach(), y)
        if split not in self._logged_this_epoch:
            # Lightning keeps a logged Metric and computes/resets it at the epoch end, so logging it
            # once per epoch is enough; doing it every step costs ~5 ms of bookkeeping per step
            # (the GPU waits), as much as a ResNet-18 step at batch 512 on an H100
            self._logged_this_epoch.add(split)
            self.log(f"{split}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=True)
            self.log_dict(metrics, on_step=False, on_epoch=True)
        if split == "test":
            self.test_confusion.update(logits.detach(), y)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, self.train_metrics, self.train_loss, "train", self.label_smoothing)

    def validation_step(self, batch, batch_idx):
        self._step(batch, self.val_metrics, self.val_loss, "val", 0.0)

    def on_validation_epoch_start(self):
        self._logged_this_epoch.discard("val")

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(self.val_metrics["acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch, batch_idx):
        self._step(batch, self.test_metrics, self.test_loss, "test", 0.0)

    def on_test_epoch_start(self):
        self._logged_this_epoch.discard("test")
        self.test_confusion.reset()
        self.confusion_matrix = None

    def on_test_epoch_end(self):
        # computed here, on the device and with every DDP rank: after trainer.test() the module is
        # back on the CPU, where NCCL cannot gather the ranks' counts
        self.confusion_matrix = self.test_confusion.compute().tolist()

    def on_train_epoch_start(self):
        self._logged_this_epoch.discard("train")

    def on_before_optimizer_step(self, optimizer):
        self.last_step_lr = float(optimizer.param_groups[0]["lr"])

    def on_train_epoch_end(self):
        # the rate the epoch ended with (after a warm-up epoch: about the warmed-up rate), as the epoch line shows it
        self.log("lr", epoch_end_lr(self.trainer), on_step=False, on_epoch=True)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer, total_steps=total, steps_per_epoch=per_epoch)}


def epoch_end_lr(trainer) -> float:
    """The rate the epoch ended with: the lr of its last optimizer step (first parameter group).
    Not the optimizer's lr after the epoch: a per-step scheduler has moved it on, and after the
    run's last step OneCycle's cosine has run past its end and reflects back up."""
    last = getattr(trainer.lightning_module, "last_step_lr", None)
    return last if last is not None else float(trainer.optimizers[0].param_groups[0]["lr"])
