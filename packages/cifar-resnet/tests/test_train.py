import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cifar_resnet.cli import MODEL_CHOICES, train_resnet
from cifar_resnet.model import ARCHS, STEMS
from cifar_shared import UserError
from cifar_shared.data.datamodule import ImageDataModule
from cifar_shared.engine.cli import compose_config
from cifar_shared.engine.config import check_config
from cifar_shared.engine.lr_finder import DIVERGED, ONECYCLE_FRACTION, smoothing_beta
from cifar_shared.engine.train import model_header, write_model_info
from cifar_shared.testing.pixels import is_original, to_pixels


@pytest.fixture(scope="module")
def lr_find_run(tmp_path_factory, small_config):
    out = tmp_path_factory.mktemp("lr_find_run")
    # 230 training images at batch 32 are 8 batches an epoch: the 20-step sweep must span epochs
    return out, train_resnet(small_config(out, "lr_find.enabled=true", "lr_find.num_steps=20"))


def debiased_ema(values: np.ndarray, beta: float) -> np.ndarray:
    """The finder's smoothed curve in closed form: point t is the beta^(t-i)-weighted mean of the losses up to t."""
    t = np.arange(len(values))
    weights = np.tril(beta ** (t[:, None] - t[None, :]).astype(float))
    return weights @ values / weights.sum(1)


