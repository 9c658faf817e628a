"""Batched augmentation against references and at its edges: the affine op against torchvision's
affine with the same draws, every op's randomness coming from its generator only, the resized
crop's boxes (skinny boxes, boxes touching the border, the fallback of a box that never fits),
cutout's positions, dtypes, and the policy's checks with their exact messages. Written to kill
the mutants of cifar_shared.data.augment (``uvx nox -s mutants``, docs/testing.md)."""

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from cifar_shared import UserError
from cifar_shared.data.augment import (
    AffinePolicy,
    AugmentPolicy,
    BatchAugment,
    ColorJitterPolicy,
    color_jitter,
    cutout,
    random_affine,
    random_crop_flip,
    random_grayscale,
    resized_crop_boxes,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- affine

@pytest.mark.parametrize("policy", [AffinePolicy(translate=0.1, scale=0.2, degrees=30, p=0.6),
                                    AffinePolicy(translate=0.25, scale=0.0, degrees=0.0, p=1.0),
                                    AffinePolicy(translate=0.0, scale=0.5, degrees=0.0, p=1.0),
                                    AffinePolicy(translate=0.0, scale=0.0, degrees=90.0, p=1.0)])
def test_affine_is_torchvisions_affine_with_its_draws(policy):
    """Per image: rotate by the drawn angle, scale, shift by the drawn fraction of the width and the
    height; each drawn uniformly in its range, applied with probability p (else the image as is).
    On non-square images: a rotation built in affine_grid's [-1, 1] square would shear them."""
    height = 24
    n, x = 16, torch.rand(16, 3, height, 32, generator=gen(1))
    out = random_affine(x, policy, gen(7))
    g = gen(7)  # the draws, in random_affine's order
    angle = -policy.degrees + 2 * policy.degrees * torch.rand(n, generator=g)
    scale = 1 - policy.scale + 2 * policy.scale * torch.rand(n, generator=g)
    shift = (-policy.translate + 2 * policy.translate * torch.rand(2 * n, generator=g)).view(n, 2)
    apply = torch.rand(n, generator=g) < policy.p
    for i in range(n):
        if not apply[i]:
            torch.testing.assert_close(out[i], x[i], atol=1e-5, rtol=0)
            continue
        ref = TF.affine(x[i], angle=angle[i].item(), translate=[shift[i, 0].item() * 32, shift[i, 1].item() * height],
                        scale=scale[i].item(), shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR)
        torch.testing.assert_close(out[i], ref, atol=1e-4, rtol=0)
    assert 0 < int(apply.sum()) <= n


def test_affine_keeps_the_dtype():
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    assert random_affine(x, AffinePolicy(p=1.0), gen()).dtype == torch.float64


# --------------------------------------------------------------------------- the generator, only

@pytest.mark.parametrize("op", [
    lambda x, g: random_crop_flip(torch.nn.functional.pad(x, (2, 2, 2, 2)), 2, True, g),
    lambda x, g: cutout(x, 3, 0.5, g),
    lambda x, g: random_affine(x, AffinePolicy(p=0.5), g),
    lambda x, g: color_jitter(x, ColorJitterPolicy(0.4, 0.4, 0.4, 0.1), 0.5, g, by_subset=True),
    lambda x, g: color_jitter(x, ColorJitterPolicy(0.4, 0.4, 0.4, 0.1), 0.5, g, by_subset=False),
    lambda x, g: random_grayscale(x, 0.5, g),
    lambda x, g: resized_crop_boxes(x.shape[0], 10, 12, (0.2, 1.0), (0.75, 4 / 3), g),
], ids=["crop_flip", "cutout", "affine", "jitter_subset", "jitter_where", "grayscale", "resized_crop"])
def test_every_op_draws_from_its_generator_only(op):
    """A seed fixes the augmentation: the global RNG (which the model's init and dropout use) has
    no say in it, and the generator's seed does."""
    x = torch.rand(64, 3, 10, 12, generator=gen(5))
    torch.manual_seed(1)
    first = op(x, gen(3))
    torch.manual_seed(2)
    assert torch.equal(op(x, gen(3)), first)
    assert not torch.equal(op(x, gen(4)), first)


# --------------------------------------------------------------------------- cutout

def test_cutout_holes_reach_every_position_inside_the_image():
    n, h, w, size = 3000, 7, 11, 3
    out = cutout(torch.ones(n, 1, h, w), size, 1.0, gen())
    hole = out[:, 0] == 0
    rows, cols = hole.any(2), hole.any(1)
    tops = rows.float().argmax(1)
    lefts = cols.float().argmax(1)
    assert (rows.sum(1) == size).all() and (cols.sum(1) == size).all()
    assert set(tops.tolist()) == set(range(h - size + 1)) and set(lefts.tolist()) == set(range(w - size + 1))


def test_cutout_probability_zero_and_one():
    x = torch.ones(200, 1, 6, 6)
    assert torch.equal(cutout(x, 2, 0.0, gen()), x)
    assert ((cutout(x, 2, 1.0, gen()) == 0).flatten(1).sum(1) == 4).all()


# --------------------------------------------------------------------------- colour

@pytest.mark.parametrize("by_subset", [True, False])
def test_color_jitter_keeps_a_half_precision_batch_half(by_subset):
    x = torch.rand(8, 3, 6, 6, generator=gen()).half()
    out = color_jitter(x, ColorJitterPolicy(brightness=0.5, contrast=0.5, saturation=0.5), 1.0, gen(1), by_subset=by_subset)
    assert out.dtype == torch.float16 and not torch.equal(out, x)
    assert random_grayscale(x, 1.0, gen()).dtype == torch.float16


# --------------------------------------------------------------------------- resized crop boxes

def test_fitting_boxes_are_torchvisions_first_fitting_try():
    """For an image whose box fits in one of its 10 tries: torchvision's RandomResizedCrop.get_params
    for that image (area uniform in scale, log-ratio uniform, sides rounded), the first try that fits,
    then top and left uniform over the positions inside the image."""
    n, height, width, scale, ratio = 300, 20, 30, (0.1, 0.9), (0.5, 2.0)
    boxes = resized_crop_boxes(n, height, width, scale, ratio, gen(2))
    g = gen(2)
    target = (scale[0] + (scale[1] - scale[0]) * torch.rand(n * 10, generator=g)).view(n, 10) * height * width
    log_r = (math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n * 10, generator=g)).view(n, 10)
    u_top, u_left = torch.rand(n, generator=g), torch.rand(n, generator=g)
    checked = 0
    for i in range(n):
        for t in range(10):
            a = math.exp(log_r[i, t].item())
            w = round(math.sqrt(target[i, t].item() * a))
            h = round(math.sqrt(target[i, t].item() / a))
            if 0 < w <= width and 0 < h <= height:
                top = math.floor(u_top[i].item() * (height - h + 1))
                left = math.floor(u_left[i].item() * (width - w + 1))
                assert boxes[i].tolist() == [top, left, h, w], i
                checked += 1
                break
    assert checked > 250


