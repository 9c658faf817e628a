import pytest
import torch

from cifar_shared.testing import faults
from cifar_shared.testing.fault_suite import *  # noqa: F403  (every installed model package; none in the shared nox session)
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
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == n // 2  # Ctrl-C's save is intact
    rerun = faults.attempt(cmd)
    assert rerun.returncode == 0, rerun.stderr[-1500:]
    assert (tmp_path / "broken" / "train.log").read_text().count("resuming from") == 2
    a, b = faults.load(tmp_path / "unbroken"), faults.load(tmp_path / "broken")
    assert [r["epoch"] for r in b["history"]] == [1, 2]
    assert faults.comparable(b) == faults.comparable(a)
    assert not list(ckpts.glob(".*.partial"))


@pytest.mark.slow  # three training runs (workers, RandAugment): on the first Python of the matrix
@pytest.mark.filterwarnings("ignore:Experiment logs directory")  # the rerun's CSV logger, in the same folder
def test_a_per_sample_augment_resumes_its_epoch_as_an_unbroken_run_did(tmp_path, capsys, monkeypatch):
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
    monkeypatch.setenv("CIFAR_FAULT", f"sigint:{n + n // 2}")
    code, _, err = run_in_process(broken, capsys)
    assert code == 130 and f"interrupted at epoch 2 step {n // 2}" in err, err[-3000:]
    monkeypatch.delenv("CIFAR_FAULT")
    code, _, err = run_in_process(broken, capsys)
    assert code == 0, err[-3000:]
    assert "resuming from" in (tmp_path / "broken" / "train.log").read_text()
    a, b = faults.load(tmp_path / "unbroken"), faults.load(tmp_path / "broken")
    assert [r["epoch"] for r in b["history"]] == [1, 2]
    assert faults.comparable(b) == faults.comparable(a)
