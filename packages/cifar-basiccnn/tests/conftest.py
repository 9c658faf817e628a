import subprocess
import sys
from pathlib import Path

import pytest

from cifar_shared.engine.cli import compose_config
from cifar_shared.testing import call_command, real_subset_or_skip

SYNTHETIC = ["data=synthetic", "data.train_size=400", "data.test_size=200"]
BIN = Path(sys.executable).parent
# the run the command-line tests share: 120 test images (predict's count), 6 batches an epoch
RUN = ["data=synthetic", "data.train_size=400", "data.test_size=120", "batch_size=64", "epochs=2"]


def shrunk_config(output_dir: Path, *overrides: str, data: list[str] = SYNTHETIC):
    """The real basiccnn config, shrunk to seconds on CPU."""
    return compose_config("cifar_basiccnn.conf", [
        *data, "epochs=2", "batch_size=64", "trainer.enable_progress_bar=false", f"output_dir={output_dir}", *overrides,
    ])


@pytest.fixture
def real_subset() -> Path:
    return real_subset_or_skip()


@pytest.fixture(scope="session")
def small_config():
    """``small_config(output_dir, *overrides)``: a fixture, so tests never import conftest by name
    (two packages' conftests would collide in one pytest run)."""
    return shrunk_config


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory) -> tuple[Path, str]:
    """One ``basiccnn-train --lr-find`` process, output piped (not a terminal, as on CI), and its
    console (stdout and stderr together): the run folder the console, CLI and run-folder tool tests
    share, so the session pays one interpreter start and one training for all of them. Tests add
    files to it (figures, eval-*.json) but never change what the run wrote."""
    out = tmp_path_factory.mktemp("cli_run")
    result = subprocess.run([str(BIN / "basiccnn-train"), *RUN, "--lr-find", "lr_find.num_steps=8", f"output_dir={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    return out, result.stdout


@pytest.fixture(scope="session")
def cli_sweep(tmp_path_factory) -> Path:
    """One ``basiccnn-train -m seed=0,1,2`` sweep (folders 0/ 1/ 2/), shared by the multirun and report tests."""
    sweep = tmp_path_factory.mktemp("sweep")
    result = subprocess.run([str(BIN / "basiccnn-train"), "-m", "seed=0,1,2", *RUN, "data.train_size=200", "data.test_size=60",
                             "trainer.enable_progress_bar=false", f"output_dir={sweep}"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep


@pytest.fixture
def in_process(monkeypatch, capsys):
    """``in_process(main, *argv)``: a command's entry function (``train_main``, ``eval_main``, ...)
    as its script calls it, in this process, without a new interpreter's imports -> (exit code,
    stdout, stderr). For what is not about the process itself; the tests that are (the installed
    scripts' exit codes, a piped console) run the real command."""

    def call(main, *argv):
        return call_command(main, argv, monkeypatch, capsys)

    return call


@pytest.fixture
def seen(monkeypatch):
    """The image batches the training and validation steps receive (cifar_shared.testing.pixels)."""
    from cifar_shared.testing.pixels import record_step_inputs

    return record_step_inputs(monkeypatch)
