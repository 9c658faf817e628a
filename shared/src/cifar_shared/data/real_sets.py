"""Real data sets kept beside the repository (``../shared/data/NAME``) for the tests and benchmarks
that need real images; nothing downloads them."""

from __future__ import annotations

import os
from pathlib import Path

REAL_DATA = {  # name beside the repo (../shared/data/NAME) -> (env var that overrides it, file that proves it is there)
    "cifar10-subset": ("CIFAR10_SUBSET", "cifar-10-batches-py/data_batch_1"),
    "cifar10-full": ("CIFAR10_FULL", "cifar-10-batches-py/data_batch_1"),
    "cifar100-subset": ("CIFAR100_SUBSET", "cifar-100-python/train"),
}


def real_subset_path(name: str = "cifar10-subset") -> Path:
    """A real data set kept beside the repository (``../shared/data/NAME``), or where its env var points."""
    env = os.environ.get(REAL_DATA[name][0])
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[4]  # data/ -> cifar_shared/ -> src/ -> shared/ -> the repo
    return repo.parent / "shared" / "data" / name
