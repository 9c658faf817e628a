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
