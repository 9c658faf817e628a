"""What the model saw: the image batches the training and validation steps receive, back in pixel
values, to check an augmentation policy in the images themselves (not in its config).

A package's conftest wraps ``record_step_inputs`` in a ``seen`` fixture."""

from __future__ import annotations

import torch


def record_step_inputs(monkeypatch) -> dict[str, list[torch.Tensor]]:
    """From now on (for the test's duration): every training and validation step's image batch,
    as the model gets it (normalized), under ``"train"`` and ``"val"``."""
    from cifar_shared.engine.module import ClassificationModule

    batches: dict[str, list[torch.Tensor]] = {"train": [], "val": []}
    for split, hook in (("train", "training_step"), ("val", "validation_step")):
        monkeypatch.setattr(ClassificationModule, hook, _recording(getattr(ClassificationModule, hook), batches[split]))
    return batches


def _recording(step, store: list[torch.Tensor]):
    def recorded(self, batch, batch_idx):
        store.append(batch[0].detach().float().cpu().clone())
        return step(self, batch, batch_idx)

    return recorded


def to_pixels(batches: list[torch.Tensor], dm) -> torch.Tensor:
    """Normalized batches back to 0..255 pixel values, with the data module's statistics."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (dm.mean, dm.std))
    return torch.cat(batches) * std * 255 + mean * 255


def is_original(pixels: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """Per image: equal, to rounding, to one of the split's stored uint8 images."""
    ref = originals.float().flatten(1)
    return torch.stack([(ref - img.flatten()).abs().amax(1).min() < 1.0 for img in pixels])
