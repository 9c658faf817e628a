from pathlib import Path

import pytest

from cifar_shared.testing import real_subset_path, write_cifar10


@pytest.fixture
def cifar10_root(tmp_path) -> Path:
    write_cifar10(tmp_path)
    return tmp_path


@pytest.fixture
def real_subset() -> Path:
    path = real_subset_path()
    if not (path / "cifar-10-batches-py" / "data_batch_1").exists():
        pytest.skip(f"real CIFAR-10 subset not found at {path}")
    return path
