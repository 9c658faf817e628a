from pathlib import Path

import pytest

from cifar_shared.engine.cli import compose_config
from cifar_shared.testing import real_subset_or_skip

SYNTHETIC = ["data=synthetic", "data.train_size=400", "data.test_size=200"]


def small_config(output_dir: Path, *overrides: str, data: list[str] = SYNTHETIC):
    """The real basiccnn config, shrunk to seconds on CPU."""
    return compose_config("cifar_basiccnn.conf", [
        *data, "epochs=2", "batch_size=64", "trainer.enable_progress_bar=false", f"output_dir={output_dir}", *overrides,
    ])


@pytest.fixture
def real_subset() -> Path:
    return real_subset_or_skip()
