from pathlib import Path

import pytest

from cifar_shared.engine.cli import compose_config
from cifar_shared.testing import real_subset_or_skip

# ResNet-18 with the CIFAR stem costs ~16x the ImageNet stem's compute at 32x32, so the plumbing
# tests use the ImageNet stem; the CIFAR stem is covered by test_model and the model_info test.
FAST = ["model.stem=imagenet", "trainer.enable_progress_bar=false"]


def shrunk_config(output_dir: Path, *overrides: str):
    """The real resnet config, shrunk to seconds on CPU."""
    return compose_config("cifar_resnet.conf", [
        "data=synthetic", "data.train_size=256", "data.test_size=64", "epochs=1", "batch_size=32",
        *FAST, f"output_dir={output_dir}", *overrides,
    ])


@pytest.fixture
def real_subset() -> Path:
    return real_subset_or_skip()


@pytest.fixture(scope="session")
def small_config():
    """``small_config(output_dir, *overrides)``: a fixture, so tests never import conftest by name
    (two packages' conftests would collide in one pytest run)."""
    return shrunk_config


@pytest.fixture
def seen(monkeypatch):
    """The image batches the training and validation steps receive (cifar_shared.testing.pixels)."""
    from cifar_shared.testing.pixels import record_step_inputs

    return record_step_inputs(monkeypatch)
