"""The per-sample path: one image at a time through albumentations, batched by a DataLoader.

Slower than ``TensorBatchLoader`` but it runs any albumentations pipeline; it yields the same batch
contract (float32 N×3×H×W normalized, int64 labels) and uses the same ``ShardedPermutation``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cifar_shared.data.augment import AugmentPolicy
from cifar_shared.data.loader import ShardedPermutation
from cifar_shared.errors import UserError


class ImageSetDataset(Dataset):
    """Serves HWC uint8 numpy images to a per-image transform returning a CHW float tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable[[np.ndarray], torch.Tensor]):
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.labels[i]


def albumentations_transform(
    policy: AugmentPolicy, mean: Sequence[float], std: Sequence[float], image_size: int = 32, seed: int | None = None
):
    """The ``AugmentPolicy`` as an albumentations pipeline (cutout filled with the dataset mean)."""
    try:
        import albumentations as A
        from albumentations.pytorch import ToTensorV2
    except ImportError:
        raise UserError("augment.pipeline=per_sample needs albumentations: pip install 'cifar-shared[albumentations]'") from None

    ops = []
    if policy.affine is not None:
        a = policy.affine
        ops.append(
            A.Affine(
                translate_percent=(-a.translate, a.translate),
                scale=(1 - a.scale, 1 + a.scale),
                rotate=(-a.degrees, a.degrees),
                border_mode=0,
                fill=0,
                p=a.p,
            )
        )
    if policy.crop_padding:
        padded = image_size + 2 * policy.crop_padding
        ops.append(A.PadIfNeeded(min_height=padded, min_width=padded, border_mode=0, fill=0))
        ops.append(A.RandomCrop(height=image_size, width=image_size))
    if policy.flip:
        ops.append(A.HorizontalFlip(p=0.5))
    if policy.cutout:
        ops.append(
            A.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=(policy.cutout, policy.cutout),
                hole_width_range=(policy.cutout, policy.cutout),
                fill=tuple(int(round(m * 255)) for m in mean),
                p=policy.cutout_p,
            )
        )
    ops += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    compose = A.Compose(ops, seed=seed)
    return lambda image: compose(image=image)["image"]


def per_sample_loader(
    images: torch.Tensor,
    labels: torch.Tensor,
    transform: Callable[[np.ndarray], torch.Tensor],
    batch_size: int,
    sampler: ShardedPermutation,
    num_workers: int = 2,
    drop_last: bool = False,
) -> DataLoader:
    return DataLoader(
        ImageSetDataset(images, labels, transform),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
