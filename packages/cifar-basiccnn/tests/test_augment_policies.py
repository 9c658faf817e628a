"""basiccnn trains with the shared RandAugment (per image) and MoCo v2 (batched) policies."""

import json
import math

import pytest

from cifar_shared.engine.train import train


@pytest.mark.parametrize("policy", ["randaug", "moco"])
def test_trains_with_the_new_policies(tmp_path, small_config, policy):
    test = train(small_config(tmp_path, f"augment={policy}", "epochs=1"))
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert len(history) == 1 and math.isfinite(history[0]["train/loss"])
    assert 0 <= test["acc"] <= 1
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == test
