"""``--lr-find`` on the real CIFAR-10 subset is not worse than the configured lr: 5 epochs of the
package's recipe, six seeds (``cifar_shared.testing.lr_finder_check``; figures in docs/testing.md)."""

import pytest

from cifar_shared.engine.train import train
from cifar_shared.testing.lr_finder_check import check_finder

# Six seeds, not the usual three: this net's final val acc spreads widely over seeds (sd 2.9 points over
# the configured runs of seeds 0-2), and three seeds swing with it: seeds 0-2 read -1.8 points on two
# torch threads and +1.1 on one (the same seed's runs differ between thread counts); seeds 3-5 +0.1.
SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.mark.lr_finder  # minutes on CPU: `uvx nox -s lr_finder`, not the default sessions
def test_lr_finder_is_not_worse_than_the_configured_lr(real_subset, tmp_path):
    check_finder(train, "cifar_debugcnn.conf", real_subset, tmp_path, ["epochs=5"], seeds=SEEDS)