def test_box_sides_follow_the_drawn_ratio_both_ways():
    boxes = resized_crop_boxes(2000, 32, 32, (0.2, 1.0), (3 / 4, 4 / 3), gen(0))
    ratio = boxes[:, 3] / boxes[:, 2]
    assert (ratio > 1.2).any() and (ratio < 0.85).any()
    top, left = boxes[:, 0], boxes[:, 1]
    assert top.max() > 10 and left.max() > 10  # positions spread over the image, not pinned at 0


def test_one_pixel_wide_or_tall_boxes_fit_zero_pixel_ones_do_not():
    one_wide = resized_crop_boxes(50, 32, 32, (4 / 1024, 4 / 1024), (0.25, 0.25), gen())
    assert (one_wide[:, 2:] == torch.tensor([4.0, 1.0])).all()  # h 4, w 1
    one_tall = resized_crop_boxes(50, 32, 32, (4 / 1024, 4 / 1024), (4.0, 4.0), gen())
    assert (one_tall[:, 2:] == torch.tensor([1.0, 4.0])).all()
    # 2 pixels of area at ratio 1/10: w rounds to 0 (no box), so the fallback (32 x 3, ratio clamped to 1/10)
    thin = resized_crop_boxes(50, 32, 32, (2 / 1024, 2 / 1024), (0.1, 0.1), gen())
    assert (thin == torch.tensor([0.0, 14.0, 32.0, 3.0])).all()  # centred, as torchvision's fallback
    flat = resized_crop_boxes(50, 32, 32, (2 / 1024, 2 / 1024), (10.0, 10.0), gen())
    assert (flat == torch.tensor([14.0, 0.0, 3.0, 32.0])).all()


