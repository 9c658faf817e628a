"""The console of a run whose output is not a terminal (CI, `| tee`, nohup): our lines only."""

import pytest
import yaml

pytestmark = pytest.mark.slow  # a subprocess training run: once, on the first Python of the nox matrix

NOISE = ("\r", "it/s", "LeafSpec", "Tip", "Loading `train_dataloader`", "GPU available", "TPU available",
         "Total FLOPs", "Warning", "deprecated", "Trainable params", "Restoring states", "`Trainer.fit` stopped")


def test_piped_smoke_run_prints_only_our_lines(cli_run):
    """``basiccnn-train --lr-find``, epochs=2, stdout and stderr into one pipe (the session's ``cli_run``)."""
    run, log = cli_run
    for fragment in NOISE:
        assert fragment not in log, f"{fragment!r} in the console:\n{log}"
    lines = log.strip().splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("epoch ")] == ["1/2", "2/2"]
    ours = ("normalizing with", "basiccnn: ", "LR finder", "lr of this run", "epoch ", "test (")
    assert all(ln.startswith(ours) for ln in lines), log
    assert len(lines) == 7
    # the run folder records which package built it
    assert yaml.safe_load((run / "config.yaml").read_text())["package"] == "cifar_basiccnn.conf"
