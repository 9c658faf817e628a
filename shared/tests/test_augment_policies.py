"""rotate, colour jitter, grayscale, random resized crop (batched) and RandAugment (per image):
each batched op against torchvision's functional ops on single images, per-image randomness,
seeds, value ranges, and the batch contract of both pipelines."""

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from omegaconf import OmegaConf
from torchvision.transforms import InterpolationMode

from cifar_shared import UserError
from cifar_shared.data import AugmentPolicy, BatchAugment, ShardedPermutation, TensorBatchLoader
from cifar_shared.data.augment import (
    ColorJitterPolicy,
    adjust_hue,
    color_jitter,
    random_grayscale,
    resize_boxes,
    resized_crop_boxes,
)
from cifar_shared.data.per_sample import per_sample_loader, per_sample_transform
from cifar_shared.data.sources import make_synthetic

MEAN, STD = [0.45, 0.46, 0.47], [0.27, 0.26, 0.28]
CONF = __import__("importlib").resources.files("cifar_shared.conf") / "augment"


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=6, seed=0):
    return torch.rand(n, 3, 12, 10, generator=gen(seed))  # floats in [0, 1], non-square


def policy(name: str) -> AugmentPolicy:
    return AugmentPolicy.from_config(OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml")))


def test_color_jitter_matches_torchvision_per_image_factors_and_order():
    x, n = images(), 6
    jit = ColorJitterPolicy(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    out = color_jitter(x, jit, 1.0, gen(3))
    # the same draws, in the same order, as color_jitter makes them
    g = gen(3)
    b = 0.6 + 0.8 * torch.rand(n, generator=g)
    c = 0.6 + 0.8 * torch.rand(n, generator=g)
    s = 0.6 + 0.8 * torch.rand(n, generator=g)
    h = -0.1 + 0.2 * torch.rand(n, generator=g)
    order = torch.argsort(torch.rand(n, 4, generator=g), dim=1)
    ops = [lambda im, i: TF.adjust_brightness(im, b[i].item()), lambda im, i: TF.adjust_contrast(im, c[i].item()),
           lambda im, i: TF.adjust_saturation(im, s[i].item()), lambda im, i: TF.adjust_hue(im, h[i].item())]
    for i in range(n):
        ref = x[i]
        for k in order[i].tolist():
            ref = ops[k](ref, i)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=1e-5)
    assert len({tuple(o.tolist()) for o in order}) > 1  # the images do not share one order


def test_color_jitter_on_subsets_equals_every_image_through_every_op():
    """The CPU's way (each op on the images that picked it) and the GPU's (all images, ``where``)."""
    x = images(n=32)
    jit = ColorJitterPolicy(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    torch.testing.assert_close(color_jitter(x, jit, 0.8, gen(5), by_subset=True),
                               color_jitter(x, jit, 0.8, gen(5), by_subset=False), atol=1e-6, rtol=1e-6)


def test_hue_matches_torchvision_per_image():
    x = images()
    shifts = torch.linspace(-0.5, 0.5, 6)
    out = adjust_hue(x, shifts)
    for i in range(6):
        torch.testing.assert_close(out[i], TF.adjust_hue(x[i], shifts[i].item()), atol=1e-5, rtol=1e-5)


def test_jitter_probability_leaves_the_others_untouched():
    x = images(400)
    out = color_jitter(x, ColorJitterPolicy(brightness=0.5), 0.8, gen(1))
    changed = (out - x).abs().amax((1, 2, 3)) > 1e-6
    assert 0.7 < changed.float().mean() < 0.9


def test_grayscale_per_image_with_probability():
    x = images(400)
    out = random_grayscale(x, 0.2, gen(0))
    gray = (out[:, 0] == out[:, 1]).all(-1).all(-1) & (out[:, 1] == out[:, 2]).all(-1).all(-1)
    assert 0.12 < gray.float().mean() < 0.28
    for i in torch.nonzero(gray).flatten()[:5].tolist():
        torch.testing.assert_close(out[i], TF.rgb_to_grayscale(x[i], num_output_channels=3), atol=1e-6, rtol=0)
    assert torch.equal(out[~gray], x[~gray])


def test_resized_crop_matches_torchvision_resized_crop():
    x = images(8)
    boxes = resized_crop_boxes(8, 12, 10, (0.2, 1.0), (3 / 4, 4 / 3), gen(5))
    out = resize_boxes(x, boxes)
    for i, (top, left, h, w) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(x[i], top, left, h, w, [12, 10], interpolation=InterpolationMode.BILINEAR, antialias=False)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=1e-5)


def test_resized_crop_boxes_follow_the_scale_and_ratio():
    boxes = resized_crop_boxes(2000, 32, 32, (0.2, 1.0), (3 / 4, 4 / 3), gen(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = h * w / 1024
    assert area.min() > 0.15 and area.max() <= 1.0 and 0.5 < area.mean() < 0.7  # ~uniform on [0.2, 1]
    ratio = w / h
    assert ratio.min() >= 0.6 and ratio.max() <= 1.7  # 3/4..4/3, rounding of small boxes aside
    assert len(set(map(tuple, boxes.tolist()))) > 500  # a box per image


@pytest.mark.parametrize("name", ["moco", "flip_rotate_jitter"])
def test_batched_policies_randomize_per_image_keep_range_and_follow_the_seed(name):
    aug = BatchAugment(policy(name))
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).expand(16, 3, 32, 32).contiguous()

    def run(seed):
        return aug.on_float(aug.on_uint8(x, gen(seed)).float(), gen(seed))

    out = run(0)
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255 + 1e-3
    assert len({o.sum().item() for o in out}) == 16  # the same image, 16 different results
    assert torch.equal(out, run(0)) and not torch.equal(out, run(1))


def test_rotate_turns_a_bar_by_at_most_the_angle():
    aug = BatchAugment(AugmentPolicy(rotate=10.0))
    x = torch.zeros(64, 1, 33, 33)
    x[:, :, 16, 4:29] = 1.0  # a horizontal bar through the centre
    out = aug.on_float(x, gen(0))
    angles = []
    for img in out[:, 0]:
        ys, xs = torch.nonzero(img > 0.5, as_tuple=True)
        slope = torch.linalg.lstsq(torch.stack([xs.float(), torch.ones_like(xs.float())], 1), ys.float()[:, None]).solution[0]
        angles.append(math.degrees(math.atan(slope.item())))
    assert max(abs(a) for a in angles) <= 10.5 and max(angles) - min(angles) > 10


def test_randaug_is_per_sample_only_and_says_so():
    p = policy("randaug")
    assert p.per_sample_only and p.num_ops == 2 and p.magnitude == 9
    with pytest.raises(UserError, match="per image only: use augment.pipeline=per_sample"):
        BatchAugment(p)


def test_randaug_per_sample_randomizes_each_image_and_follows_the_seed():
    t = per_sample_transform(policy("randaug"), MEAN, STD, 32)
    image = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8).numpy()
    torch.manual_seed(0)
    outs = [t(image) for _ in range(8)]
    assert all(o.shape == (3, 32, 32) and o.dtype == torch.float32 for o in outs)
    assert len({o.sum().item() for o in outs}) == 8
    torch.manual_seed(0)
    assert all(torch.equal(a, t(image)) for a in outs)
    lo, hi = (0 - torch.tensor(MEAN)) / torch.tensor(STD), (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    stacked = torch.stack(outs)
    assert (stacked >= lo.view(1, 3, 1, 1) - 1e-5).all() and (stacked <= hi.view(1, 3, 1, 1) + 1e-5).all()


@pytest.mark.parametrize("name", ["randaug", "moco", "flip_rotate_jitter"])
def test_both_pipelines_keep_the_batch_contract(name):
    data, _ = make_synthetic(10, 256, 10, 32, seed=0)
    p = policy(name)
    sampler = ShardedPermutation(len(data), seed=0)
    loaders = [per_sample_loader(data.images, data.labels, per_sample_transform(p, MEAN, STD, 32), 64, sampler, num_workers=0)]
    if not p.per_sample_only:
        loaders.append(TensorBatchLoader(data.images, data.labels, 64, MEAN, STD, sampler, BatchAugment(p)))
    batches = [list(loader) for loader in loaders]
    for per_loader in batches:
        assert [x.shape for x, _ in per_loader] == [(64, 3, 32, 32)] * 4
        assert all(x.dtype == torch.float32 and y.dtype == torch.int64 for x, y in per_loader)
    if len(batches) == 2:  # same sampler: same labels; same policy: similar pixel statistics
        assert all(torch.equal(a[1], b[1]) for a, b in zip(*batches))
        xt, xp = (torch.cat([x for x, _ in b]) for b in batches)
        assert torch.allclose(xt.mean((0, 2, 3)), xp.mean((0, 2, 3)), atol=0.1)


def test_policy_keys_are_checked():
    with pytest.raises(UserError, match="unknown augment key.*color_jitter.hu.*color_jitter.hue"):
        AugmentPolicy.from_config({"color_jitter": {"hu": 0.1}})
    with pytest.raises(UserError, match="augment.crop_scale"):
        AugmentPolicy.from_config({"crop_scale": [0.5, 1.5]})
    p = policy("flip_rotate_jitter")
    assert p.flip and p.rotate == 10 and p.color_jitter == ColorJitterPolicy(0.2, 0.2, 0.2, 0.1) and p.crop_padding == 0
    m = policy("moco")
    assert m.crop_scale == (0.2, 1.0) and m.color_jitter_p == 0.8 and m.grayscale_p == 0.2 and m.flip
