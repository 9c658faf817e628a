"""The real config, shrunk: defaults of the original, learning, and the new augment policies."""

import json
import math

import pytest
import torch

from cifar_shared.data.datamodule import ImageDataModule
from cifar_shared.engine.cli import compose_config
from cifar_shared.engine.train import train
from cifar_shared.testing.pixels import is_original, to_pixels


def test_defaults_are_the_originals():
    cfg = compose_config("cifar_perceiver.conf", [])
    assert cfg.data.name == "cifar100" and cfg.model.depth == 1 and cfg.model.num_freq_bands == 8
    assert (cfg.lr, cfg.batch_size, cfg.optim.lr) == (5e-4, 256, 5e-4)
    assert cfg.optim._target_ == "torch.optim.AdamW"
    assert cfg.scheduler._target_.endswith("schedulers.cosine") and cfg.scheduler.warmup_epochs > 0
    assert cfg.augment.num_ops == 2 and cfg.augment.pipeline == "per_sample"  # RandAugment
    step = compose_config("cifar_perceiver.conf", ["scheduler=step"])
    assert step.scheduler._target_.endswith("schedulers.step") and step.scheduler.warmup_epochs == cfg.scheduler.warmup_epochs


def test_it_learns_on_synthetic(tmp_path, small_config):
    test = train(small_config(tmp_path, "epochs=3"))
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    assert test["acc"] > 0.2  # 10 classes: chance is 0.1 (this tiny Perceiver reaches ~0.3 in 18 steps)
    assert "FLOPs per image: forward" in (tmp_path / "model_info.txt").read_text()


@pytest.mark.parametrize("policy", ["randaug", "moco"])
def test_trains_with_the_new_policies(tmp_path, small_config, seen, policy):
    """The Perceiver trains on each policy's augmented images (validation on the originals, the
    control that an unchanged image is recognised), each policy leaving its own mark."""
    cfg = small_config(tmp_path, f"augment={policy}", "epochs=1")
    train(cfg)
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert len(history) == 1 and math.isfinite(history[0]["train/loss"])
    dm = ImageDataModule(cfg.data, cfg.augment, cfg.batch_size, cfg.seed)
    train_px, val_px = to_pixels(seen["train"], dm), to_pixels(seen["val"], dm)
    assert len(train_px) == len(dm.train_set) and len(val_px) == len(dm.val_set)  # one epoch of each
    assert is_original(val_px, dm.val_set.images).all()
    assert is_original(train_px, dm.train_set.images).float().mean() < 0.1  # nearly every training image was changed
    if policy == "randaug":  # then crop from 4 px of zero padding: a black edge row or column unless the crop is central
        black = train_px.amax(1) < 0.5
        edge = torch.stack([black[:, 0, :].all(1), black[:, -1, :].all(1), black[:, :, 0].all(1), black[:, :, -1].all(1)], 1).any(1)
        assert edge.float().mean() > 0.5
    else:  # MoCo v2's grayscale with p=0.2: images with three equal channels, which synthetic images never have
        gray = (train_px.amax(1) - train_px.amin(1)).flatten(1).amax(1) < 0.5
        assert 0.05 < gray.float().mean() < 0.4
