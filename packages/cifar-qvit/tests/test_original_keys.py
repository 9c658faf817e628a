"""The original project's documented overrides, verbatim, and qvit's checks before torch is imported."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_shared.engine.cli import compose_config, load_original_keys, map_original_keys

BIN = Path(sys.executable).parent
# The original's README, verbatim (after `qvit-train`).
ORIGINAL_USAGE = [
    ["training.batch_size=256", "model.nbits_w=8"],
    ["logger.project=my-experiment"],
    ["trainer.devices=-1", "trainer.accelerator=gpu"],
]


def original(argv: list[str]):
    mapped, notes = map_original_keys(argv, load_original_keys("cifar_qvit.conf"))
    return compose_config("cifar_qvit.conf", mapped), notes


def test_default_is_the_originals_cifar100_with_its_pretrained_normalization():
    cfg = compose_config("cifar_qvit.conf", [])
    assert cfg.data.name == "cifar100" and list(cfg.data.mean) == [0.5, 0.5, 0.5] and list(cfg.data.std) == [0.5, 0.5, 0.5]
    assert compose_config("cifar_qvit.conf", ["experiment=original"]).epochs == 300


def test_every_override_of_the_original_usage_sets_its_native_key():
    cfg, notes = original(ORIGINAL_USAGE[0])
    assert cfg.batch_size == 256 and cfg.model.nbits_w == 8 and notes == ["original key training.batch_size -> batch_size=256"]
    cfg, notes = original(ORIGINAL_USAGE[1])
    assert cfg.logger.wandb.project == "my-experiment" and notes == ["original key logger.project -> logger.wandb.project=my-experiment"]
    cfg, notes = original(ORIGINAL_USAGE[2])
    assert cfg.trainer.devices == -1 and cfg.trainer.accelerator == "gpu" and notes == []  # native as they stand


def test_subset100_recipe_is_the_tiny_fp_vit_on_the_real_cifar100_subset():
    cfg = compose_config("cifar_qvit.conf", ["experiment=subset100"])
    assert cfg.data.name == "cifar100" and cfg.data.root == "../shared/data/cifar100-subset" and cfg.data.download is False
    assert cfg.model.pretrained is None and cfg.model.size == "tiny" and cfg.model.nbits_w == 32 and cfg.model.nbits_a == 32


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "qvit-train"), *args], capture_output=True, text=True, timeout=600, env=os.environ)


@pytest.mark.slow
def test_original_usage_on_the_command_line():
    result = cli(*ORIGINAL_USAGE[0], "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "batch_size: 256" in result.stdout and "nbits_w: 8" in result.stdout and "  name: cifar100" in result.stdout
    assert result.stderr.strip() == "original key training.batch_size -> batch_size=256"


CHECK_WITHOUT_TORCH = """
import sys
from cifar_qvit.cli import train_main
sys.argv = ["qvit-train", *sys.argv[1:]]
try:
    train_main()
except SystemExit as e:
    print(e.code, "torch" in sys.modules, "transformers" in sys.modules)
"""


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["model.nbits_w=1"], "error: model.nbits_w=1 is invalid"),
    (["-m", "model.nbits_w=4,1"], "error: model.nbits_w=1 is invalid"),  # the second job, before the first runs
    (["model.pretrained=/nonexistent"], "error: model.pretrained=/nonexistent does not exist"),
    (["model.num_classes=10"], "error: model.num_classes=10 but data=cifar100 has 100 classes"),
])
def test_qvit_checks_run_before_torch_is_imported(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-c", CHECK_WITHOUT_TORCH, *args, f"output_dir={tmp_path / 'run'}"],
                            capture_output=True, text=True, timeout=600)
    assert result.stdout.split() == ["2", "False", "False"], result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "hf download" not in lines[0] and "huggingface-cli" not in lines[0]
    assert not (tmp_path / "run").exists()


def test_path_looking_pretrained_values_are_not_hub_ids(tmp_path):
    from cifar_qvit.cli import check_pretrained, looks_like_path
    from cifar_shared.errors import UserError

    assert looks_like_path("/nonexistent") and looks_like_path("./vit") and looks_like_path("~/vit") and looks_like_path("runs/a/vit")
    assert not looks_like_path("google/vit-large-patch16-224") and not looks_like_path("vit-base")
    with pytest.raises(UserError, match="has no config.json"):
        check_pretrained(str(tmp_path))
    check_pretrained("google/vit-large-patch16-224")  # a hub id: the loader decides (cache or network)
