"""Training on the real CIFAR-100 subset learns (skipped when the subset is not beside the repo)."""

import json

import pytest
import torch

from cifar_perceiver.cli import train_perceiver
from cifar_shared.data.sources import load_cifar
from cifar_shared.engine.cli import compose_config
from cifar_shared.testing import real_subset_or_skip


@pytest.mark.slow
def test_learns_real_cifar100(tmp_path):
    """experiment=subset100's small Perceiver for 2 epochs (of its 15): well beyond chance (0.01),
    and the test pass's confusion matrix is 100 x 100 over the 5,000 test images, row by true class."""
    root = real_subset_or_skip("cifar100-subset")
    cfg = compose_config("cifar_perceiver.conf", [
        "experiment=subset100", f"data.root={root}", "epochs=2", "trainer.enable_progress_bar=false", f"output_dir={tmp_path}",
    ])
    test = train_perceiver(cfg)
    assert test["acc"] >= 0.03, test["acc"]  # 15 epochs reach more (docs/cifar-perceiver.md)
    confusion = torch.tensor(test["confusion_matrix"])
    _, test_set = load_cifar("cifar100", root, download=False)
    assert confusion.shape == (100, 100)
    assert torch.equal(confusion.sum(1), torch.bincount(test_set.labels, minlength=100))  # rows: true classes
    assert confusion.trace() / 5000 == pytest.approx(test["acc"], abs=1e-4)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["classes"][0] == "apple" and len(metrics["classes"]) == 100
