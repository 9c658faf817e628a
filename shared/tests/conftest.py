import pickle
from pathlib import Path

import numpy as np
import pytest

REAL_SUBSET = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-subset"


def write_cifar10(root: Path, per_batch: int = 20, test: int = 10, seed: int = 0) -> Path:
    """Tiny CIFAR-10 in the official python format (py2-style pickles, N×3072 uint8 rows)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, f, protocol=2)
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        batch = {"batch_label": name, "labels": rng.integers(0, 10, n).tolist(), "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder


@pytest.fixture
def cifar10_root(tmp_path) -> Path:
    write_cifar10(tmp_path)
    return tmp_path


@pytest.fixture
def real_subset() -> Path:
    if not (REAL_SUBSET / "cifar-10-batches-py" / "data_batch_1").exists():
        pytest.skip(f"real CIFAR-10 subset not found at {REAL_SUBSET}")
    return REAL_SUBSET
