import math

import pytest
import torch
import torch.nn.functional as F

from cifar_shared import UserError
from cifar_shared.data.augment import (
    AffinePolicy,
    AugmentPolicy,
    cutout,
    random_affine,
    random_crop_flip,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("flip", [False, True])
def test_crop_windows_come_from_the_padded_image(flip):
    x = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    padded = F.pad(x, (2, 2, 2, 2))
    out = random_crop_flip(padded, 2, flip, gen())
    assert out.shape == x.shape and out.dtype == torch.uint8
    mirrored = 0
    for i in range(32):
        windows = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        flipped = any(torch.equal(out[i], w.flip(2)) for w in windows)
        assert plain or flipped
        mirrored += flipped and not plain
    assert not torch.equal(out, x)
    assert (mirrored > 5) == flip


def test_flip_is_identity_or_mirror_about_half_the_time():
    x = torch.rand(400, 3, 4, 4)
    out = random_crop_flip(x, 0, True, gen())
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 150 < int(mirrored.sum()) < 250


def test_cutout_zeroes_one_square_inside_the_image():
    x = torch.ones(32, 3, 16, 16)
    out = cutout(x, 6, 1.0, gen())
    zeros = (out == 0).all(1)  # same hole on every channel
    assert zeros.flatten(1).sum(1).tolist() == [36] * 32
    for i in range(32):
        ys, xs = torch.nonzero(zeros[i], as_tuple=True)
        assert ys.max() - ys.min() == 5 and xs.max() - xs.min() == 5


def test_cutout_probability():
    out = cutout(torch.ones(1000, 1, 8, 8), 2, 0.5, gen())
    holes = (out == 0).flatten(1).any(1).float().mean()
    assert 0.4 < holes < 0.6


def test_affine_with_p0_is_identity():
    x = torch.rand(8, 3, 32, 32)
    out = random_affine(x, AffinePolicy(p=0.0), gen())
    assert torch.allclose(out, x, atol=1e-5)


def _shifted(x: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    """``x`` moved down by ``dy`` and right by ``dx`` pixels, zeros shifted in; a fractional shift
    is the linear blend of the two whole-pixel shifts around it (bilinear sampling), by slicing."""

    def whole(img, k, dim):  # shift by an integer k along dim, zeros in
        out = torch.zeros_like(img)
        n = img.shape[dim]
        if abs(k) < n:
            out.narrow(dim, max(k, 0), n - abs(k)).copy_(img.narrow(dim, max(-k, 0), n - abs(k)))
        return out

    def along(img, s, dim):
        k = math.floor(s)
        f = s - k
        return (1 - f) * whole(img, k, dim) + f * whole(img, k + 1, dim)

    return along(along(x, dy, -2), dx, -1)


def test_affine_matches_a_pure_shift():
    """translate only, p=1: every image is its own content moved by the sampled amount (within
    ±translate of the size) with zeros shifted in, pixel for pixel as the slicing reference; the
    shift is read off each output's centre of mass, which a shift that loses no content moves
    exactly by the shift."""
    n, size, translate = 64, 32, 0.125
    x = torch.zeros(n, 1, size, size)
    x[:, :, 8:24, 8:24] = torch.rand(n, 1, 16, 16, generator=gen(1)) + 0.5  # a border of 8 > the largest shift (4 px)
    out = random_affine(x, AffinePolicy(translate=translate, scale=0.0, degrees=0.0, p=1.0), gen(3))
    coords = torch.arange(size, dtype=torch.float64)

    def centre(img):
        mass = img.double().sum()
        return float((img.double().sum(-1) * coords).sum() / mass), float((img.double().sum(-2) * coords).sum() / mass)

    shifts = []
    for i in range(n):
        (y0, x0), (y1, x1) = centre(x[i, 0]), centre(out[i, 0])
        dy, dx = y1 - y0, x1 - x0
        assert torch.allclose(out[i], _shifted(x[i], dy, dx), atol=1e-4), f"image {i}: not a pure shift by ({dy:.3f}, {dx:.3f})"
        shifts += [dy, dx]
    shifts = torch.tensor(shifts)
    limit = translate * size
    assert shifts.abs().max() <= limit + 1e-3  # within the policy's range
    assert shifts.abs().max() > 0.75 * limit and shifts.std() > 0.4 * limit  # and spread over it, per image and axis


def test_shift_reference_is_torch_roll_for_whole_pixels():
    """The reference above, for whole pixels and content away from the border, is torch.roll."""
    x = torch.zeros(1, 1, 16, 16)
    x[..., 4:12, 4:12] = torch.rand(8, 8, generator=gen(2))
    assert torch.equal(_shifted(x, 3, -2), torch.roll(x, (3, -2), (-2, -1)))
    assert torch.allclose(_shifted(x, 0.25, 0), 0.75 * x + 0.25 * torch.roll(x, 1, -2))


def test_affine_rotation_keeps_a_centered_disc():
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = (((yy - 15.5) ** 2 + (xx - 15.5) ** 2) < 64).float()[None, None].repeat(16, 3, 1, 1)
    out = random_affine(disc, AffinePolicy(translate=0.0, scale=0.0, degrees=180, p=1.0), gen())
    assert (out - disc).abs().mean() < 0.02


def test_policy_from_config():
    p = AugmentPolicy.from_config({"pipeline": "tensor", "crop_padding": 4, "flip": True, "cutout": 16, "cutout_p": 0.5, "affine": {"translate": 0.1, "scale": 0.1, "degrees": 10, "p": 0.5}})
    assert p.crop_padding == 4 and p.affine.degrees == 10
    with pytest.raises(UserError, match="unknown augment key.*crop_pad"):
        AugmentPolicy.from_config({"crop_pad": 4})
