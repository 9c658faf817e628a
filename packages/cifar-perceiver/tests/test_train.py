"""The real config, shrunk: defaults of the original, learning, and the new augment policies."""

import json
import math

import pytest

from cifar_shared.engine.cli import compose_config
from cifar_shared.engine.train import train


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
def test_trains_with_the_new_policies(tmp_path, small_config, policy):
    test = train(small_config(tmp_path, f"augment={policy}", "epochs=1"))
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert len(history) == 1 and math.isfinite(history[0]["train/loss"])
    assert 0 <= test["acc"] <= 1
