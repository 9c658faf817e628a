"""basiccnn trains with the shared RandAugment (per image) and MoCo v2 (batched) policies: the
training steps see augmented images (each policy's own mark on them), validation the originals."""

import json
import math

import pytest
import torch

from cifar_shared.data.datamodule import ImageDataModule
from cifar_shared.engine.train import train
from cifar_shared.testing.pixels import is_original, to_pixels


@pytest.mark.parametrize("policy", ["randaug", "moco"])
def test_trains_with_the_new_policies(tmp_path, small_config, seen, policy):
    cfg = small_config(tmp_path, f"augment={policy}", "epochs=1")
    test = train(cfg)
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert len(history) == 1 and math.isfinite(history[0]["train/loss"])
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == test
    assert test["acc"] > 0.2  # it learns through the augmentation: 10 classes, chance is 0.1

    dm = ImageDataModule(cfg.data, cfg.augment, cfg.batch_size, cfg.seed)
    train_px, val_px = to_pixels(seen["train"], dm), to_pixels(seen["val"], dm)
    assert len(train_px) == len(dm.train_set) and len(val_px) == len(dm.val_set)  # one epoch of each
    assert is_original(val_px, dm.val_set.images).all()  # the control: unaugmented images are recognised
    assert is_original(train_px, dm.train_set.images).float().mean() < 0.1  # nearly every training image was changed
    if policy == "randaug":  # then crop from 4 px of zero padding: a black edge row or column unless the crop is central
        black = train_px.amax(1) < 0.5
        edge = torch.stack([black[:, 0, :].all(1), black[:, -1, :].all(1), black[:, :, 0].all(1), black[:, :, -1].all(1)], 1).any(1)
        assert edge.float().mean() > 0.5
    else:  # MoCo v2's grayscale with p=0.2: images with three equal channels, which synthetic images never have
        gray = (train_px.amax(1) - train_px.amin(1)).flatten(1).amax(1) < 0.5
        assert 0.05 < gray.float().mean() < 0.4
        assert not ((val_px.amax(1) - val_px.amin(1)).flatten(1).amax(1) < 0.5).any()
