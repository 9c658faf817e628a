"""The console of a run whose output is not a terminal (CI, `| tee`, nohup): our lines only."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # a subprocess training run: once, on the first Python of the nox matrix

BIN = Path(sys.executable).parent
NOISE = ("\r", "it/s", "LeafSpec", "Tip", "Loading `train_dataloader`", "GPU available", "TPU available",
         "Total FLOPs", "Warning", "deprecated", "Trainable params", "Restoring states", "`Trainer.fit` stopped")


def test_piped_smoke_run_prints_only_our_lines(tmp_path):
    result = subprocess.run(
        [str(BIN / "basiccnn-train"), "data=synthetic", "data.train_size=300", "data.test_size=100",
         "epochs=2", "--lr-find", "lr_find.num_steps=8", f"output_dir={tmp_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    log = result.stdout
    for fragment in NOISE:
        assert fragment not in log, f"{fragment!r} in the console:\n{log}"
    lines = log.strip().splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("epoch ")] == ["1/2", "2/2"]
    ours = ("normalizing with", "basiccnn: ", "LR finder", "lr of this run", "epoch ", "test (")
    assert all(ln.startswith(ours) for ln in lines), log
    assert len(lines) == 7
    # the run folder records which package built it
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["package"] == "cifar_basiccnn.conf"
