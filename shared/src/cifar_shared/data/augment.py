"""Augmentation policy, applied to whole batches with tensor ops on the training device.

One ``AugmentPolicy`` describes what to do; ``BatchAugment`` does it batched (the fast default) and
``cifar_shared.data.per_sample.albumentations_transform`` does the same per image for the
DataLoader path. Every op draws from one seeded generator, so a seed fixes the augmentation too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cifar_shared.errors import UserError


@dataclass(frozen=True)
class AffinePolicy:
    translate: float = 0.0625  # fraction of the image size, each direction
    scale: float = 0.1  # zoom in [1 - scale, 1 + scale]
    degrees: float = 45.0  # rotation in [-degrees, degrees]
    p: float = 0.5


@dataclass(frozen=True)
class AugmentPolicy:
    crop_padding: int = 0  # random crop back to size after zero padding; 0 disables
    flip: bool = False  # horizontal flip with p=0.5
    cutout: int = 0  # side of one square hole filled with the mean; 0 disables
    cutout_p: float = 1.0
    affine: AffinePolicy | None = None

    @classmethod
    def from_config(cls, cfg) -> AugmentPolicy:
        cfg = dict(cfg or {})
        affine = dict(cfg.pop("affine", None) or {})
        cfg.pop("pipeline", None)
        for given, known in ((cfg, cls.__dataclass_fields__), (affine, AffinePolicy.__dataclass_fields__)):
            unknown = sorted(set(given) - set(known) - {"affine"})
            if unknown:
                raise UserError(f"unknown augment key(s) {', '.join(unknown)}: known keys are {', '.join(sorted(known))}")
        return cls(**cfg, affine=AffinePolicy(**affine) if affine else None)


class BatchAugment:
    """Applies an ``AugmentPolicy`` in three stages of the loader, each on the cheapest dtype.

    crop + flip: one gather on uint8 images that the loader padded once up front (``pad``);
    affine: on floats of any scale (bilinear sampling is linear; zeros outside, as albumentations);
    cutout: after normalization, where 0 is the dataset mean.
    """

    def __init__(self, policy: AugmentPolicy):
        self.policy = policy
        self.pad = policy.crop_padding

    def on_uint8(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.pad or self.policy.flip:
            x = random_crop_flip(x, self.pad, self.policy.flip, g)
        return x

    def on_float(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return random_affine(x, self.policy.affine, g) if self.policy.affine is not None else x

    def on_normalized(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return cutout(x, self.policy.cutout, self.policy.cutout_p, g) if self.policy.cutout else x


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, device=g.device)


def random_crop_flip(padded: torch.Tensor, padding: int, flip: bool, g: torch.Generator) -> torch.Tensor:
    """Per-image random window of an already padded batch, mirrored with p=0.5, as one gather.

    Mirroring is just reading the window's columns right to left, so it costs nothing extra.
    """
    n, c, hp, wp = padded.shape
    h, w = hp - 2 * padding, wp - 2 * padding
    dev = padded.device
    dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=g, device=g.device).to(dev)
    dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=g, device=g.device).to(dev)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    if flip:
        mirrored = (torch.rand(n, 1, 1, generator=g, device=g.device) < 0.5).to(dev)
        cols = torch.where(mirrored, w - 1 - cols, cols)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    index = ((dy + rows) * wp + dx + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, hp * wp).gather(2, index).view(n, c, h, w)


def cutout(x: torch.Tensor, size: int, p: float, g: torch.Generator) -> torch.Tensor:
    """One size×size hole per image, placed fully inside it (as albumentations' CoarseDropout), set to 0."""
    n, _, h, w = x.shape
    top = torch.randint(0, h - size + 1, (n, 1, 1), generator=g, device=g.device)
    left = torch.randint(0, w - size + 1, (n, 1, 1), generator=g, device=g.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    hole = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    hole &= (torch.rand(n, 1, 1, generator=g, device=g.device) < p)
    return x.masked_fill(hole[:, None], 0.0)


def random_affine(x: torch.Tensor, policy: AffinePolicy, g: torch.Generator) -> torch.Tensor:
    """Rotate/scale/shift the whole batch with one affine_grid + grid_sample (zeros outside)."""
    n = x.shape[0]
    angle = _uniform(n, -policy.degrees, policy.degrees, g) * (math.pi / 180)
    scale = _uniform(n, 1 - policy.scale, 1 + policy.scale, g)
    shift = _uniform(2 * n, -policy.translate, policy.translate, g).view(n, 2) * 2  # grid units span 2
    apply = torch.rand(n, generator=g, device=g.device) < policy.p
    angle, scale, shift = angle * apply, torch.where(apply, scale, torch.ones_like(scale)), shift * apply[:, None]
    # grid_sample maps output -> input, so build the inverse of (rotate, scale, then shift).
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    inv = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # (n, 2, 2)
    theta = torch.cat([inv, -(inv @ shift[:, :, None])], 2).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
