"""``perceiver-train`` as a user runs it: a file in the original's layout, and its mistakes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # subprocess runs of the CLI: once, on the first Python of the nox matrix

BIN = Path(sys.executable).parent
FAST = ["data=synthetic", "data.train_size=300", "data.test_size=100", "trainer.enable_progress_bar=false"]

# the original's layout; the model is the original's 8 Fourier bands (input_dim 37), shrunk
ORIGINAL = {
    "device": "cpu",
    "model": {"input_dim": 37, "num_freq_bands": 8, "depth": 1, "num_latents": 8, "latent_dim": 32,
              "cross_dim_head": 16, "latent_heads": 2, "latent_dim_head": 16},
    "training": {"lr": 5.0e-4, "batch_size": 256, "epochs": 1, "weight_decay": 0.05, "warmup_epochs": 0.5,
                 "scheduler": "cosine", "accumulate_grad_batches": 1, "mixed_precision": False},
    "augmentation": {"type": "randaug", "num_ops": 2, "magnitude": 9},
}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "perceiver-train"), *args], capture_output=True, text=True, timeout=600)


def original_file(tmp_path: Path, **changes) -> Path:
    data = json.loads(json.dumps(ORIGINAL))
    for section, values in changes.items():
        data[section].update(values)
    path = tmp_path / "original.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_file_in_the_original_layout_trains(tmp_path):
    run = tmp_path / "run"
    result = cli("--config", str(original_file(tmp_path)), *FAST, f"output_dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["input_dim"] == 37 and config["augment"]["num_ops"] == 2
    assert config["augment"]["pipeline"] == "per_sample" and config["trainer"]["accelerator"] == "cpu"
    assert (config["lr"], config["batch_size"], config["trainer"]["precision"]) == (5.0e-4, 256, "32-true")
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and 0 <= metrics["test"]["acc"] <= 1
    info = (run / "model_info.txt").read_text()
    assert "FLOPs per image: forward" in info and "input_dim=37" in info


def test_input_dim_that_disagrees_is_one_line(tmp_path):
    run = tmp_path / "run"
    result = cli("--config", str(original_file(tmp_path, model={"input_dim": 36})), *FAST, f"output_dir={run}")
    assert_one_line_error(result, "model.input_dim=36", "3 + 2 x (2 x num_freq_bands + 1) = 37")
    assert not run.exists()


def test_input_dim_override_on_the_command_line_is_checked_too():
    assert_one_line_error(cli("model.num_freq_bands=6", "model.input_dim=37"), "= 29")


def test_unknown_key_and_section_are_one_line(tmp_path):
    path = original_file(tmp_path, training={"learning_rate": 0.1})
    assert_one_line_error(cli("--config", str(path)), "unknown key 'training.learning_rate'", "known keys of training are", "lr")
    path.write_text(yaml.safe_dump({**ORIGINAL, "optimizer": {"name": "adamw"}}))
    assert_one_line_error(cli("--config", str(path)), "unknown section 'optimizer'", "device, model, training, augmentation")


def test_missing_config_file():
    assert_one_line_error(cli("--config", "no/such.yaml"), "no such file")
    assert_one_line_error(cli("--config"), "--config needs a file")


def test_randaug_forced_onto_the_tensor_pipeline_is_refused(tmp_path):
    result = cli(*FAST, "augment=randaug", "augment.pipeline=tensor", f"output_dir={tmp_path}")
    assert_one_line_error(result, "per image only", "augment.pipeline=per_sample")
    assert not (tmp_path / "config.yaml").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_the_originals_device_cuda_without_cuda_is_one_line_and_writes_nothing(tmp_path):
    """The original's sample says ``device: "cuda"``: on a CPU machine, one line naming the file's key
    and the fix, exit 2, no run folder (was a Lightning traceback after config.yaml and train.log)."""
    sample = (Path(__file__).parents[1] / "configs" / "cifar_lightning.yaml").read_text()
    original = tmp_path / "original.yaml"
    original.write_text(sample.replace("device: auto", 'device: "cuda"', 1))
    assert 'device: "cuda"' in original.read_text()
    run = tmp_path / "run"
    result = cli("--config", str(original), *FAST, f"output_dir={run}")
    assert_one_line_error(result, "device: cuda in", "original.yaml", "device: auto", "device: cpu")
    assert not run.exists()
    # the command line wins over the file; then the shared check names the key it set
    result = cli("--config", str(original), *FAST, f"output_dir={run}", "trainer.accelerator=gpu")
    assert_one_line_error(result, "trainer.accelerator=gpu", "trainer.accelerator=auto", "trainer.accelerator=cpu")
    assert not run.exists()
