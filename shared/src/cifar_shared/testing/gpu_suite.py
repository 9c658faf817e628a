"""GPU tests every model package runs on its own model; they skip where no CUDA GPU is.

A package's ``tests/test_gpu.py`` imports them in one line::

    from cifar_shared.testing.gpu_suite import *  # noqa: F403

They run the package's real config, shrunk by its ``small_config`` fixture, with
``trainer.accelerator=gpu`` through the same ``train()`` the CLI calls: the GPU path that CPU
tests cannot reach (bf16 autocast, channels_last, torch.compile, the batch loader on the device,
DDP's process group). Marked ``gpu``; CI has no GPU and skips them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cifar_shared.registry import installed_packages

__all__ = ["pytest_generate_tests", "test_trains_on_the_gpu", "test_trains_on_the_real_subset_on_the_gpu",
           "test_ddp_on_one_gpu_gives_the_same_numbers"]

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GENERIC = ["data=synthetic", "data.train_size=2000", "data.test_size=200", "batch_size=128"]
GPU_RUN = ["trainer.accelerator=gpu", "trainer.enable_progress_bar=false", "logger=csv", "epochs=3"]


def pytest_generate_tests(metafunc):
    if "gpu_package" in metafunc.fixturenames:
        from cifar_shared.registry import packages_for_tests

        names = packages_for_tests(metafunc.definition.path)
        metafunc.parametrize("gpu_package", names or [pytest.param(None, marks=pytest.mark.skip(reason="no model package installed"))])


def gpu_config(request, package: str, out: Path, *overrides: str):
    """The package's small config on the GPU. Never the package's default: that may be a model
    from the hub (qvit's ViT-Large), too big for a test and not downloadable on CI."""
    try:
        small_config = request.getfixturevalue("small_config")
    except pytest.FixtureLookupError:
        pytest.fail(f"{package}'s tests/conftest.py must define the small_config fixture the shared GPU tests run")
    return small_config(out, *GENERIC, *GPU_RUN, *overrides)


def _history(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("fast", [False, True], ids=["eager", "channels_last+compile"])
def test_trains_on_the_gpu(gpu_package, request, tmp_path, fast):
    """bf16 autocast on the GPU, eager and compiled: finite losses that fall, a test accuracy."""
    from cifar_shared.engine.train import train

    flags = ["channels_last=true", "compile=true"] if fast else ["channels_last=false", "compile=false"]
    cfg = gpu_config(request, gpu_package, tmp_path, *flags)
    test = train(cfg)
    run = _history(tmp_path)
    assert run["device"]["precision"] == "bf16-mixed" and run["device"]["device"].startswith("cuda"), run["device"]
    assert run["device"]["channels_last"] is fast and run["device"]["compile"] is fast
    losses = [row["train/loss"] for row in run["history"]]
    assert all(loss is not None for loss in losses) and losses[-1] < losses[0], losses
    assert 0.0 <= test["acc"] <= 1.0


@pytest.mark.gpu
@needs_gpu
def test_trains_on_the_real_subset_on_the_gpu(gpu_package, request, tmp_path):
    """``experiment=subset`` (the package's README command) on the GPU: learns beyond chance."""
    from cifar_shared.engine.cli import compose_config
    from cifar_shared.engine.train import train
    from cifar_shared.testing import real_subset_or_skip

    root = real_subset_or_skip()
    try:  # a package whose subset command needs more (qvit: no hub weights offline) names it in a fixture
        extra = request.getfixturevalue("gpu_subset_overrides")
    except pytest.FixtureLookupError:
        extra = []
    cfg = compose_config(installed_packages()[gpu_package], [
        "experiment=subset", f"data.root={root}", f"output_dir={tmp_path}", *GPU_RUN, *extra])
    test = train(cfg)
    losses = [row["train/loss"] for row in _history(tmp_path)["history"]]
    assert losses[-1] < losses[0], losses
    assert test["acc"] > 0.15, test  # chance is 0.10


@pytest.mark.gpu
@needs_gpu
def test_ddp_on_one_gpu_gives_the_same_numbers(gpu_package, request, tmp_path):
    """``trainer.strategy=ddp trainer.devices=1`` (process group, sharded loader) = the plain run.

    Lightning's DDP reseeds the global RNG when fit starts (``reset_seed``); the plain run is
    reseeded at the same point (``faults.ReseedAtSetup``), so a model with dropout draws the same
    masks in both (the CPU twin, with gloo: ``shared/tests/test_ddp_cpu.py``).
    """
    # deterministic kernels: the GPU default (auto) picks fast ones, which differ run to run
    cfg = gpu_config(request, gpu_package, tmp_path / "plain", "epochs=2", "channels_last=false", "compile=false",
                     "trainer.deterministic=warn")
    runs = {}
    for name, strategy in (("plain", "auto"), ("ddp", "ddp")):
        out = tmp_path / name
        run_cfg = OmegaConf.merge(cfg, {"output_dir": str(out), "checkpoint_dir": str(out / "checkpoints"), "log_dir": str(out),
                                        "trainer": {"strategy": strategy, "devices": 1}})
        path = tmp_path / f"{name}.yaml"
        path.write_text(OmegaConf.to_yaml(run_cfg, resolve=True))
        reseed = ["--reseed"] if name == "plain" else []
        done = subprocess.run([sys.executable, "-m", "cifar_shared.testing.faults", "run", str(path), *reseed], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = _history(out)
    rows = {name: [{k: v for k, v in r.items() if k != "time_s"} for r in run["history"]] for name, run in runs.items()}
    assert rows["ddp"] == rows["plain"]
    assert runs["ddp"]["test"]["acc"] == runs["plain"]["test"]["acc"]
