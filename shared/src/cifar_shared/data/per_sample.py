"""The per-sample path: one image at a time in DataLoader workers.

Slower than ``TensorBatchLoader`` but it runs what cannot be batched faithfully (RandAugment) and
any albumentations pipeline; it yields the same batch contract (float32 N×3×H×W normalized, int64
labels) and uses the same ``ShardedPermutation``. ``per_sample_transform`` picks the library:
albumentations for the policies it has always run (crop, flip, affine, cutout), torchvision v2 for
a policy with any of the newer keys (RandAugment, rotate, colour jitter, grayscale, resized crop).

Each batch's random draws are seeded from (run seed, epoch, the batch's first index), never from a
process's running RNG: an epoch's augmentation is then the same in a resumed run as in an unbroken
one, whatever the number of workers, and loading batches leaves the training process's RNG alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cifar_shared.data.augment import AugmentPolicy
from cifar_shared.data.loader import ShardedPermutation
from cifar_shared.errors import UserError


class ImageSetDataset(Dataset):
    """Serves HWC uint8 numpy images to a per-image transform returning a CHW float tensor.

    A batch of ``(epoch, index)`` keys (what ``per_sample_loader``'s sampler yields) is transformed
    with torch's CPU generator, and the transform's own generators (``reseed``), seeded from
    ``(seed, epoch, first index)``; the caller's torch RNG state is restored afterwards."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable[[np.ndarray], torch.Tensor],
                 seed: int = 0):
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(i, tuple):
            return self.__getitems__([i])[0]
        return self.transform(self.images[i]), self.labels[i]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # Why: a process's running RNG differs after a resume. Persistent workers carry theirs over
        # from earlier epochs (a resumed run starts fresh ones); with num_workers=0 the transforms
        # drew from the training process's generator, from which DataLoader also drew its base seed
        # when Lightning built the iterator, before the resume restored the RNG (one draw off).
        epoch, first = keys[0]
        seed = int(np.random.SeedSequence((self.seed, epoch, first)).generate_state(1)[0])
        state = torch.get_rng_state()
        try:
            torch.default_generator.manual_seed(seed)
            if hasattr(self.transform, "reseed"):
                self.transform.reseed(seed)
            return [(self.transform(self.images[i]), self.labels[i]) for _, i in keys]
        finally:
            torch.set_rng_state(state)


