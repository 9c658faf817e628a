"""``--lr-find`` on the real CIFAR-10 subset (``cifar_shared.testing.lr_finder_check``; figures in
docs/cifar-resnet.md): training at the finder's OneCycle peak is not worse than at the configured
0.1, with either stem, and on the default CIFAR-stem network the peak lands where ResNet-18 trains."""

import json

import pytest

from cifar_resnet.cli import train_resnet
from cifar_shared.engine.cli import compose_config
from cifar_shared.testing.lr_finder_check import SEEDS, check_finder


@pytest.mark.lr_finder  # minutes on CPU: `uvx nox -s lr_finder`, not the default sessions
def test_lr_finder_is_not_worse_than_the_configured_lr(real_subset, tmp_path):
    """1 epoch of OneCycle, three seeds, the default CIFAR-stem network (~2 min an epoch on 2 CPU cores)."""
    check_finder(train_resnet, "cifar_resnet.conf", real_subset, tmp_path, ["epochs=1"])


@pytest.mark.lr_finder
def test_lr_finder_is_not_worse_with_the_imagenet_stem(real_subset, tmp_path):
    """The same with the ImageNet stem (~10x cheaper on CPU), where the configured 0.1 is far off."""
    check_finder(train_resnet, "cifar_resnet.conf", real_subset, tmp_path, ["epochs=1", "model.stem=imagenet"])


@pytest.mark.lr_finder
def test_onecycle_pick_lands_where_resnet18_trains(real_subset, tmp_path):
    """``resnet-train --lr-find-only`` (the CIFAR stem, the default), three seeds: the peak is in
    [0.01, 1.0], where the docs' 1-epoch grid trains this network (0.03 best), not on the flat start of
    the sweep where the old dip-reading rule picked (5.25e-3)."""
    picks = []
    for seed in SEEDS:
        out = tmp_path / f"s{seed}"
        train_resnet(compose_config("cifar_resnet.conf", [
            "experiment=subset", f"data.root={real_subset}", "lr_find.enabled=true", "lr_find.only=true", f"seed={seed}",
            "trainer.enable_progress_bar=false", f"output_dir={out}",
        ]))
        picks.append(json.loads((out / "metrics.json").read_text())["lr_find"]["suggestion"])
    print(f"onecycle picks, CIFAR stem, seeds {SEEDS}: {picks}")
    assert all(p is not None and 0.01 <= p <= 1.0 for p in picks), picks
