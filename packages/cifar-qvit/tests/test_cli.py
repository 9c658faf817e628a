"""The commands as a user runs them: exit codes and one-line errors."""

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # subprocess runs of the CLI: once, on the first Python of the nox matrix

BIN = Path(sys.executable).parent


def cli(*args: str, tool: str = "qvit-train", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0]


def test_help_lists_the_groups_options_and_model_keys():
    """``qvit-train --help`` (the first command the docs show) names every config group the package
    ships with its options, and every model key; ``qvit-export --help`` its argument and flags."""
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    conf = resources.files("cifar_qvit.conf")
    groups = sorted(p.name for p in conf.iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert groups == ["bits", "experiment", "loss_hook", "model"]
    for group in groups:
        options = sorted(p.name.removesuffix(".yaml") for p in conf.joinpath(group).iterdir() if p.name.endswith(".yaml"))
        assert f"\n{group}: {', '.join(options)}\n" in result.stdout, group
    model = result.stdout.split("\nmodel:\n", 1)[1]
    for key in yaml.safe_load(conf.joinpath("model", "vit.yaml").read_text()):
        assert f"\n  {key}:" in "\n" + model, key
    export = cli("--help", tool="qvit-export")
    assert export.returncode == 0 and export.stdout.startswith("usage: qvit-export")
    assert all(flag in export.stdout for flag in ("run_dir", "--out", "--check"))


def test_a_missing_local_folder_is_one_line_without_a_hub_hint(tmp_path):
    result = cli(f"model.pretrained={tmp_path / 'nonexistent'}", f"output_dir={tmp_path / 'run'}")
    assert_one_line_error(result, f"model.pretrained={tmp_path / 'nonexistent'} does not exist", "save_pretrained")
    assert "download" not in result.stderr and not (tmp_path / "run").exists()


def test_no_network_and_no_weights_is_one_line(tmp_path):
    empty = tmp_path / "hf"
    empty.mkdir()
    result = cli("data=synthetic", "logger=tensorboard", f"output_dir={tmp_path / 'run'}",
                 env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(empty)})
    assert_one_line_error(result, "cannot load ViT weights 'google/vit-large-patch16-224'", "`hf download google/vit-large-patch16-224`",
                          "model.pretrained=DIR", "model.size=tiny")
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_bad_bits_and_class_count_and_size():
    assert_one_line_error(cli("model.nbits_w=1"), "model.nbits_w=1 is invalid")
    assert_one_line_error(cli("model.num_classes=10"), "model.num_classes=10 but data=cifar100 has 100 classes", "data=cifar10")
    assert_one_line_error(cli("model.size=huge"), "model.size='huge' is invalid", "tiny")


def test_original_keys_compose():
    result = cli("--cfg", "job", "model.nbits_w=8", "model.num_classes=100", "data=cifar100", "logger.project=myproj",
                 "trainer.devices=-1", "trainer.accelerator=gpu")
    assert result.returncode == 0, result.stderr
    assert "nbits_w: 8" in result.stdout and "project: myproj" in result.stdout and "devices: -1" in result.stdout


def test_export_of_a_missing_run(tmp_path):
    assert_one_line_error(cli(str(tmp_path), tool="qvit-export"), "config.yaml does not exist")
