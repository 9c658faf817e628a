"""The shared parts of surviving faults, once, on ``cifar_shared.testing.tiny_net`` (each package
runs ``cifar_shared.testing.fault_suite`` on its own model through its own tests/test_faults.py)."""

import os
import signal
import subprocess
import time

import pytest
import torch

from cifar_shared.testing import faults
from cifar_shared.testing.fault_suite import UNBROKEN, run_in_process, steps_per_epoch, tiny_config


@pytest.mark.slow  # subprocesses: on the first Python of the matrix
def test_ctrl_c_then_a_kill_inside_a_checkpoint_write_then_a_rerun_match_an_unbroken_run(tmp_path, capsys):
    """The shared parts of surviving faults, once here on a tiny model (the per-package suite
    SIGKILLs each package's run mid-epoch): Ctrl-C saves, exits 130 and says how to resume; a kill
    half-way through a checkpoint write of that resumed process leaves the previous checkpoint
    intact (a torn ``last.ckpt`` would make the rerun refuse it, exit 2, or resume from the wrong
    step); the second resume in a row still ends with the unbroken run's numbers."""
    unbroken, _ = tiny_config(tmp_path / "unbroken", *UNBROKEN)
    broken, cfg = tiny_config(tmp_path / "broken")
    n = steps_per_epoch(cfg)
    code, _, err = run_in_process(unbroken, capsys)
    assert code == 0, err[-3000:]
    cmd, ckpts = faults.config_command(broken), tmp_path / "broken" / "checkpoints"
    interrupted = faults.attempt(cmd, f"sigint:{n // 2}")
    assert interrupted.returncode == 130, interrupted.stderr[-1500:]
    assert interrupted.stderr.strip().splitlines()[-1] == f"interrupted at epoch 1 step {n // 2}; run the same command to resume"
    killed = faults.attempt(cmd, "ckpt_write:1")  # the resumed run's first save: last.ckpt after one more batch
    assert killed.returncode == -9, killed.stderr[-1500:]
    assert (ckpts / ".last.ckpt.partial").exists()  # it died inside that write
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == n // 2  # Ctrl-C's save is intact
    rerun = faults.attempt(cmd)
    assert rerun.returncode == 0, rerun.stderr[-1500:]
    assert (tmp_path / "broken" / "train.log").read_text().count("resuming from") == 2
    a, b = faults.load(tmp_path / "unbroken"), faults.load(tmp_path / "broken")
    assert [r["epoch"] for r in b["history"]] == [1, 2]
    assert faults.comparable(b) == faults.comparable(a)
    assert not list(ckpts.glob(".*.partial"))


@pytest.mark.slow  # three training runs (workers, RandAugment): on the first Python of the matrix
@pytest.mark.filterwarnings("ignore:Experiment logs directory")  # the rerun's CSV logger, in the same folder
def test_a_per_sample_augment_resumes_its_epoch_as_an_unbroken_run_did(tmp_path, capsys):
    """RandAugment runs per image in DataLoader workers, which get no mid-epoch checkpoints: a run
    stopped in epoch 2 resumes from epoch 1's end and must replay epoch 2 as the unbroken run ran it
    (order, augmentation, dropout). It did not while the transforms drew from a process's running
    RNG, or while the workers got their first indices before Lightning set the resumed epoch (see
    ``data.per_sample``). In this process (Ctrl-C, no kill): the rerun is what goes wrong."""
    per_sample = ["augment=randaug", "data.num_workers=2"]
    unbroken, _ = tiny_config(tmp_path / "unbroken", *UNBROKEN, *per_sample)
    broken, cfg = tiny_config(tmp_path / "broken", *per_sample)
    n = steps_per_epoch(cfg)
    code, _, err = run_in_process(unbroken, capsys)
    assert code == 0, err[-3000:]
    code, _, err = run_in_process(broken, capsys, fault=f"sigint:{n + n // 2}")
    assert code == 130 and f"interrupted at epoch 2 step {n // 2}" in err, err[-3000:]
    code, _, err = run_in_process(broken, capsys)
    assert code == 0, err[-3000:]
    assert "resuming from" in (tmp_path / "broken" / "train.log").read_text()
    a, b = faults.load(tmp_path / "unbroken"), faults.load(tmp_path / "broken")
    assert [r["epoch"] for r in b["history"]] == [1, 2]
    assert faults.comparable(b) == faults.comparable(a)


@pytest.mark.slow  # a subprocess run
def test_one_ctrl_c_delivered_twice_still_saves(tmp_path):
    """``uv run`` without a terminal forwards SIGINT to the trainer, which also gets it as a member of
    the process group: two SIGINTs microseconds apart are one Ctrl-C, whose save must complete
    (exit 130, the resume line, a checkpoint at the step it names), not "interrupted again". The
    copy 0.1 s later lands while the interpreter shuts down, where CPython has put SIG_DFL back: it
    killed the process (status -2) until the guard ignored the signal for the last exit hooks."""
    path, cfg = tiny_config(tmp_path / "run", "epochs=500")  # long enough to be interrupted
    n = steps_per_epoch(cfg)
    proc = subprocess.Popen(faults.config_command(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as under `uv run`
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:  # a save after every batch
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGINT)  # the group's copy
    time.sleep(0.1)  # uv's forwarded copy comes a moment later (sent at once, the kernel would merge the two)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted again" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted at epoch ") and line.endswith("; run the same command to resume"), err[-3000:]
    epoch, step = int(line.split()[3]), int(line.split()[5].rstrip(";"))
    saved = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert saved == (epoch - 1) * n + step
    assert not (tmp_path / "run" / ".run.lock").exists()  # an interrupted run releases its folder
    assert "weights_only" not in (tmp_path / "run" / "train.log").read_text()  # no library note on mid-epoch saves
