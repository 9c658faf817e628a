from pathlib import Path

import pytest

from cifar_shared.engine.cli import compose_config
from cifar_shared.testing import real_subset_or_skip

SYNTHETIC = ["data=synthetic", "data.train_size=400", "data.test_size=200"]
# a Perceiver small enough for a CPU test: 8 latents of width 32, 2 Fourier bands
TINY = ["model.num_freq_bands=2", "model.num_latents=8", "model.latent_dim=32", "model.cross_dim_head=16",
        "model.latent_heads=2", "model.latent_dim_head=16", "augment=crop_flip"]


def shrunk_config(output_dir: Path, *overrides: str, data: list[str] = SYNTHETIC):
    """The real perceiver config, shrunk to seconds on CPU."""
    return compose_config("cifar_perceiver.conf", [
        *data, *TINY, "epochs=2", "batch_size=64", "lr=3e-3", "scheduler.warmup_epochs=0.5",
        "trainer.enable_progress_bar=false", f"output_dir={output_dir}", *overrides,
    ])


@pytest.fixture
def real_subset() -> Path:
    return real_subset_or_skip()


@pytest.fixture(scope="session")
def small_config():
    """``small_config(output_dir, *overrides)``: a fixture, so tests never import conftest by name."""
    return shrunk_config


@pytest.fixture
def seen(monkeypatch):
    """The image batches the training and validation steps receive (cifar_shared.testing.pixels)."""
    from cifar_shared.testing.pixels import record_step_inputs

    return record_step_inputs(monkeypatch)
