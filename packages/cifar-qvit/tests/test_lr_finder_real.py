"""``--lr-find`` on the real CIFAR-10 subset is not worse than the configured lr: 2 epochs of the
tiny random-init 4-bit ViT, three seeds (``cifar_shared.testing.lr_finder_check``; figures in
docs/testing.md)."""

import pytest

from cifar_qvit.cli import train_qvit
from cifar_shared.testing.lr_finder_check import check_finder


@pytest.mark.lr_finder  # minutes on CPU: `uvx nox -s lr_finder`, not the default sessions
@pytest.mark.xfail(strict=True, reason=(
    "measured: --lr-find's mean final val acc 0.2082 against the configured lr's 0.2368 (-2.9 points; "
    "seeds 0/1/2: 0.2361/0.1845/0.2039 against 0.2747/0.1974/0.2382). The valley picks (8.3e-5, 5.5e-5, 6.3e-5) "
    "sit 4-5x under AdamW's configured 3e-4 on sweeps whose loss is lowest at ~1e-3: valley's safe constant lr "
    "is too slow for a 2-epoch warm-up-cosine run. Strict: a finder change that passes it turns this red until the mark goes"))
def test_lr_finder_is_not_worse_than_the_configured_lr(real_subset, tmp_path):
    check_finder(train_qvit, "cifar_qvit.conf", real_subset, tmp_path, ["epochs=2", "model.pretrained=null", "model.size=tiny", "logger=tensorboard"])
