"""Augmentation policy, applied to whole batches with tensor ops on the training device.

One ``AugmentPolicy`` describes what to do; ``BatchAugment`` does it batched (the fast default) and
``cifar_shared.data.per_sample.per_sample_transform`` does the same per image for the DataLoader
path. Every op draws from one seeded generator, so a seed fixes the augmentation too; every random
choice (window, angle, jitter factors and their order, grayscale, crop box) is drawn per image.

Batched here: crop+flip, affine, rotate, random resized crop, colour jitter, grayscale, cutout.
Per image only: RandAugment (14 ops, each image its own pick; a batched version would run every op
on every image), through torchvision v2 in DataLoader workers (``augment.pipeline=per_sample``).
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
class ColorJitterPolicy:
    """torchvision's ColorJitter: factors drawn uniformly per image, the four ops in a random order."""

    brightness: float = 0.0  # factor in [1 - b, 1 + b]
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0  # shift in [-hue, hue] (fraction of the hue circle), at most 0.5


@dataclass(frozen=True)
class AugmentPolicy:
    crop_padding: int = 0  # random crop back to size after zero padding; 0 disables
    flip: bool = False  # horizontal flip with p=0.5
    cutout: int = 0  # side of one square hole filled with the mean; 0 disables
    cutout_p: float = 1.0
    affine: AffinePolicy | None = None
    rotate: float = 0.0  # rotation by an angle in [-rotate, rotate] degrees (bilinear, zeros outside)
    crop_scale: tuple[float, float] | None = None  # random resized crop: area fraction range; None disables
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # its aspect-ratio range
    color_jitter: ColorJitterPolicy | None = None
    color_jitter_p: float = 1.0
    grayscale_p: float = 0.0
    num_ops: int = 0  # RandAugment: ops per image (0 disables); per image only
    magnitude: int = 9  # RandAugment magnitude, of 31 bins (torchvision's default scale)

    @classmethod
    def from_config(cls, cfg) -> AugmentPolicy:
        cfg = dict(cfg or {})
        affine = dict(cfg.pop("affine", None) or {})
        jitter = dict(cfg.pop("color_jitter", None) or {})
        cfg.pop("pipeline", None)
        for name, given, known in (("", cfg, cls.__dataclass_fields__), ("affine.", affine, AffinePolicy.__dataclass_fields__),
                                   ("color_jitter.", jitter, ColorJitterPolicy.__dataclass_fields__)):
            unknown = sorted(set(given) - set(known) - {"affine", "color_jitter"})
            if unknown:
                raise UserError(f"unknown augment key(s) {', '.join(name + u for u in unknown)}: known keys are "
                                f"{', '.join(name + k for k in sorted(known))}")
        for key in ("crop_scale", "crop_ratio"):
            if cfg.get(key) is not None:
                cfg[key] = tuple(float(v) for v in cfg[key])
        policy = cls(**cfg, affine=AffinePolicy(**affine) if affine else None,
                     color_jitter=ColorJitterPolicy(**jitter) if jitter else None)
        policy.check()
        return policy

    def check(self) -> None:
        if self.crop_scale is not None and not (0 < self.crop_scale[0] <= self.crop_scale[1] <= 1):
            raise UserError(f"augment.crop_scale={list(self.crop_scale)} is invalid: it must be [low, high] with 0 < low <= high <= 1")
        if self.color_jitter is not None and not 0 <= self.color_jitter.hue <= 0.5:
            raise UserError(f"augment.color_jitter.hue={self.color_jitter.hue} is invalid: it must be in [0, 0.5]")
        if self.num_ops < 0 or not 0 <= self.magnitude <= 30:
            raise UserError(f"augment.num_ops={self.num_ops}, augment.magnitude={self.magnitude}: num_ops >= 0, magnitude in [0, 30]")

    @property
    def per_sample_only(self) -> bool:
        """True when a part of the policy has no batched implementation (RandAugment)."""
        return self.num_ops > 0


