import json
import math
import re

import pytest
from hydra.utils import instantiate

from cifar_resnet.cli import MODEL_CHOICES, train_resnet
from cifar_resnet.model import ARCHS, STEMS
from cifar_shared import UserError
from cifar_shared.engine.cli import compose_config
from cifar_shared.engine.config import check_config
from cifar_shared.engine.lr_finder import pick_lr
from cifar_shared.engine.train import model_header, write_model_info


@pytest.fixture(scope="module")
def lr_find_run(tmp_path_factory, small_config):
    out = tmp_path_factory.mktemp("lr_find_run")
    # 230 training images at batch 32 are 8 batches an epoch: the 20-step sweep must span epochs
    return out, train_resnet(small_config(out, "lr_find.enabled=true", "lr_find.num_steps=20"))


def test_lr_finder_picks_onecycle_peak(lr_find_run):
    out, _ = lr_find_run
    assert (out / "lr_finder.png").stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text())
    found = metrics["lr_find"]
    assert len(found["lr"]) == len(found["raw_loss"]) > 8, "the sweep stopped at the end of the first epoch"
    assert found["rule"] == "onecycle" and found["suggestion"] == pick_lr(found["lr"], found["raw_loss"], "onecycle")[0]  # auto under OneCycle
    log = (out / "train.log").read_text()
    if found["suggestion"] is None:
        assert "LR finder: no pick" in log
    else:
        assert f"picks lr {found['suggestion']:.4g}" in log
    # OneCycle starts at max_lr / div_factor: the pick (or the configured lr 0.1) is the peak
    assert found["lr_used"] == pytest.approx(found["suggestion"] or 0.1)
    assert f"lr of this run (OneCycle's max_lr where it defaults to it): {found['lr_used']:.4g}" in log
    assert metrics["history"][0]["lr"] == pytest.approx(found["lr_used"] / 100)


def test_run_folder_has_model_info_and_results(lr_find_run):
    out, test = lr_find_run
    info = (out / "model_info.txt").read_text()
    logged = re.search(r"resnet: ([\d,]+) parameters", (out / "train.log").read_text()).group(1)
    assert f"Total params: {logged}" in info and "Input Shape" in info and "[1, 3, 32, 32]" in info
    assert (out / "checkpoints" / "last.ckpt").exists() and 0 <= test["acc"] <= 1
    assert "epoch 1/1" in (out / "train.log").read_text()


@pytest.mark.parametrize("stem, total", [("cifar", "11,220,132"), ("imagenet", "11,227,812")])
def test_model_info_counts_at_100_classes(tmp_path, stem, total):
    cfg = compose_config("cifar_resnet.conf", [f"model.stem={stem}"])
    net = instantiate(cfg.model, num_classes=100)
    text = write_model_info(net, model_header(cfg, 100), (3, 32, 32), tmp_path / "model_info.txt")
    assert f"Total params: {total}" in text and text == (tmp_path / "model_info.txt").read_text()
    assert text.startswith(f"resnet: arch=resnet18, stem={stem}, 100 classes\n")


@pytest.mark.parametrize("pipeline", ["tensor", "per_sample"])
def test_both_augment_pipelines_train(tmp_path, pipeline, small_config):
    cfg = small_config(tmp_path, f"augment.pipeline={pipeline}", "data.num_workers=1",
                       "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")
    test = train_resnet(cfg)
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert len(history) == 1 and math.isfinite(history[0]["train/loss"]) and 0 <= test["acc"] <= 1


def test_bad_model_names_are_user_errors(tmp_path, small_config):
    with pytest.raises(UserError, match="model.stem='tiny' is invalid: choose one of cifar, imagenet"):
        check_config(small_config(tmp_path, "model.stem=tiny"), MODEL_CHOICES)
    with pytest.raises(UserError, match="model.arch='resnet101' is invalid"):
        train_resnet(small_config(tmp_path, "model.arch=resnet101"))
    assert not (tmp_path / "config.yaml").exists()


def test_cli_model_names_match_the_model():
    assert set(MODEL_CHOICES["model.arch"]) == set(ARCHS) and set(MODEL_CHOICES["model.stem"]) == set(STEMS)


def test_speedrun_clock_records_the_time_to_each_target(small_config, tmp_path):
    """experiment=speedrun's TimeToAccuracy: a test pass after every epoch, training time to each target."""
    from cifar_shared.engine.train import train

    cfg = small_config(tmp_path, "experiment=speedrun", "data=synthetic", "epochs=2", "batch_size=32",
                       "callbacks.extra.time_to_accuracy.targets=[0.0,1.01]")
    train(cfg)
    run = json.loads((tmp_path / "metrics.json").read_text())
    clock = run["time_to_accuracy"]
    assert [r["epoch"] for r in clock["curve"]] == [1, 2]
    first, second = (r["train_s"] for r in clock["curve"])
    assert 0 < first < second
    assert clock["targets"] == {"0.00": first}  # reached at the first reading; 1.01 never
    assert all(0 <= r["test_acc"] <= 1 for r in clock["curve"]) and clock["device"] == "cpu"
    assert run["device"]["compile"] is False and run["device"]["channels_last"] is False  # auto: off on CPU
