"""Run options the original projects had: the epoch line's lr, no test after fit, the PNG export."""

import json

import pytest

from cifar_shared.engine.train import close_run_logs, train
from cifar_shared.testing.fault_suite import tiny_config


@pytest.fixture(autouse=True)
def _close_logs():
    yield
    close_run_logs()


def test_the_epoch_line_shows_the_rate_the_epoch_ended_with(tmp_path):
    """A one-epoch linear warm-up from 1 % of lr=3e-4, then a cosine: each epoch's row holds the lr
    its last step used (the issue's run showed the first step's, 3e-6), from torch's own schedulers."""
    import torch

    from cifar_shared.engine.schedulers import cosine
    from cifar_shared.testing.fault_suite import steps_per_epoch

    _, cfg = tiny_config(tmp_path, "epochs=2", "lr=3e-4", "scheduler=cosine", "scheduler.warmup_epochs=1", "test_after_fit=false")
    n = steps_per_epoch(cfg)
    train(cfg)
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=3e-4)
    sched = cosine(opt, total_steps=2 * n, steps_per_epoch=n, warmup_epochs=1)["scheduler"]
    used = []
    for _ in range(2 * n):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    rows = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert [r["lr"] for r in rows] == pytest.approx([used[n - 1], used[2 * n - 1]], rel=1e-6)
    assert rows[0]["lr"] > 0.5 * 3e-4  # near the warmed-up rate, not the start's 3e-6
    assert f"| lr {rows[0]['lr']:.3g}\n" in (tmp_path / "train.log").read_text()


def test_test_after_fit_false_trains_and_stops_before_testing(tmp_path):
    _, cfg = tiny_config(tmp_path, "epochs=1", "test_after_fit=false")
    assert train(cfg) == {}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["history"]] == [1] and "test" not in metrics
    assert "test_after_fit=false: not testing" in (tmp_path / "train.log").read_text()


def test_export_dir_gets_the_splits_as_png_folders_once(tmp_path):
    """The original basiccnn's processed_dir: class folders of PNGs + labels.csv, readable with data=folder."""
    from cifar_shared.data.sources import load_image_folder, load_source

    _, cfg = tiny_config(tmp_path / "run", "epochs=1", "test_after_fit=false", f"export_dir={tmp_path / 'png'}")
    train(cfg)
    train_set, test_set = load_source(cfg.data)
    for split, data in (("train", train_set), ("test", test_set)):
        rows = (tmp_path / "png" / split / "labels.csv").read_text().splitlines()
        assert len(rows) == 1 + len(data)
        back = load_image_folder(tmp_path / "png" / split, data.images.shape[-1], None)
        assert sorted(back.labels.tolist()) == sorted(data.labels.tolist())
    assert "images exported" in (tmp_path / "run" / "train.log").read_text()
    _, again = tiny_config(tmp_path / "run", "epochs=2", "test_after_fit=false", f"export_dir={tmp_path / 'png'}")
    train(again)  # the resumed run leaves the export as it is
    assert "already exported" in (tmp_path / "run" / "train.log").read_text()


def test_a_resumed_csv_log_reads_as_an_unbroken_runs(tmp_path):
    """Lightning's CSVLogger deletes metrics.csv when a run resumes; ours keeps the rows up to the
    checkpoint and drops those a killed run logged after it (here: epoch 2, replayed from epoch 1's
    checkpoint), so the file equals the unbroken run's."""
    import csv
    import shutil
    import warnings

    def rows(out):
        with open(out / "csv" / "metrics.csv", newline="") as f:
            return list(csv.DictReader(f))

    _, cfg = tiny_config(tmp_path / "run", "epochs=2", "logger=csv", "test_after_fit=false",
                         "callbacks.checkpoint.keep_every_epoch=true", "callbacks.checkpoint.every_n_minutes=null")
    train(cfg)
    unbroken = rows(tmp_path / "run")
    assert {r["epoch"] for r in unbroken} == {"0", "1"}
    ckpts = tmp_path / "run" / "checkpoints"
    shutil.copy(ckpts / "checkpoint_epoch_1.ckpt", ckpts / "last.ckpt")  # as if killed before epoch 2's save
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning's "will be deleted" warning would fail here
        train(cfg)
    assert rows(tmp_path / "run") == unbroken
