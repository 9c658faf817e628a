import json

import numpy as np
import pytest
import torch

from cifar_shared import UserError
from cifar_shared.engine.lr_finder import valley_index
from cifar_shared.engine.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_config):
    out = tmp_path_factory.mktemp("run")
    return out, train(small_config(out))


def test_run_folder_contract(run):
    out, test = run
    assert (out / "config.yaml").exists() and (out / "checkpoints" / "last.ckpt").exists()
    assert len(list((out / "checkpoints").glob("best-*.ckpt"))) == 1
    # the original's checkpoint for every epoch, numbered as the log counts them
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint_epoch_*.ckpt")) == ["checkpoint_epoch_1.ckpt", "checkpoint_epoch_2.ckpt"]
    saved = [torch.load(out / "checkpoints" / f"checkpoint_epoch_{n}.ckpt", weights_only=True)["epoch"] for n in (1, 2)]
    assert saved == [0, 1]  # Lightning counts from 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    log = (out / "train.log").read_text()
    assert "epoch 1/2" in log and "epoch 2/2" in log and "test (" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/f1_macro", "lr"} <= set(metrics["history"][0])
    assert metrics["test"] == test
    assert torch.tensor(metrics["test"]["confusion_matrix"]).sum() == 200


def test_it_learns(run):
    out, test = run
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[1]["train/loss"] < history[0]["train/loss"]
    assert test["acc"] > 0.5  # 10 classes: chance is 0.1


def test_same_config_same_numbers(run, tmp_path, small_config):
    _, first = run
    again = train(small_config(tmp_path))
    assert again["acc"] == first["acc"] and again["loss"] == pytest.approx(first["loss"], abs=0)


def test_rerun_resumes_from_last_checkpoint(run, tmp_path, small_config):
    first = tmp_path / "resume"
    train(small_config(first))
    train(small_config(first, "epochs=3"))
    history = json.loads((first / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert "resuming from" in (first / "train.log").read_text()


def test_unreadable_checkpoint_is_refused_and_kept(tmp_path, small_config):
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"garbage")
    with pytest.raises(UserError, match="last.ckpt is unreadable"):
        train(small_config(tmp_path))
    assert last.read_bytes() == b"garbage"


def test_visualize_writes_figures_into_plots(run):
    from cifar_shared.runs.plots import plot_run

    out, _ = run
    names = {p.name for p in plot_run(out)}
    assert names == {"loss.png", "accuracy.png", "f1.png", "lr.png", "confusion_matrix.png"}
    assert all((out / "plots" / n).stat().st_size > 1000 for n in names)


def test_keep_every_epoch_false_keeps_last_and_best_only(tmp_path, small_config):
    train(small_config(tmp_path, "epochs=1", "callbacks.checkpoint.keep_every_epoch=false", "test_after_fit=false"))
    assert sorted(p.stem.split("-")[0] for p in (tmp_path / "checkpoints").glob("*.ckpt")) == ["best", "last"]


def test_lr_finder_reads_its_own_curve_and_sets_the_lr(tmp_path, small_config):
    """Synthetic data is learnable within the sweep, so the loss dips and the finder must pick."""
    test = train(small_config(tmp_path, "lr_find.enabled=true", "lr_find.num_steps=40", "epochs=1"))
    found = json.loads((tmp_path / "metrics.json").read_text())["lr_find"]
    lrs, raw = found["lr"], found["raw_loss"]
    assert len(lrs) == len(raw) == len(found["loss"]) > 6  # more than one epoch (6 batches) of sweep
    assert raw[0] == pytest.approx(found["loss"][0])  # the smoothed curve starts at the first loss
    assert found["suggestion"] is not None, "the loss fell during the sweep; the finder should pick"
    assert found["rule"] == "valley"  # rule=auto under the plateau scheduler
    smoothed_min = lrs[found["loss"].index(min(found["loss"]))]
    assert found["suggestion"] == lrs[valley_index(np.asarray(found["loss"]))] < smoothed_min  # inside the valley
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert history[0]["lr"] == pytest.approx(found["suggestion"]) == found["lr_used"]  # Adam + plateau: the pick is the lr
    assert (tmp_path / "lr_finder.png").stat().st_size > 1000 and 0 <= test["acc"] <= 1


def test_lr_find_only_refuses_a_trained_run_and_keeps_it(run, small_config):
    out, _ = run
    before = (out / "metrics.json").read_text()
    with pytest.raises(UserError, match="--lr-find-only on a run that has already trained"):
        train(small_config(out, "lr_find.enabled=true", "lr_find.only=true"))
    assert (out / "metrics.json").read_text() == before
