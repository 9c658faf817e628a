from pathlib import Path

import pytest

from cifar_shared.engine.cli import compose_config
from cifar_shared.testing import real_subset_or_skip

SYNTHETIC = ["data=synthetic", "data.train_size=400", "data.test_size=100"]


def shrunk_config(output_dir: Path, *overrides: str, data: list[str] = SYNTHETIC):
    """The real debugcnn config (probes on), shrunk to seconds on CPU."""
    return compose_config("cifar_debugcnn.conf", [
        *data, "epochs=2", "batch_size=64", "trainer.enable_progress_bar=false", f"output_dir={output_dir}", *overrides,
    ])


@pytest.fixture
def real_subset() -> Path:
    return real_subset_or_skip()


@pytest.fixture(scope="session")
def small_config():
    """``small_config(output_dir, *overrides)``: a fixture, so tests never import conftest by name."""
    return shrunk_config
