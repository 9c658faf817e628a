"""Tiny on-disk datasets in the real formats, for the tests of every package."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, per_batch: int = 20, test: int = 10, seed: int = 0) -> Path:
    """CIFAR-10 in the official python format (py2-style pickles, N×3072 uint8 rows), tiny."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f, protocol=2)
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        batch = {"batch_label": name, "labels": rng.integers(0, 10, n).tolist(), "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder


def real_subset_path() -> Path:
    """The real CIFAR-10 subset kept beside the repository (``../shared/data/cifar10-subset``)."""
    import os

    env = os.environ.get("CIFAR10_SUBSET")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / "cifar10-subset"


def real_subset_or_skip() -> Path:
    """The real subset's path, or a pytest skip that says where it was looked for."""
    import pytest

    path = real_subset_path()
    if not (path / "cifar-10-batches-py" / "data_batch_1").exists():
        pytest.skip(f"real CIFAR-10 subset not found at {path} (set CIFAR10_SUBSET=PATH to point at it)")
    return path