class BatchAugment:
    """Applies an ``AugmentPolicy`` in three stages of the loader, each on the cheapest dtype.

    crop + flip: one gather on uint8 images that the loader padded once up front (``pad``);
    affine: on floats of any scale (bilinear sampling is linear; zeros outside, as albumentations);
    cutout: after normalization, where 0 is the dataset mean.
    """

    def __init__(self, policy: AugmentPolicy):
        if policy.per_sample_only:
            raise UserError("augment.num_ops > 0 (RandAugment) runs per image only: use augment.pipeline=per_sample "
                            "(augment=randaug sets it)")
        self.policy = policy
        self.pad = policy.crop_padding

    def on_uint8(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.pad or self.policy.flip:
            x = random_crop_flip(x, self.pad, self.policy.flip, g)
        return x

    def on_float(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Geometry, then colour, on floats in [0, 255]."""
        p = self.policy
        if p.crop_scale is not None:
            x = random_resized_crop(x, p.crop_scale, p.crop_ratio, g)
        if p.affine is not None:
            x = random_affine(x, p.affine, g)
        if p.rotate:
            x = random_affine(x, AffinePolicy(translate=0.0, scale=0.0, degrees=p.rotate, p=1.0), g)
        if p.color_jitter is not None or p.grayscale_p:
            x = x / 255
            if p.color_jitter is not None:
                x = color_jitter(x, p.color_jitter, p.color_jitter_p, g)
            if p.grayscale_p:
                x = random_grayscale(x, p.grayscale_p, g)
            x = x * 255
        return x

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
    # grid_sample maps output -> input, so build the inverse of (rotate, scale, then shift). The
    # grid's [-1, 1] spans the width in x and the height in y: a rotation in pixels has its
    # off-diagonal terms scaled by the aspect ratio there (else a non-square image is sheared).
    aspect = x.shape[-2] / x.shape[-1]  # height / width
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    inv = torch.stack([torch.stack([cos, sin * aspect], 1), torch.stack([-sin / aspect, cos], 1)], 1)  # (n, 2, 2)
    theta = torch.cat([inv, -(inv @ shift[:, :, None])], 2).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's blend for floats in [0, 1], one ratio per image."""
    r = ratio.view(-1, 1, 1, 1).to(x.dtype)
    return (r * x + (1 - r) * other).clamp(0, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma, as torchvision's rgb_to_grayscale, kept at 1 channel."""
    r, g_, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g_ + 0.114 * b).unsqueeze(1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by its own ``shift`` (fraction of the circle), via HSV."""
    from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

    h, s, v = _rgb_to_hsv(x).unbind(1)
    h = (h + shift.view(-1, 1, 1).to(x.dtype)) % 1.0
    return _hsv_to_rgb(torch.stack((h, s, v), 1))


def _brightness(y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(y, torch.zeros_like(y), f)


def _contrast(y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(y, grayscale(y).mean((1, 2, 3), keepdim=True), f)


def _saturation(y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(y, grayscale(y), f)


def color_jitter(x: torch.Tensor, policy: ColorJitterPolicy, p: float, g: torch.Generator,
                 by_subset: bool | None = None) -> torch.Tensor:
    """torchvision's ColorJitter per image on floats in [0, 1]: each image draws its factors and its
    own order of the four ops (so stage k applies, to each image, the op its order puts k-th).

    On the CPU each op runs on just the images that picked it at that stage (hue, through HSV, is
    most of the cost: 4x less work); on a GPU every image goes through every op and ``where`` keeps
    the picked result, since selecting the images would read their count back to the host
    (``by_subset`` overrides the choice; both give the same images)."""
    by_subset = not x.is_cuda if by_subset is None else by_subset
    n = x.shape[0]
    ops = []  # (op, its factor per image)
    if policy.brightness:
        ops.append((_brightness, _uniform(n, max(0.0, 1 - policy.brightness), 1 + policy.brightness, g).to(x.device)))
    if policy.contrast:
        ops.append((_contrast, _uniform(n, max(0.0, 1 - policy.contrast), 1 + policy.contrast, g).to(x.device)))
    if policy.saturation:
        ops.append((_saturation, _uniform(n, max(0.0, 1 - policy.saturation), 1 + policy.saturation, g).to(x.device)))
    if policy.hue:
        ops.append((adjust_hue, _uniform(n, -policy.hue, policy.hue, g).to(x.device)))
    if not ops:
        return x
    order = torch.argsort(torch.rand(n, len(ops), generator=g, device=g.device), dim=1).to(x.device)  # a random permutation per image
    apply = (torch.rand(n, generator=g, device=g.device) < p).to(x.device).view(-1, 1, 1, 1)
    out = x
    for stage in range(len(ops)):
        result = out.clone() if by_subset else out  # the subset way writes into it
        for k, (op, factor) in enumerate(ops):
            chosen = order[:, stage] == k
            if not by_subset:
                result = torch.where(chosen.view(-1, 1, 1, 1), op(out, factor), result)
            elif (idx := chosen.nonzero().squeeze(1)).numel():
                result[idx] = op(out[idx], factor[idx])
        out = result
    return torch.where(apply, out, x)


def random_grayscale(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """Each image turned gray (luma in all 3 channels) with probability ``p``."""
    gray = (torch.rand(x.shape[0], generator=g, device=g.device) < p).to(x.device).view(-1, 1, 1, 1)
    return torch.where(gray, grayscale(x).expand_as(x), x)


def resized_crop_boxes(n: int, height: int, width: int, scale, ratio, g: torch.Generator) -> torch.Tensor:
    """(top, left, h, w) per image, drawn as torchvision's RandomResizedCrop.get_params: 10 tries of
    area in ``scale`` and log-uniform aspect ratio in ``ratio``, else the central crop of the
    clamped ratio, vectorised (each image keeps its first try that fits)."""
    area = height * width
    tries = 10
    target = area * _uniform(n * tries, scale[0], scale[1], g).view(n, tries)
    log_r = _uniform(n * tries, math.log(ratio[0]), math.log(ratio[1]), g).view(n, tries)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1, device=fits.device))
    # fallback: whole image clamped to the ratio range
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    idx = first.clamp(min=0).view(n, 1)
    w = torch.where(first >= 0, w.gather(1, idx).squeeze(1), torch.full((n,), float(fw), device=w.device))
    h = torch.where(first >= 0, h.gather(1, idx).squeeze(1), torch.full((n,), float(fh), device=h.device))
    top = torch.floor(torch.rand(n, generator=g, device=g.device) * (height - h + 1))
    left = torch.floor(torch.rand(n, generator=g, device=g.device) * (width - w + 1))
    fell_back = first < 0  # torchvision centres the fallback crop
    top = torch.where(fell_back, torch.div(height - h, 2, rounding_mode="floor"), top)
    left = torch.where(fell_back, torch.div(width - w, 2, rounding_mode="floor"), left)
    return torch.stack([top, left, h, w], 1)


def resize_boxes(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Crop each image to its (top, left, h, w) box and resize it back to the image size, bilinear,
    as ``F.interpolate(crop, align_corners=False)`` does (sample positions clamped to the box, so no
    pixel outside it leaks in); one grid_sample for the batch."""
    n, _, height, width = x.shape
    boxes = boxes.to(x.device, x.dtype)
    top, left, h, w = boxes.unbind(1)
    i = torch.arange(height, device=x.device, dtype=x.dtype)
    j = torch.arange(width, device=x.device, dtype=x.dtype)
    ys = top[:, None] + ((i[None] + 0.5) * h[:, None] / height - 0.5).clamp(min=0)
    xs = left[:, None] + ((j[None] + 0.5) * w[:, None] / width - 0.5).clamp(min=0)
    ys = torch.minimum(ys, (top + h - 1)[:, None])
    xs = torch.minimum(xs, (left + w - 1)[:, None])
    gy = (2 * ys + 1) / height - 1  # pixel coordinate -> grid_sample's [-1, 1] (align_corners=False)
    gx = (2 * xs + 1) / width - 1
    grid = torch.stack([gx[:, None, :].expand(n, height, width), gy[:, :, None].expand(n, height, width)], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(x: torch.Tensor, scale, ratio, g: torch.Generator) -> torch.Tensor:
    """torchvision's RandomResizedCrop (bilinear), a box per image, resized back to the image size."""
    n, _, height, width = x.shape
    return resize_boxes(x, resized_crop_boxes(n, height, width, scale, ratio, g))
