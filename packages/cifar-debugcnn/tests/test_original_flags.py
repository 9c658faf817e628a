"""The original project's argparse commands, verbatim: its flags map to the Hydra keys (table:
conf/original_keys.yaml), Hydra overrides still work beside them, an unknown flag is one line."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cifar_shared.engine.cli import compose_config, load_original_keys, map_original_keys
from cifar_shared.errors import UserError

BIN = Path(sys.executable).parent
# The original's README, verbatim (after `debugcnn-train`).
SHORT = "--use_cifar10 --max_epochs 10 --batch_size 32"
LONG = "--use_cifar10 --max_epochs 50 --batch_size 64 --learning_rate 0.001 --dropout_rate 0.5 --early_stopping_patience 10"


def original(command: str, *overrides: str):
    mapped, notes = map_original_keys([*shlex.split(command), *overrides], load_original_keys("cifar_debugcnn.conf"))
    return compose_config("cifar_debugcnn.conf", mapped), notes


def test_short_command_resolves_to_the_native_keys():
    cfg, notes = original(SHORT)
    assert cfg.data.name == "cifar10" and cfg.epochs == 10 and cfg.batch_size == 32
    assert notes == ["original flag --use_cifar10 -> data=cifar10", "original flag --max_epochs 10 -> epochs=10",
                     "original flag --batch_size 32 -> batch_size=32"]


def test_long_command_resolves_to_the_native_keys_with_early_stopping_on():
    cfg, notes = original(LONG)
    assert cfg.data.name == "cifar10" and cfg.epochs == 50 and cfg.batch_size == 64 and cfg.lr == 0.001
    assert cfg.optim.lr == 0.001 and cfg.model.dropout == 0.5
    assert cfg.callbacks.early_stopping.patience == 10 and cfg.callbacks.early_stopping.monitor == "val/loss"
    assert "original flag --dropout_rate 0.5 -> model.dropout=0.5" in notes and len(notes) == 6


def test_hydra_overrides_work_beside_the_flags():
    cfg, notes = original("--max_epochs=7 --dropout_rate 0.3", "data=synthetic", "model.hidden=[64]")
    assert cfg.epochs == 7 and cfg.model.dropout == 0.3 and cfg.data.name == "synthetic" and list(cfg.model.hidden) == [64]
    assert len(notes) == 2


def test_an_unknown_flag_names_the_known_ones():
    with pytest.raises(UserError, match=r"unknown flag --gpus: the known flags are --batch_size, --dropout_rate, "
                                        r"--early_stopping_patience, --learning_rate, .*--max_epochs, --use_cifar10"):
        original("--gpus 1")


@pytest.mark.slow
def test_original_commands_on_the_command_line():
    run = subprocess.run([str(BIN / "debugcnn-train"), *shlex.split(LONG), "--cfg", "job"], capture_output=True, text=True,
                         timeout=600, env=os.environ)
    assert run.returncode == 0, run.stderr
    job = yaml.safe_load(run.stdout)
    assert (job["epochs"], job["batch_size"], job["lr"], job["model"]["dropout"]) == (50, 64, 0.001, 0.5)
    assert job["callbacks"]["early_stopping"]["patience"] == 10 and job["data"]["name"] == "cifar10"
    assert run.stderr.count("original flag") == 6
    bad = subprocess.run([str(BIN / "debugcnn-train"), "--max_epoch", "3"], capture_output=True, text=True, timeout=600, env=os.environ)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: unknown flag --max_epoch")
