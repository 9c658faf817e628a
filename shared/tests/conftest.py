from pathlib import Path

import pytest

from cifar_shared.testing import real_subset_or_skip, write_cifar10


@pytest.fixture
def cifar10_root(tmp_path) -> Path:
    write_cifar10(tmp_path)
    return tmp_path


@pytest.fixture
def real_subset() -> Path:
    return real_subset_or_skip()