class _EpochKeys:
    """The sampler's indices as ``(epoch, index)`` keys, so workers know the epoch they serve."""

    def __init__(self, sampler: ShardedPermutation):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        epoch = self.sampler.epoch
        return ((epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


ALBUMENTATIONS_KEYS = ("crop_padding", "flip", "cutout", "cutout_p", "affine")


def per_sample_transform(policy: AugmentPolicy, mean: Sequence[float], std: Sequence[float], image_size: int = 32,
                         seed: int | None = None):
    """The policy as a per-image transform (HWC uint8 numpy -> normalized CHW float tensor)."""
    default = AugmentPolicy()
    newer = [f for f in AugmentPolicy.__dataclass_fields__ if f not in ALBUMENTATIONS_KEYS
             and getattr(policy, f) != getattr(default, f)]
    if newer:
        return torchvision_transform(policy, mean, std, image_size)
    return albumentations_transform(policy, mean, std, image_size, seed)


class _Torchvision:
    """Picklable (for worker processes) wrapper: numpy HWC uint8 -> CHW uint8 tensor -> ``compose``."""

    def __init__(self, compose):
        self.compose = compose

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.compose(torch.from_numpy(image).permute(2, 0, 1).contiguous())


def torchvision_transform(policy: AugmentPolicy, mean: Sequence[float], std: Sequence[float], image_size: int = 32):
    """The ``AugmentPolicy`` as torchvision v2 transforms on uint8 tensors, in the order the batched
    path applies it: RandAugment, crop+flip, resized crop, affine, rotate, colour, normalize, cutout.
    Randomness comes from torch's CPU generator, which ``ImageSetDataset`` seeds for each batch."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    bilinear = InterpolationMode.BILINEAR
    ops: list = []
    if policy.num_ops:
        ops.append(T.RandAugment(num_ops=policy.num_ops, magnitude=policy.magnitude))
    if policy.crop_padding:
        ops.append(T.RandomCrop(image_size, padding=policy.crop_padding))
    if policy.flip:
        ops.append(T.RandomHorizontalFlip())
    if policy.crop_scale is not None:
        ops.append(T.RandomResizedCrop(image_size, scale=policy.crop_scale, ratio=policy.crop_ratio, interpolation=bilinear))
    if policy.affine is not None:
        a = policy.affine
        ops.append(T.RandomApply([T.RandomAffine(degrees=a.degrees, translate=(a.translate, a.translate),
                                                 scale=(1 - a.scale, 1 + a.scale), interpolation=bilinear)], p=a.p))
    if policy.rotate:
        ops.append(T.RandomRotation(policy.rotate, interpolation=bilinear))
    if policy.color_jitter is not None:
        j = policy.color_jitter
        ops.append(T.RandomApply([T.ColorJitter(j.brightness, j.contrast, j.saturation, j.hue)], p=policy.color_jitter_p))
    if policy.grayscale_p:
        ops.append(T.RandomGrayscale(policy.grayscale_p))
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(mean=list(mean), std=list(std))]
    if policy.cutout:
        area = policy.cutout**2 / image_size**2  # one square hole of the given side, 0 = the mean
        ops.append(T.RandomErasing(p=policy.cutout_p, scale=(area, area), ratio=(1.0, 1.0), value=0.0))
    return _Torchvision(T.Compose(ops))


def albumentations_transform(
    policy: AugmentPolicy, mean: Sequence[float], std: Sequence[float], image_size: int = 32, seed: int | None = None
):
    """The ``AugmentPolicy`` as an albumentations pipeline (cutout filled with the dataset mean); the
    keys in ``ALBUMENTATIONS_KEYS`` only (``per_sample_transform`` sends the others to torchvision).
    Crop, flip, affine, cutout: the batched path's order, and the resnet original's (HorizontalFlip,
    ShiftScaleRotate, CoarseDropout), so the same seed gives the original's pixels."""
    try:
        import albumentations as A
        from albumentations.pytorch import ToTensorV2
    except ImportError:
        raise UserError("augment.pipeline=per_sample needs albumentations: pip install 'cifar-shared[albumentations]'") from None

    ops = []
    if policy.crop_padding:
        padded = image_size + 2 * policy.crop_padding
        ops.append(A.PadIfNeeded(min_height=padded, min_width=padded, border_mode=0, fill=0))
        ops.append(A.RandomCrop(height=image_size, width=image_size))
    if policy.flip:
        ops.append(A.HorizontalFlip(p=0.5))
    if policy.affine is not None:
        a = policy.affine  # = A.ShiftScaleRotate(a.translate, a.scale, a.degrees), Affine's deprecated special case
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
    return _Albumentations(A.Compose(ops, seed=seed))


class _Albumentations:
    """Picklable wrapper; albumentations draws from its own generators, which ``reseed`` sets."""

    def __init__(self, compose):
        self.compose = compose

    def reseed(self, seed: int) -> None:
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.compose(image=image)["image"]


class _PerSampleLoader(DataLoader):
    """A DataLoader that builds its iterator at the first batch, not at ``iter()``."""

    def __iter__(self):
        # Why: with workers, building the iterator already reads the sampler (the epoch's first
        # batches are sent to the workers); Lightning calls ``iter()`` on the train loader before it
        # sets the sampler's epoch, and a resumed run trains its first epoch on that iterator, which
        # then replayed epoch 1's order.
        yield from super().__iter__()


def per_sample_loader(
    images: torch.Tensor,
    labels: torch.Tensor,
    transform: Callable[[np.ndarray], torch.Tensor],
    batch_size: int,
    sampler: ShardedPermutation,
    num_workers: int = 2,
    drop_last: bool = False,
) -> DataLoader:
    return _PerSampleLoader(
        ImageSetDataset(images, labels, transform, seed=sampler.seed),
        batch_size=batch_size,
        sampler=_EpochKeys(sampler),
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        # its own generator: building an iterator would otherwise draw a seed from the global one
        generator=torch.Generator().manual_seed(sampler.seed),
    )