def test_boxes_may_touch_the_images_edges():
    boxes = resized_crop_boxes(2000, 32, 32, (0.85, 0.95), (3 / 4, 4 / 3), gen(1))
    h, w = boxes[:, 2], boxes[:, 3]
    assert ((w == 32) & (h < 32)).any() and ((h == 32) & (w < 32)).any()


@pytest.mark.parametrize("ratio, fallback", [((1.5, 3.0), (21.0, 32.0)), ((1 / 3, 1 / 1.5), (32.0, 21.0))])
def test_images_without_a_fitting_try_get_the_whole_image_clamped_to_the_ratio(ratio, fallback):
    """Some images find a box in their 10 tries, some do not: those get the image's full width (or
    height) at the nearest allowed ratio; every box lies inside the image."""
    boxes = resized_crop_boxes(3000, 32, 32, (0.5, 1.0), ratio, gen(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    assert (h >= 1).all() and (w >= 1).all()
    is_fallback = (h == fallback[0]) & (w == fallback[1])
    assert 10 < int(is_fallback.sum()) < 2900
    never_fits = resized_crop_boxes(50, 32, 32, (0.99, 1.0), ratio, gen(0))  # too large at that ratio
    centre = ((32 - fallback[0]) // 2, (32 - fallback[1]) // 2)  # torchvision centres the fallback crop
    assert (never_fits == torch.tensor([*centre, *fallback])).all()


def test_in_range_images_fall_back_to_the_whole_image():
    boxes = resized_crop_boxes(20, 20, 30, (3.0, 4.0), (0.5, 2.0), gen())  # an area larger than the image never fits
    assert (boxes == torch.tensor([0.0, 0.0, 20.0, 30.0])).all()


# --------------------------------------------------------------------------- the policy

KNOWN = ("affine, color_jitter, color_jitter_p, crop_padding, crop_ratio, crop_scale, cutout, cutout_p, flip, "
         "grayscale_p, magnitude, num_ops, rotate")


def refused(cfg) -> str:
    with pytest.raises(UserError) as error:
        AugmentPolicy.from_config(cfg)
    return str(error.value)


def test_unknown_keys_are_named_with_their_section():
    assert refused({"crop_pad": 4, "flipp": True, "pipeline": "tensor"}) == f"unknown augment key(s) crop_pad, flipp: known keys are {KNOWN}"
    assert refused({"affine": {"degree": 5}}) == (
        "unknown augment key(s) affine.degree: known keys are affine.degrees, affine.p, affine.scale, affine.translate")
    assert refused({"color_jitter": {"hu": 0.1, "bright": 1}}) == (
        "unknown augment key(s) color_jitter.bright, color_jitter.hu: known keys are color_jitter.brightness, "
        "color_jitter.contrast, color_jitter.hue, color_jitter.saturation")


def test_from_config_builds_the_sub_policies_and_tuples():
    p = AugmentPolicy.from_config({"crop_ratio": [0.5, 2], "crop_scale": [0.25, 1], "affine": {"degrees": 5},
                                   "color_jitter": {"hue": 0.2}})
    assert p.crop_ratio == (0.5, 2.0) and isinstance(p.crop_ratio, tuple) and p.crop_scale == (0.25, 1.0)
    assert p.affine == AffinePolicy(degrees=5) and p.color_jitter == ColorJitterPolicy(hue=0.2)
    hash(p)  # frozen and hashable: every field a value
    empty = AugmentPolicy.from_config({"affine": None, "color_jitter": {}, "crop_scale": None})
    assert empty == AugmentPolicy() and empty.affine is None and empty.color_jitter is None
    assert AugmentPolicy.from_config(None) == AugmentPolicy()


@pytest.mark.parametrize("cfg", [{"crop_scale": [0.5, 0.5]}, {"crop_scale": [0.01, 1.0]}, {"color_jitter": {"hue": 0.0, "brightness": 0.1}},
                                 {"color_jitter": {"hue": 0.5}}, {"num_ops": 0, "magnitude": 0}, {"num_ops": 3, "magnitude": 30}])
def test_policy_accepts_the_edges_of_each_range(cfg):
    AugmentPolicy.from_config(cfg)


@pytest.mark.parametrize("cfg, message", [
    ({"crop_scale": [0.0, 0.5]}, "augment.crop_scale=[0.0, 0.5] is invalid: it must be [low, high] with 0 < low <= high <= 1"),
    ({"crop_scale": [0.8, 0.5]}, "augment.crop_scale=[0.8, 0.5] is invalid: it must be [low, high] with 0 < low <= high <= 1"),
    ({"crop_scale": [0.5, 1.01]}, "augment.crop_scale=[0.5, 1.01] is invalid: it must be [low, high] with 0 < low <= high <= 1"),
    ({"color_jitter": {"hue": 0.6}}, "augment.color_jitter.hue=0.6 is invalid: it must be in [0, 0.5]"),
    ({"color_jitter": {"hue": -0.1}}, "augment.color_jitter.hue=-0.1 is invalid: it must be in [0, 0.5]"),
    ({"num_ops": -1}, "augment.num_ops=-1, augment.magnitude=9: num_ops >= 0, magnitude in [0, 30]"),
    ({"magnitude": 31}, "augment.num_ops=0, augment.magnitude=31: num_ops >= 0, magnitude in [0, 30]"),
    ({"magnitude": -1}, "augment.num_ops=0, augment.magnitude=-1: num_ops >= 0, magnitude in [0, 30]"),
])
def test_policy_refuses_values_out_of_range_in_one_line(cfg, message):
    assert refused(cfg) == message


# --------------------------------------------------------------------------- the three stages

def test_randaugment_is_refused_by_the_batched_pipeline_in_one_line():
    with pytest.raises(UserError) as error:
        BatchAugment(AugmentPolicy(num_ops=2))
    assert str(error.value) == ("augment.num_ops > 0 (RandAugment) runs per image only: use augment.pipeline=per_sample "
                                "(augment=randaug sets it)")


def test_uint8_stage_crops_without_flip_and_flips_without_crop():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=gen())
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    crop = BatchAugment(AugmentPolicy(crop_padding=2)).on_uint8(padded, gen(1))
    assert torch.equal(crop, random_crop_flip(padded, 2, False, gen(1)))
    flip = BatchAugment(AugmentPolicy(flip=True)).on_uint8(x, gen(1))
    mirrored = (flip == x.flip(3)).flatten(1).all(1) & ~(flip == x).flatten(1).all(1)
    assert 10 < int(mirrored.sum()) < 54
    assert BatchAugment(AugmentPolicy()).on_uint8(x, gen()) is x


def test_float_stage_rotates_by_angle_only():
    x = torch.rand(8, 3, 16, 16, generator=gen()) * 255
    out = BatchAugment(AugmentPolicy(rotate=20.0)).on_float(x, gen(4))
    torch.testing.assert_close(out, random_affine(x, AffinePolicy(translate=0.0, scale=0.0, degrees=20.0, p=1.0), gen(4)))


@pytest.mark.parametrize("jitter, gray", [(ColorJitterPolicy(brightness=0.5, hue=0.1), 0.0), (None, 0.5),
                                          (ColorJitterPolicy(contrast=0.5), 0.5)])
def test_float_stage_colour_ops_work_on_0_1_and_return_to_0_255(jitter, gray):
    x = torch.rand(16, 3, 8, 8, generator=gen()) * 255
    out = BatchAugment(AugmentPolicy(color_jitter=jitter, color_jitter_p=1.0, grayscale_p=gray)).on_float(x, gen(2))
    g, y = gen(2), x / 255
    if jitter is not None:
        y = color_jitter(y, jitter, 1.0, g)
    if gray:
        y = random_grayscale(y, gray, g)
    torch.testing.assert_close(out, y * 255)
    assert not torch.allclose(out, x)


def test_disabled_stages_leave_the_batch_and_the_generator_alone():
    aug = BatchAugment(AugmentPolicy())
    g = gen(3)
    state = g.get_state()
    x = torch.rand(4, 3, 8, 8)
    assert aug.on_float(x, g) is x and aug.on_normalized(x, g) is x
    assert torch.equal(g.get_state(), state)
    holes = BatchAugment(AugmentPolicy(cutout=4)).on_normalized(torch.ones(4, 3, 8, 8), gen())
    assert ((holes == 0).all(1).flatten(1).sum(1) == 16).all()
