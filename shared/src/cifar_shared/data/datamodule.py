"""LightningDataModule: source -> seeded train/val split -> loaders on the training device."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch

from cifar_shared.data.augment import AugmentPolicy, BatchAugment
from cifar_shared.data.loader import ShardedPermutation, TensorBatchLoader
from cifar_shared.data.sources import ImageSet, load_source, split_train_val
from cifar_shared.data.stats import channel_stats
from cifar_shared.errors import UserError

log = logging.getLogger(__name__)


class ImageDataModule(pl.LightningDataModule):
    """Builds loaders for whatever source ``data_cfg`` names; ``augment_cfg`` picks the pipeline.

    ``augment.pipeline=tensor`` (default) augments whole batches on the device; ``per_sample`` runs
    the same policy through albumentations in DataLoader workers.
    """

    def __init__(self, data_cfg, augment_cfg, batch_size: int, seed: int, channels_last: bool = False):
        super().__init__()
        self.data_cfg, self.augment_cfg = dict(data_cfg), dict(augment_cfg or {})
        self.batch_size, self.seed, self.channels_last = batch_size, seed, channels_last
        self.train_set, self.test_set = load_source(self.data_cfg)
        check_splits(self.train_set, self.test_set)
        val_fraction = self.data_cfg.get("val_fraction", 0.1)
        self.train_set, self.val_set = split_train_val(self.train_set, val_fraction, seed)
        if self.val_set is None or len(self.train_set) == 0:
            n = len(self.train_set) + (len(self.val_set) if self.val_set is not None else 0)
            raise UserError(f"the training split has {n} images: data.val_fraction={val_fraction} of them leaves "
                            f"{'no validation' if self.val_set is None else 'no training'} image; use more images or another val_fraction")
        mean, std = self.data_cfg.get("mean"), self.data_cfg.get("std")
        computed = mean is None or std is None
        if computed:
            mean, std = channel_stats(self.train_set.images)
        self.mean, self.std = check_normalization(mean, std, computed)
        if computed:
            log.info("normalizing with the training split's mean %s and std %s", _fmt(self.mean), _fmt(self.std))
        self.policy = AugmentPolicy.from_config(self.augment_cfg)
        self.pipeline = self.augment_cfg.get("pipeline", "tensor")
        if self.pipeline == "tensor" and self.policy.per_sample_only:
            raise UserError("augment.num_ops > 0 (RandAugment) runs per image only: use augment.pipeline=per_sample "
                            "(augment=randaug sets it)")

    @property
    def num_classes(self) -> int:
        return self.train_set.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_set.images.shape[1:])

    @property
    def classes(self) -> list[str]:
        return self.train_set.classes

    def _placement(self) -> tuple[torch.device, int, int]:
        if self.trainer is None:
            return torch.device("cpu"), 0, 1
        return self.trainer.strategy.root_device, self.trainer.global_rank, self.trainer.world_size

    def _tensor_loader(self, data: ImageSet, train: bool) -> TensorBatchLoader:
        device, rank, world = self._placement()
        return TensorBatchLoader(
            data.images, data.labels, self.batch_size, self.mean, self.std,
            sampler=ShardedPermutation(len(data), self.seed, shuffle=train, rank=rank, world_size=world),
            augment=BatchAugment(self.policy) if train else None,
            drop_last=False, device=device, channels_last=self.channels_last,
        )

    def train_dataloader(self):
        if self.pipeline == "tensor":
            return self._tensor_loader(self.train_set, train=True)
        from cifar_shared.data.per_sample import per_sample_loader, per_sample_transform

        _, rank, world = self._placement()
        size = self.train_set.images.shape[-1]
        return per_sample_loader(
            self.train_set.images, self.train_set.labels,
            per_sample_transform(self.policy, self.mean, self.std, size, seed=self.seed + rank),
            self.batch_size, ShardedPermutation(len(self.train_set), self.seed, True, rank, world),
            num_workers=int(self.data_cfg.get("num_workers", 2)),
        )

    def val_dataloader(self):
        return self._tensor_loader(self.val_set, train=False)

    def test_dataloader(self):
        return self._tensor_loader(self.test_set, train=False)


def check_splits(train: ImageSet, test: ImageSet) -> None:
    """What no source may hand to training: a split without images, or fewer than two classes
    (one class trains to a meaningless accuracy of 1.0)."""
    if len(train) == 0 or len(test) == 0:
        raise UserError(f"the {'training' if len(train) == 0 else 'test'} split has no images: check data.root and the data's files")
    if train.num_classes < 2:
        raise UserError(f"the data has {train.num_classes} class: a classifier needs at least 2 (e.g. data.num_classes=10)")


def check_normalization(mean, std, computed: bool) -> tuple[list[float], list[float]]:
    """Three means and three positive stds: a channel with std 0 (every pixel the same value, e.g.
    saturated images) would divide by zero in normalization and train on NaN."""
    try:
        mean, std = [float(m) for m in mean], [float(s) for s in std]
    except (TypeError, ValueError):
        raise UserError(f"data.mean={mean!r} / data.std={std!r} are invalid: give three numbers each (R, G, B), or null") from None
    if len(mean) != 3 or len(std) != 3:
        raise UserError(f"data.mean and data.std need three numbers each (R, G, B), got {len(mean)} and {len(std)}")
    flat = [c for c, s in zip("RGB", std) if not s > 1e-4]
    if flat and computed:
        raise UserError(f"the training images have no variation in channel {flat[0]} (std {std['RGB'.index(flat[0])]:.2g}; saturated "
                        "or constant images?): normalizing would divide by zero; check the images")
    if flat:
        raise UserError(f"data.std={std} is invalid: every std must be > 0 (normalizing divides by it)")
    return mean, std


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"
