"""Classification metrics per split, all from torchmetrics."""

from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """top-1/top-5 accuracy (micro, i.e. fraction correct) and macro precision/recall/F1.

    ``validate_args=False``: the checks read the batch's labels back to the host, a GPU sync in
    every step; the engine makes the labels itself.
    """
    quiet = {"validate_args": False}
    metrics = {
        "acc": MulticlassAccuracy(num_classes, average="micro", **quiet),
        "f1_macro": MulticlassF1Score(num_classes, average="macro", **quiet),
        "precision_macro": MulticlassPrecision(num_classes, average="macro", **quiet),
        "recall_macro": MulticlassRecall(num_classes, average="macro", **quiet),
    }
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro", **quiet)
    return MetricCollection(metrics, prefix=prefix)


class BatchMean(Metric):
    """Per-sample mean of per-batch values (e.g. the loss), weighted by batch size.

    Why not ``torchmetrics.MeanMetric``: its NaN check reads every update back to the host (a GPU
    sync per step), and its ``nan_strategy="disable"`` drops the weights (torchmetrics 1.9).
    A NaN loss stops the run anyway (``RunGuard``).
    """

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: int | float) -> None:
        self.total += value.detach().float().sum() * weight
        self.count += weight

    def compute(self) -> torch.Tensor:
        return self.total / self.count
