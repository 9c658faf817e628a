"""``--lr-find`` on the real CIFAR-10 subset is not worse than the configured lr: 3 epochs of the package's recipe, three
seeds, the finder's mean final val acc at least the default's minus one point (docs/cifar-debugcnn.md has
the figures)."""

import pytest

from cifar_shared.engine.cli import compose_config
from cifar_shared.engine.train import train
from cifar_shared.testing.lr_finder_check import (
    assert_finder_not_worse,
    finder_against_default,
    summary,
)

RUN = ["epochs=3"]


@pytest.mark.lr_finder  # minutes on CPU: `uvx nox -s lr_finder`, not the default sessions
def test_lr_finder_is_not_worse_than_the_configured_lr(real_subset, tmp_path):
    def config(out, *overrides):
        return compose_config("cifar_debugcnn.conf", [
            "experiment=subset", f"data.root={real_subset}", *RUN, "trainer.enable_progress_bar=false", f"output_dir={out}", *overrides,
        ])

    rows = finder_against_default(train, config, tmp_path)
    print(summary(rows))
    assert_finder_not_worse(rows)
