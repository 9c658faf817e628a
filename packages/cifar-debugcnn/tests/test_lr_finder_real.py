"""``--lr-find`` on the real CIFAR-10 subset is not worse than the configured lr: 5 epochs of the
package's recipe, three seeds (``cifar_shared.testing.lr_finder_check``; figures in docs/testing.md)."""

import pytest

from cifar_shared.engine.train import train
from cifar_shared.testing.lr_finder_check import check_finder


@pytest.mark.lr_finder  # minutes on CPU: `uvx nox -s lr_finder`, not the default sessions
@pytest.mark.xfail(strict=True, reason=(
    "measured: --lr-find's mean final val acc 0.5043 against the configured lr's 0.5225 (-1.8 points; "
    "seeds 0/1/2: 0.5129/0.4946/0.5054 against 0.5526/0.4946/0.5204). The valley picks (7.6e-4, 1e-3, 1.3e-3) "
    "sit within 30 % of the configured 1e-3; the gap is within the seeds' spread (sd 0.029), but over the "
    "one-point bar. Strict: a finder change that passes it turns this red until the mark goes"))
def test_lr_finder_is_not_worse_than_the_configured_lr(real_subset, tmp_path):
    check_finder(train, "cifar_debugcnn.conf", real_subset, tmp_path, ["epochs=5"])
