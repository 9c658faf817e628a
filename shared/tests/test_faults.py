import pytest
import torch

from cifar_shared import faults
from cifar_shared.testing_faults import *  # noqa: F403  (every installed model package; none in the shared nox session)
from cifar_shared.testing_faults import UNBROKEN, run_in_process, tiny_config


@pytest.mark.slow  # subprocesses: on the first Python of the matrix
def test_kill_half_way_through_a_checkpoint_write_keeps_the_previous_one(tmp_path, capsys):
    """The atomic checkpoint writer is shared code, so this kill runs once, here, on a tiny model
    (the per-package suite kills runs at batch ends): a torn ``last.ckpt`` would make the rerun
    refuse it (exit 2) or resume from the wrong step."""
    unbroken, _ = tiny_config(tmp_path / "unbroken", *UNBROKEN)
    broken, _ = tiny_config(tmp_path / "broken")
    code, _, err = run_in_process(unbroken, capsys)
    assert code == 0, err[-3000:]
    ckpts = tmp_path / "broken" / "checkpoints"
    killed = faults.attempt(faults.config_command(broken), "ckpt_write:2")
    assert killed.returncode == -9, killed.stderr[-1500:]
    assert (ckpts / ".last.ckpt.partial").exists()  # it died inside the second write of last.ckpt
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 1  # the first is intact
    rerun = faults.attempt(faults.config_command(broken))
    assert rerun.returncode == 0, rerun.stderr[-1500:]
    assert "resuming from" in (tmp_path / "broken" / "train.log").read_text()
    a, b = faults.load(tmp_path / "unbroken"), faults.load(tmp_path / "broken")
    assert [r["epoch"] for r in b["history"]] == [1, 2]
    assert faults.comparable(b) == faults.comparable(a)
    assert not list(ckpts.glob(".*.partial"))
