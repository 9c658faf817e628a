import pytest
import torch

from cifar_shared import faults
from cifar_shared.testing_faults import *  # noqa: F403  (every installed model package; none in the shared nox session)
from cifar_shared.testing_faults import UNBROKEN, run_in_process, steps_per_epoch, tiny_config


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
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == n // 2  # Ctrl-C's save is intact
    rerun = faults.attempt(cmd)
    assert rerun.returncode == 0, rerun.stderr[-1500:]
    assert (tmp_path / "broken" / "train.log").read_text().count("resuming from") == 2
    a, b = faults.load(tmp_path / "unbroken"), faults.load(tmp_path / "broken")
    assert [r["epoch"] for r in b["history"]] == [1, 2]
    assert faults.comparable(b) == faults.comparable(a)
    assert not list(ckpts.glob(".*.partial"))
