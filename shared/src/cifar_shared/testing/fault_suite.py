"""Fault-injection tests every model package runs on its own model.

A package's ``tests/test_faults.py`` is one line::

    from cifar_shared.testing.fault_suite import *  # noqa: F403

The tests then run once for that package, on the ``small_config`` fixture its conftest must have
(the package's real config shrunk to seconds; never its default config, which may be large). A training
subprocess is SIGKILLed mid-epoch 2 and rerun, and its ``metrics.json`` must equal an unbroken
run's (``time_s`` aside, see ``cifar_shared.testing.faults.VOLATILE``): what a resume must restore
(weights, optimizer, RNG, metric accumulators, loader position) depends on the package's model
and config. A run that diverges must stop at once.

The unbroken reference and the diverging run train in the test's own process (``run_in_process``:
``faults.run_config``, the same code the subprocesses run, without a new interpreter's imports);
only the runs that are killed need a process of their own. What tests shared code alone (Ctrl-C:
save, exit 130 and the resume line; a kill half-way through a checkpoint write; a second resume in
a row) runs once, in shared/tests/test_faults.py, on ``cifar_shared.testing.tiny_net``
(``tiny_config``), not once per package.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from cifar_shared.engine.train import close_run_logs
from cifar_shared.testing import faults

__all__ = ["test_kill_and_resume_matches_an_unbroken_run", "test_diverging_run_stops_at_once"]

GENERIC = ["data=synthetic", "data.train_size=320", "data.test_size=64", "batch_size=32", "trainer.enable_progress_bar=false"]
# every batch end is a mid-epoch checkpoint, so every kill point resumes mid-epoch
FAULT_RUN = ["epochs=2", "callbacks.checkpoint.every_n_minutes=1e-9", "logger=csv"]
# the unbroken reference saves at epoch ends only: it is cheaper, and the killed run, which saves
# after every batch, must still match it (how often a run saves must not change its numbers)
UNBROKEN = ["callbacks.checkpoint.every_n_minutes=null"]


def write_config(cfg, out: Path) -> Path:
    """``cfg`` resolved into ``out.yaml``, the file ``faults.config_command`` runs."""
    path = out.with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def four_batches(cfg):
    """Synthetic data cut to 4 training batches an epoch (the kill points need no more: every
    batch beyond costs each of the test's runs a step and a checkpoint write) and a small test set."""
    if cfg.data.name != "synthetic":
        return cfg
    b, vf = cfg.batch_size, cfg.data.val_fraction
    size = int(4 * b / (1 - vf)) + 3
    while size - int(round(size * vf)) > 4 * b:
        size -= 1
    with open_dict(cfg):
        cfg.data.train_size = min(cfg.data.train_size, size)
        cfg.data.test_size = min(cfg.data.test_size, 64)
    return cfg


def _config_file(small_config, out: Path, *overrides: str) -> tuple[Path, object]:
    cfg = small_config(out, *FAULT_RUN, *overrides)
    return write_config(four_batches(cfg), out), cfg


def tiny_config(out: Path, *overrides: str) -> tuple[Path, object]:
    """The shared defaults on ``cifar_shared.testing.tiny_net``: fault runs of shared code that need
    a model but not a package's (the shared nox session installs none)."""
    from cifar_shared.engine.cli import compose_config

    with warnings.catch_warnings():  # train_base is meant to be included, so it has no _self_ entry
        warnings.filterwarnings("ignore", message=".*Defaults list is missing `_self_`", category=UserWarning)
        cfg = compose_config("cifar_shared.conf", [*GENERIC, f"output_dir={out}", *FAULT_RUN, *overrides], config_name="train_base")
    with open_dict(cfg):
        cfg.name = "tiny"
        cfg.model = {"_target_": "cifar_shared.testing.tiny_net"}
    return write_config(four_batches(cfg), out), cfg


def run_in_process(path: Path, capsys, fault: str | None = None) -> tuple[int, str, str]:
    """``python -m cifar_shared.testing.faults run PATH [--fault SPEC]`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        faults.run_config(str(path), fault)
        code = 0
    except SystemExit as e:
        code = e.code
    finally:  # the run's log handlers write to this test's captured streams: close them with it
        close_run_logs()
    out, err = capsys.readouterr()
    return code, out, err


def steps_per_epoch(cfg) -> int:
    size = cfg.data.train_size
    n_train = size - int(round(size * cfg.data.val_fraction))
    return math.ceil(n_train / cfg.batch_size)


@pytest.mark.slow  # subprocesses: once per package, on the first Python of the matrix
def test_kill_and_resume_matches_an_unbroken_run(small_config, tmp_path, capsys):
    """SIGKILL mid-epoch 2 (no chance to save), rerun: it resumes from the last mid-epoch checkpoint
    and must end with the unbroken run's numbers, for this package's model, optimizer and data."""
    unbroken, _ = _config_file(small_config, tmp_path / "unbroken", *UNBROKEN)
    broken, cfg = _config_file(small_config, tmp_path / "broken")
    n = steps_per_epoch(cfg)
    assert n >= 4, "the small config needs >= 4 training batches per epoch for this kill point"
    code, _, err = run_in_process(unbroken, capsys)
    assert code == 0, err[-3000:]
    results = faults.broken_run(faults.config_command(broken), [f"batch:{n + n // 2}"])
    assert [r.returncode for r in results] == [-9, 0], [r.stderr[-1500:] for r in results]
    assert "resuming from" in (tmp_path / "broken" / "train.log").read_text()
    a, b = faults.load(tmp_path / "unbroken"), faults.load(tmp_path / "broken")
    assert [r["epoch"] for r in b["history"]] == [1, 2]
    assert faults.comparable(b) == faults.comparable(a)
    assert not list((tmp_path / "broken" / "checkpoints").glob(".*.partial"))


@pytest.mark.filterwarnings("ignore:Encountered `nan` values")  # torchmetrics, on the diverged batch
def test_diverging_run_stops_at_once(small_config, tmp_path, capsys):
    """An absurd lr: the first non-finite loss stops the run with one line; no NaN model is saved."""
    path, _ = _config_file(small_config, tmp_path / "run", "optim=sgd", "lr=1e30")
    code, _, err = run_in_process(path, capsys)
    assert code == 2, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "at epoch 1" in line and "diverged" in line, err[-2000:]
    stopped = json.loads((tmp_path / "run" / "metrics.json").read_text())["stopped"]
    assert stopped["reason"] in ("non-finite loss", "non-finite weights") and stopped["epoch"] == 1
    for ckpt in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):  # mid-epoch saves ran before it diverged
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for k, v in state.items() if k.startswith("net.") and v.is_floating_point()), ckpt
