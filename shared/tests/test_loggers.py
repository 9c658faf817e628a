"""W&B: online with any login wandb would use, offline (one line) without; the test confusion matrix."""

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from cifar_shared.engine.loggers import (
    WandbConfusionMatrix,
    build_loggers,
    wandb_credential,
    wandb_offline,
)

pytest.importorskip("wandb")


def write_netrc(path: Path, host: str = "api.wandb.ai") -> Path:
    path.write_text(f"machine {host}\n  login user\n  password {'k' * 40}\n")
    path.chmod(0o600)
    return path


def test_no_credential_is_offline(tmp_path):
    assert wandb_credential({}, tmp_path) is None and wandb_offline({}, tmp_path)


def test_wandb_login_netrc_is_online(tmp_path):
    write_netrc(tmp_path / ".netrc")
    assert wandb_credential({}, tmp_path) == str(tmp_path / ".netrc") and not wandb_offline({}, tmp_path)


def test_api_key_env_and_netrc_env_and_other_hosts(tmp_path):
    assert wandb_credential({"WANDB_API_KEY": "x" * 40}, tmp_path) == "WANDB_API_KEY"
    other = write_netrc(tmp_path / "elsewhere", host="wandb.example.com")
    assert wandb_credential({"NETRC": str(other)}, tmp_path) is None  # a login for another server
    assert wandb_credential({"NETRC": str(other), "WANDB_BASE_URL": "https://wandb.example.com"}, tmp_path) == str(other)


def test_a_chosen_mode_is_left_to_wandb(tmp_path):
    assert not wandb_offline({"WANDB_MODE": "online"}, tmp_path)


def wandb_cfg(tmp_path):
    from cifar_shared.engine.cli import compose_config

    return compose_config("cifar_shared.conf", ["name=t", "logger=wandb", f"output_dir={tmp_path}"], config_name="train_base")


@pytest.mark.filterwarnings("ignore:In 'train_base'")  # the shared base config, composed alone
def test_build_loggers_offline_in_one_line_only_without_login(tmp_path, monkeypatch, caplog):
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_SILENT", raising=False)  # restored after the test
    with caplog.at_level(logging.INFO, logger="cifar_shared.train"):
        wandb_logger = next(lg for lg in build_loggers(wandb_cfg(tmp_path)) if type(lg).__name__ == "WandbLogger")
    assert wandb_logger._offline is True
    lines = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert len(lines) == 1 and f"wandb sync {tmp_path}/wandb/offline-run-*" in lines[0]

    write_netrc(tmp_path / ".netrc")  # `wandb login`
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cifar_shared.train"):
        wandb_logger = next(lg for lg in build_loggers(wandb_cfg(tmp_path)) if type(lg).__name__ == "WandbLogger")
    assert wandb_logger._offline is False and not [r for r in caplog.records if "W&B" in r.getMessage()]
    assert wandb_logger._wandb_init["settings"].silent  # pytest's captured console is not a terminal
    assert os.environ["WANDB_SILENT"] == "true"


@pytest.mark.slow  # starts wandb's service process
def test_confusion_matrix_is_logged_to_an_offline_wandb_run(tmp_path, monkeypatch):
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=str(tmp_path), project="t", offline=True)
    matrix = [[3, 1, 0], [0, 2, 0], [1, 0, 4]]
    trainer = SimpleNamespace(loggers=[logger], datamodule=SimpleNamespace(classes=["cat", "dog", "owl"]))
    try:
        WandbConfusionMatrix().on_test_end(trainer, SimpleNamespace(confusion_matrix=matrix))
        files = Path(logger.experiment.dir)
    finally:
        logger.experiment.finish()
    [table] = files.rglob("*confusion_matrix*.table.json")
    rows = json.loads(table.read_text())
    counts = {(r[0], r[1]): r[2] for r in rows["data"]}
    assert counts[("cat", "cat")] == 3 and counts[("cat", "dog")] == 1 and counts[("owl", "cat")] == 1 and counts[("owl", "owl")] == 4
    assert sum(counts.values()) == 11
