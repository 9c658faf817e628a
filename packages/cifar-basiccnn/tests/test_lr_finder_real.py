"""``--lr-find`` on the real CIFAR-10 subset is not worse than the configured lr: 5 epochs of the package's recipe (Adam at 1e-3, plateau schedule), three
seeds (``cifar_shared.testing.lr_finder_check``; figures in docs/cifar-basiccnn.md)."""

import pytest

from cifar_shared.engine.train import train
from cifar_shared.testing.lr_finder_check import check_finder


@pytest.mark.lr_finder  # minutes on CPU: `uvx nox -s lr_finder`, not the default sessions
def test_lr_finder_is_not_worse_than_the_configured_lr(real_subset, tmp_path):
    check_finder(train, "cifar_basiccnn.conf", real_subset, tmp_path, ["epochs=5"])
