"""Seams cifar-debugcnn added to the core: CIFAR resized once to data.image_size, the 2-class-folder
check, extra callbacks from config and a configurable number of best checkpoints."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from cifar_shared import UserError
from cifar_shared.data.sources import load_image_folder, load_source


def test_cifar_is_resized_once_to_image_size(cifar10_root):
    native, _ = load_source({"name": "cifar10", "root": cifar10_root, "download": False})
    same, _ = load_source({"name": "cifar10", "root": cifar10_root, "download": False, "image_size": 32})
    assert torch.equal(native.images, same.images)
    big, test = load_source({"name": "cifar10", "root": cifar10_root, "download": False, "image_size": 64})
    assert big.images.shape == (100, 3, 64, 64) and big.images.dtype == torch.uint8 and test.images.shape[-1] == 64
    expected = torch.nn.functional.interpolate(native.images.float(), size=(64, 64), mode="bilinear", antialias=True)
    assert (big.images.float() - expected).abs().max() <= 0.5 + 1e-4  # rounding only
    assert torch.equal(big.labels, native.labels)


def test_a_folder_with_one_class_is_refused(tmp_path):
    (tmp_path / "cat").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "cat" / f"{i}.png")
    with pytest.raises(UserError, match="needs at least 2 class folders"):
        load_image_folder(tmp_path, 32, None)


def _cfg(tmp_path, **callbacks):
    return OmegaConf.create({
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False},
        "callbacks": {"checkpoint": {"monitor": "val/acc", "mode": "max"}, "early_stopping": None, **callbacks},
        "logger": {}, "checkpoint_dir": str(tmp_path / "ck"), "output_dir": str(tmp_path),
    })


def test_extra_callbacks_and_save_top_k_come_from_config(tmp_path):
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

    from cifar_shared.engine.callbacks import RunRecorder
    from cifar_shared.engine.train import build_trainer

    cfg = _cfg(tmp_path, extra={"lr": {"_target_": "pytorch_lightning.callbacks.LearningRateMonitor", "logging_interval": "step"}, "off": None})
    cfg.callbacks.checkpoint.save_top_k = 3
    trainer = build_trainer(cfg, RunRecorder(tmp_path / "metrics.json", ["a", "b"]))
    monitors = [c for c in trainer.callbacks if isinstance(c, LearningRateMonitor)]
    assert len(monitors) == 1 and monitors[0].logging_interval == "step"
    assert trainer.checkpoint_callback.save_top_k == 3
    plain = build_trainer(_cfg(tmp_path), RunRecorder(tmp_path / "metrics.json", ["a", "b"]))
    assert not any(isinstance(c, LearningRateMonitor) for c in plain.callbacks)
    assert [c.save_top_k for c in plain.callbacks if isinstance(c, ModelCheckpoint)] == [1]
