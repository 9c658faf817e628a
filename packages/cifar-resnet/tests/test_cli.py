import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocess runs of the CLI: once, on the first Python of the nox matrix

SCRIPT = Path(sys.executable).with_name("resnet-train")
COMMAND = str(SCRIPT) if SCRIPT.exists() else shutil.which("resnet-train")
SMALL = ["data=synthetic", "data.train_size=256", "data.test_size=64", "batch_size=32", "model.stem=imagenet",
         "trainer.enable_progress_bar=false"]


def resnet_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(autouse=True)
def _installed():
    if COMMAND is None:
        pytest.skip("resnet-train is not installed in this environment")


def test_lr_find_only_plots_records_and_stops(tmp_path):
    done = resnet_train("--lr-find-only", *SMALL, "lr_find.num_steps=5", f"output_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "lr_finder.png").exists() and (tmp_path / "model_info.txt").exists()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "suggestion" in metrics["lr_find"] and "test" not in metrics and not metrics["history"]
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_unknown_key_exits_2_with_one_line(tmp_path):
    done = resnet_train(*SMALL, "no_such_key=1", f"output_dir={tmp_path}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: unknown config key 'no_such_key'") and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "config.yaml").exists()  # refused before anything was written
