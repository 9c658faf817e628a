"""DDP gives the numbers of a plain run: one gloo process on the CPU (process group, sharded
loader, gradient all-reduce of one), the tiny net with dropout. The GPU suite runs the same
comparison with each package's model (``test_ddp_on_one_gpu_gives_the_same_numbers``)."""

import subprocess

import pytest

from cifar_shared.testing import faults
from cifar_shared.testing.fault_suite import tiny_config


def history(run_dir):
    return [{k: v for k, v in row.items() if k not in faults.VOLATILE} for row in faults.load(run_dir)["history"]]


@pytest.mark.slow  # three subprocess runs
def test_ddp_on_one_cpu_process_gives_the_numbers_of_the_plain_run_reseeded_where_ddp_reseeds(tmp_path):
    runs = {}
    for name, strategy, extra in (("plain", "auto", []), ("reseeded", "auto", ["--reseed"]), ("ddp", "ddp", [])):
        path, _ = tiny_config(tmp_path / name, "epochs=2", f"trainer.strategy={strategy}", "trainer.devices=1", "trainer.accelerator=cpu")
        done = subprocess.run([*faults.config_command(path), *extra], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = history(tmp_path / name)
    assert runs["ddp"] == runs["reseeded"]
    # the reseed is what makes them equal: the tiny net's dropout draws other masks without it
    assert runs["plain"] != runs["ddp"]
    assert runs["plain"][0]["train/loss"] != runs["ddp"][0]["train/loss"]
