"""``--lr-find`` on the real CIFAR-10 subset is not worse than the configured lr: 2 epochs of experiment=subset's small Perceiver, three
seeds (``cifar_shared.testing.lr_finder_check``; figures in docs/cifar-perceiver.md)."""

import pytest

from cifar_perceiver.cli import train_perceiver
from cifar_shared.testing.lr_finder_check import check_finder


@pytest.mark.lr_finder  # minutes on CPU: `uvx nox -s lr_finder`, not the default sessions
def test_lr_finder_is_not_worse_than_the_configured_lr(real_subset, tmp_path):
    check_finder(train_perceiver, "cifar_perceiver.conf", real_subset, tmp_path, ["epochs=2"])
