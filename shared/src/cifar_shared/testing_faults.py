"""Fault-injection tests every model package runs on its own model.

A package's ``tests/test_faults.py`` is one line::

    from cifar_shared.testing_faults import *  # noqa: F403

The tests then run for that package (found through ``cifar_shared.registry``; a test file under
``packages/cifar-<name>/`` runs for ``<name>``, one elsewhere for every installed package), on the
package's ``small_config`` fixture when its conftest has one, else on a generic shrink. A training
subprocess is killed at three moments (Ctrl-C mid-epoch, SIGKILL half-way through writing
``last.ckpt``, SIGKILL mid-epoch), rerun each time, and its ``metrics.json`` must
equal an unbroken run's (``time_s`` aside, see ``cifar_shared.faults.VOLATILE``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cifar_shared import faults
from cifar_shared.registry import installed_packages

__all__ = ["pytest_generate_tests", "test_kill_and_resume_matches_an_unbroken_run", "test_diverging_run_stops_at_once"]

GENERIC = ["data=synthetic", "data.train_size=320", "data.test_size=64", "batch_size=32", "trainer.enable_progress_bar=false"]
# every batch end is a mid-epoch checkpoint, so every kill point resumes mid-epoch
FAULT_RUN = ["epochs=2", "callbacks.checkpoint.every_n_minutes=1e-9", "logger=csv"]


def _packages_for(path: Path) -> list[str]:
    installed = installed_packages()
    own = [name for name in installed if f"cifar-{name}" in Path(path).resolve().parts]
    return own or list(installed)


def pytest_generate_tests(metafunc):
    if "fault_package" in metafunc.fixturenames:
        names = _packages_for(metafunc.definition.path)
        metafunc.parametrize("fault_package", names or [pytest.param(None, marks=pytest.mark.skip(reason="no model package installed"))])


def _config_file(request, package: str, out: Path, *overrides: str) -> tuple[Path, object]:
    try:
        small = request.getfixturevalue("small_config")
        cfg = small(out, *FAULT_RUN, *overrides)
    except pytest.FixtureLookupError:
        from cifar_shared.engine.cli import compose_config

        cfg = compose_config(installed_packages()[package], [*GENERIC, f"output_dir={out}", *FAULT_RUN, *overrides])
    path = out.with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path, cfg


def _steps_per_epoch(cfg) -> int:
    size = cfg.data.train_size
    n_train = size - int(round(size * cfg.data.val_fraction))
    return math.ceil(n_train / cfg.batch_size)


@pytest.mark.slow  # subprocesses: once per package, on the first Python of the matrix
def test_kill_and_resume_matches_an_unbroken_run(fault_package, request, tmp_path):
    unbroken, cfg = _config_file(request, fault_package, tmp_path / "unbroken")
    broken, _ = _config_file(request, fault_package, tmp_path / "broken")
    n = _steps_per_epoch(cfg)
    assert n >= 4, "the small config needs >= 4 training batches per epoch for these kill points"
    first = faults.attempt(faults.config_command(unbroken))
    assert first.returncode == 0, first.stderr[-3000:]
    kills = [f"sigint:{n // 2}", "ckpt_write:2", f"batch:{n + n // 2}"]  # (a kill during validation: the must-show)
    results = faults.broken_run(faults.config_command(broken), kills)
    codes = [r.returncode for r in results]
    assert codes == [130, -9, -9, 0], [r.stderr[-1500:] for r in results]
    assert results[0].stderr.strip().splitlines()[-1] == f"interrupted at epoch 1 step {n // 2}; run the same command to resume"
    a, b = faults.load(tmp_path / "unbroken"), faults.load(tmp_path / "broken")
    assert [r["epoch"] for r in b["history"]] == [1, 2]
    assert faults.comparable(b) == faults.comparable(a)
    assert not list((tmp_path / "broken" / "checkpoints").glob(".*.partial"))


def test_diverging_run_stops_at_once(fault_package, request, tmp_path):
    """An absurd lr: the first non-finite loss stops the run with one line; no NaN model is saved."""
    path, _ = _config_file(request, fault_package, tmp_path / "run", "optim=sgd", "lr=1e30")
    result = faults.attempt(faults.config_command(path))
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "at epoch 1" in line and "diverged" in line, result.stderr[-2000:]
    stopped = json.loads((tmp_path / "run" / "metrics.json").read_text())["stopped"]
    assert stopped["reason"] in ("non-finite loss", "non-finite weights") and stopped["epoch"] == 1
    for ckpt in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):  # mid-epoch saves ran before it diverged
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for k, v in state.items() if k.startswith("net.") and v.is_floating_point()), ckpt
