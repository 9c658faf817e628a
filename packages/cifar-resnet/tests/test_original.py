"""``experiment=original``: the original project's recipe to the letter, and its albumentations
pipeline reproduced pixel for pixel by the shared per-sample path."""

import warnings

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from cifar_shared.data.augment import AugmentPolicy
from cifar_shared.data.per_sample import per_sample_transform
from cifar_shared.engine.cli import compose_config


@pytest.fixture(scope="module")
def original():
    return compose_config("cifar_resnet.conf", ["experiment=original"])


def test_the_originals_recipe(original):
    cfg = original
    assert cfg.data.name == "cifar100" and (cfg.batch_size, cfg.epochs, cfg.lr) == (64, 50, 0.113)
    assert cfg.optim._target_ == "torch.optim.SGD" and (cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.nesterov) == (0.9, 1e-4, False)
    s = cfg.scheduler
    assert s._target_.endswith("onecycle") and s.max_lr is None
    assert (s.pct_start, s.anneal_strategy, s.div_factor, s.final_div_factor) == (0.2, "cos", 100, 1000)
    assert cfg.augment.pipeline == "per_sample" and cfg.trainer.max_epochs == 50
    net = instantiate(cfg.model, num_classes=100)
    assert sum(p.numel() for p in net.parameters()) == 11_227_812  # the original's model_info.txt


def the_originals_pipeline(mean, std, seed):
    """The original's training transform, written as it configures it (albumentations 2 names)."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "ShiftScaleRotate is a special case of Affine"
        return A.Compose([
            A.HorizontalFlip(p=0.5),
            A.ShiftScaleRotate(shift_limit=0.0625, scale_limit=0.1, rotate_limit=45, border_mode=0, fill=0, p=0.5),
            A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(16, 16), hole_width_range=(16, 16),
                            fill=tuple(int(round(m * 255)) for m in mean), p=0.5),
            A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
            ToTensorV2(),
        ], seed=seed)


def test_per_sample_path_gives_the_originals_pixels(original):
    cfg = original
    ours = per_sample_transform(AugmentPolicy.from_config(cfg.augment), cfg.data.mean, cfg.data.std, 32, seed=7)
    theirs = the_originals_pipeline(cfg.data.mean, cfg.data.std, seed=7)
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    mean, std = torch.tensor(cfg.data.mean).view(3, 1, 1), torch.tensor(cfg.data.std).view(3, 1, 1)
    augmented = 0
    for image in images:
        a, b = ours(image), theirs(image=image)["image"]
        assert torch.equal(a, b)
        plain = (torch.from_numpy(image).permute(2, 0, 1) / 255 - mean) / std
        augmented += not torch.allclose(a, plain, atol=1e-4)
    assert augmented > 40  # 1 - 0.5^3 = 7/8 of the images get at least one op: the comparison is not vacuous