def onecycle_reference(peak: float, sched, total_steps: int) -> list[float]:
    """torch's OneCycleLR peaking at ``peak`` with the run's settings: the lr after 0..total_steps steps."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak, total_steps=total_steps, pct_start=sched.pct_start,
                                              anneal_strategy=sched.anneal_strategy, div_factor=sched.div_factor,
                                              final_div_factor=sched.final_div_factor)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(total_steps):
        opt.step()
        ref.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_lr_finder_picks_onecycle_peak(lr_find_run):
    """Under OneCycle (rule auto -> onecycle) the sweep up to lr 1 diverges, so a pick must happen: a
    third of the last lr before the smoothed loss stays 10 % above its start; the run's OneCycle
    then peaks there."""
    out, _ = lr_find_run
    assert (out / "lr_finder.png").stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text())
    found = metrics["lr_find"]
    lrs, raw = np.asarray(found["lr"]), np.asarray(found["raw_loss"])
    assert len(lrs) == len(raw) == 20, "the sweep stopped at the end of the first epoch (8 batches)"
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0) and (np.diff(lrs) > 0).all()
    assert found["rule"] == "onecycle"  # auto under OneCycle

    assert np.isfinite(raw).all()
    curve = debiased_ema(raw, smoothing_beta(len(raw)))
    assert np.allclose(found["loss"], curve)
    start = float(np.median(raw[:3]))
    diverged = curve > (1 + DIVERGED) * start
    assert diverged[-1], f"the sweep did not diverge (start {start:.3f}, end {curve[-1]:.3f})"
    edge = int(np.nonzero(~diverged)[0][-1]) + 1
    assert found["suggestion"] == pytest.approx(lrs[edge - 1] * ONECYCLE_FRACTION)

    log = (out / "train.log").read_text()
    assert f"picks lr {found['suggestion']:.4g}" in log
    assert found["lr_used"] == found["suggestion"]
    assert f"lr of this run (OneCycle's max_lr where it defaults to it): {found['lr_used']:.4g}" in log
    # the run's schedule is OneCycle peaking at the pick: its recorded lr (the rate the epoch's
    # epoch's end, after one scheduler step per batch) is torch's OneCycleLR's after as many steps
    cfg = OmegaConf.load(out / "config.yaml")
    steps = math.ceil(len(ImageDataModule(cfg.data, cfg.augment, cfg.batch_size, cfg.seed).train_set) / cfg.batch_size)
    assert metrics["history"][0]["lr"] == pytest.approx(onecycle_reference(found["suggestion"], cfg.scheduler, steps)[steps - 1])  # the rate the last step used
    assert metrics["history"][0]["lr"] != pytest.approx(onecycle_reference(cfg.lr, cfg.scheduler, steps)[steps - 1])


def test_run_folder_has_model_info_and_results(lr_find_run):
    out, test = lr_find_run
    info = (out / "model_info.txt").read_text()
    logged = re.search(r"resnet: ([\d,]+) parameters", (out / "train.log").read_text()).group(1)
    assert f"Total params: {logged}" in info and "Input Shape" in info and "[1, 3, 32, 32]" in info
    assert (out / "checkpoints" / "last.ckpt").exists()
    log = (out / "train.log").read_text()
    assert "epoch 1/1" in log
    # the results: the returned test metrics are the ones metrics.json and the log's test line hold
    assert json.loads((out / "metrics.json").read_text())["test"] == test
    assert re.search(rf"test \(best-epoch001-acc[\d.]+\.ckpt\): acc {test['acc']:.4f}  f1_macro {test['f1_macro']:.4f}", log)
    assert sum(map(sum, test["confusion_matrix"])) == 64 and test["acc"] == pytest.approx(np.trace(test["confusion_matrix"]) / 64)


@pytest.mark.parametrize("stem, total", [("cifar", "11,220,132"), ("imagenet", "11,227,812")])
def test_model_info_counts_at_100_classes(tmp_path, stem, total):
    cfg = compose_config("cifar_resnet.conf", [f"model.stem={stem}"])
    net = instantiate(cfg.model, num_classes=100)
    text = write_model_info(net, model_header(cfg, 100), (3, 32, 32), tmp_path / "model_info.txt")
    assert f"Total params: {total}" in text and text == (tmp_path / "model_info.txt").read_text()
    assert text.startswith(f"resnet: arch=resnet18, stem={stem}, 100 classes\n")


@pytest.mark.parametrize("pipeline", ["tensor", "per_sample"])
def test_both_augment_pipelines_train(tmp_path, pipeline, small_config, seen):
    """Each pipeline feeds training the package's flip + affine + cutout images: most differ from
    every stored training image, and about half (cutout_p 0.5) hold a 16 px square of the mean
    colour; validation gets the stored images unchanged (the control for the comparison)."""
    cfg = small_config(tmp_path, f"augment.pipeline={pipeline}", "data.num_workers=1",
                       "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")
    train_resnet(cfg)
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert len(history) == 1 and math.isfinite(history[0]["train/loss"])

    dm = ImageDataModule(cfg.data, cfg.augment, cfg.batch_size, cfg.seed)
    train_px, val_px = to_pixels(seen["train"], dm), to_pixels(seen["val"], dm)
    assert len(train_px) == 3 * cfg.batch_size and len(val_px) > 0
    assert is_original(val_px, dm.val_set.images).all()
    assert is_original(train_px, dm.train_set.images).float().mean() < 0.4  # 1/8 pass with no flip, affine or cutout
    side, mean = cfg.augment.cutout, torch.tensor(dm.mean).view(1, 3, 1, 1) * 255
    mean_coloured = ((train_px - mean).abs() < 0.6).all(1, keepdim=True).float()  # cutout fills with the mean
    holes = F.avg_pool2d(mean_coloured, side, stride=1).flatten(1).amax(1) == 1.0
    assert 0.25 < holes.float().mean() < 0.75


def test_bad_model_names_are_user_errors(tmp_path, small_config):
    with pytest.raises(UserError, match="model.stem='tiny' is invalid: choose one of cifar, imagenet"):
        check_config(small_config(tmp_path, "model.stem=tiny"), MODEL_CHOICES)
    with pytest.raises(UserError, match="model.arch='resnet101' is invalid"):
        train_resnet(small_config(tmp_path, "model.arch=resnet101"))
    assert not (tmp_path / "config.yaml").exists()


def test_cli_model_names_match_the_model():
    assert set(MODEL_CHOICES["model.arch"]) == set(ARCHS) and set(MODEL_CHOICES["model.stem"]) == set(STEMS)


def test_speedrun_clock_records_the_time_to_each_target(small_config, tmp_path):
    """experiment=speedrun's TimeToAccuracy: a test pass after every epoch, and for each target the
    training time of the first pass that reached it (none for a target no pass reached); its test
    accuracy is the test split's, as the final test of the same epoch's checkpoint shows. lr 0.02:
    the recipe's 0.2 (for batch 512) diverges at batch 32 and would test the clock at chance only."""
    from cifar_shared.engine.train import train

    targets = [0.2, 0.5, 1.0]  # twice chance, half, all of the 64 test images
    cfg = small_config(tmp_path, "experiment=speedrun", "data=synthetic", "epochs=2", "batch_size=32", "lr=0.02",
                       f"callbacks.extra.time_to_accuracy.targets=[{','.join(map(str, targets))}]")
    test = train(cfg)
    run = json.loads((tmp_path / "metrics.json").read_text())
    clock = run["time_to_accuracy"]
    assert [r["epoch"] for r in clock["curve"]] == [1, 2]
    first, second = (r["train_s"] for r in clock["curve"])
    assert 0 < first < second
    expected = {}
    for t in targets:
        reached = [r["train_s"] for r in clock["curve"] if r["test_acc"] >= t]
        if reached:
            expected[f"{t:.2f}"] = reached[0]
    assert clock["targets"] == expected
    assert "0.20" in clock["targets"]  # it learns beyond chance (0.1) within the two epochs
    best_epoch = int(re.search(r"test \(best-epoch(\d+)-", (tmp_path / "train.log").read_text()).group(1))
    assert clock["curve"][best_epoch - 1]["test_acc"] == round(test["acc"], 4)
    assert clock["device"] == "cpu"
    assert run["device"]["compile"] is False and run["device"]["channels_last"] is False  # auto: off on CPU
