import json

import torch

from cifar_shared.engine.train import train


def test_224_px_trains_with_the_50176_wide_flatten(tmp_path, small_config):
    """The original's image size: synthetic images made at 224 px, a tiny set so it fits a CI runner."""
    test = train(small_config(tmp_path, "data.image_size=224", "data.train_size=20", "data.test_size=4", "epochs=1",
                              "batch_size=8", "callbacks.extra.probes.histograms=false", "callbacks.extra.probes.figures=false"))
    info = (tmp_path / "model_info.txt").read_text()
    assert "image_size=224" in info and "[1, 50176]" in info and "25,690,112" in info  # fc1: 50,176 x 512 weights
    step = json.loads((tmp_path / "debug.json").read_text())["steps"][0]
    assert {r["name"]: r["shape"] for r in step["layers"]}["classifier.flatten"] == [8, 50176]
    assert 0 <= test["acc"] <= 1 and torch.tensor(test["confusion_matrix"]).sum() == 4

