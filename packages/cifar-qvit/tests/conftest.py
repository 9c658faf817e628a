from pathlib import Path

import pytest

from cifar_shared.engine.cli import compose_config
from cifar_shared.testing import real_subset_or_skip

SYNTHETIC = ["data=synthetic", "data.train_size=160", "data.test_size=64"]


def shrunk_config(output_dir: Path, *overrides: str, data: list[str] = SYNTHETIC):
    """The real qvit config, shrunk to seconds on CPU: the tiny random ViT, TensorBoard only."""
    return compose_config("cifar_qvit.conf", [
        *data, "model.pretrained=null", "model.size=tiny", "epochs=1", "batch_size=32", "logger=tensorboard",
        "trainer.enable_progress_bar=false", f"output_dir={output_dir}", *overrides,
    ])


@pytest.fixture
def real_subset() -> Path:
    return real_subset_or_skip()


@pytest.fixture(scope="session")
def small_config():
    """``small_config(output_dir, *overrides)``: a fixture, so tests never import conftest by name."""
    return shrunk_config


@pytest.fixture(scope="session")
def fp_run(tmp_path_factory):
    """A finished full-precision run folder (the teacher/init of the QAT tests)."""
    from cifar_qvit.cli import train_qvit as train

    out = tmp_path_factory.mktemp("fp")
    test = train(shrunk_config(out, "model.nbits_w=32", "model.nbits_a=32", "epochs=2"))
    return out, test


@pytest.fixture
def gpu_subset_overrides() -> list[str]:
    """The GPU subset test: no hub weights offline, so the random-init 224-px ViT-Small (the resize path)."""
    return ["model.pretrained=null", "model.size=small", "batch_size=64", "lr=1e-3"]


def write_cifar100(root: Path, train: int = 300, test: int = 200, seed: int = 0) -> Path:
    """CIFAR-100 in the official python layout (cifar-100-python/{train,test,meta}), tiny: random
    images, every fine class present in both splits."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i:02d}" for i in range(100)],
                     "coarse_label_names": [f"super{i:02d}" for i in range(20)]}, f, protocol=2)
    for name, n in (("train", train), ("test", test)):
        fine = (np.arange(n) % 100).tolist()
        batch = {"batch_label": f"{name} batch", "fine_labels": fine, "coarse_labels": [c // 5 for c in fine],
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder


@pytest.fixture
def cifar100_root(tmp_path) -> Path:
    write_cifar100(tmp_path / "cifar100")
    return tmp_path / "cifar100"
