import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from cifar_shared import UserError
from cifar_shared.data.stats import channel_stats
from cifar_shared.engine import schedulers
from cifar_shared.engine.cli import checked_override_sets, one_line, translate_flags
from cifar_shared.engine.config import check_config
from cifar_shared.engine.lr_finder import (
    pick_lr,
    rule_for,
    smooth,
    valley_index,
)
from cifar_shared.engine.metrics import classification_metrics
from cifar_shared.testing.schedules import lr_trace, one_param_sgd


def test_channel_stats_match_torch():
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk=7)
    x = images.double() / 255
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), x.mean((0, 2, 3)), atol=1e-9)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), x.permute(1, 0, 2, 3).flatten(1).std(1, unbiased=False), atol=1e-9)



def test_onecycle_matches_torch_reference():
    opt = one_param_sgd()
    ours = lr_trace(schedulers.onecycle(opt, total_steps=100, steps_per_epoch=10, pct_start=0.2, div_factor=100, final_div_factor=1000), 100)
    ref_opt = one_param_sgd()
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.1, total_steps=100, pct_start=0.2, div_factor=100, final_div_factor=1000)
    expected = []
    for _ in range(100):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert ours == pytest.approx(expected)
    assert ours[0] == pytest.approx(0.1 / 100) and max(ours) == pytest.approx(0.1, rel=1e-3)


def test_cosine_with_warmup_by_formula():
    opt = one_param_sgd()
    lrs = lr_trace(schedulers.cosine(opt, total_steps=60, steps_per_epoch=10, warmup_epochs=1, min_lr=0.001, warmup_start_factor=0.01), 60)
    assert lrs[0] == pytest.approx(0.001) and lrs[10] == pytest.approx(0.1)
    t = 25 - 10
    assert lrs[25] == pytest.approx(0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * t / 50)) / 2)


def test_step_with_warmup_decays_every_step_epochs():
    opt = one_param_sgd()
    lrs = lr_trace(schedulers.step(opt, total_steps=50, steps_per_epoch=5, step_epochs=2, gamma=0.5, warmup_epochs=1), 50)
    assert lrs[5] == pytest.approx(0.1) and lrs[14] == pytest.approx(0.1) and lrs[15] == pytest.approx(0.05)


def test_plateau_steps_per_epoch_on_its_monitor():
    """The whole Lightning scheduler dict: stepped once an epoch on ``monitor``, and the lr it gives
    for a series of monitored values is torch's ReduceLROnPlateau's with the same settings."""
    opt = one_param_sgd()
    out = schedulers.plateau(opt, 10, 1, factor=0.5, patience=1)
    assert set(out) == {"scheduler", "interval", "monitor"} and out["interval"] == "epoch" and out["monitor"] == "val/loss"
    assert isinstance(out["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau) and out["scheduler"].optimizer is opt
    ref_opt = one_param_sgd()
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, mode="min", factor=0.5, patience=1)
    ours, expected = [], []
    for value in [1.0, 0.9, 0.95, 0.97, 0.8, 0.85, 0.86, 0.87, 0.88]:
        out["scheduler"].step(value)
        ref.step(value)
        ours.append(opt.param_groups[0]["lr"])
        expected.append(ref_opt.param_groups[0]["lr"])
    assert ours == pytest.approx(expected) and ours[-1] < 0.1 / 2  # it did reduce, more than once
    acc = schedulers.plateau(one_param_sgd(), 10, 1, monitor="val/acc", mode="max")
    assert acc["monitor"] == "val/acc" and acc["scheduler"].mode == "max"


def test_metrics_against_hand_computation():
    m = classification_metrics(3, "val/")
    logits = torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0]])
    y = torch.tensor([0, 1, 2, 2, 1])
    out = m(logits, y)
    assert out["val/acc"] == pytest.approx(3 / 5)
    # per-class F1: c0 p=1/2 r=1 -> 2/3; c1 p=1/2 r=1/2 -> 1/2; c2 p=1 r=1/2 -> 2/3
    assert out["val/f1_macro"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"epochs": "abc"}, "epochs='abc' is invalid"),
        ({"batch_size": 0}, "batch_size=0 is invalid"),
        ({"lr": -1.0}, "lr=-1.0 is invalid"),
        ({"data": {"val_fraction": 0.0}}, "data.val_fraction=0.0"),
        ({"augment": {"pipeline": "gpu"}}, "augment.pipeline='gpu' is invalid"),
        ({"lr_find": {"rule": "middle"}}, "lr_find.rule='middle' is invalid"),
        ({"lr_find": {"min_lr": 0.1, "max_lr": 0.01}}, "lr_find.min_lr=0.1 must be below"),
    ],
)
def test_check_config_names_the_bad_value(override, message):
    cfg = OmegaConf.merge({"seed": 1, "epochs": 2, "batch_size": 8, "lr": 0.1, "data": {"name": "synthetic", "val_fraction": 0.1}, "augment": {"pipeline": "tensor"}}, override)
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        check_config(cfg)


def test_smoothed_sweep_is_debiased():
    # Lightning's stored curve starts near 1.0 for a constant loss of 2.0 (its debias is off by a step)
    assert smooth([2.0] * 30) == pytest.approx([2.0] * 30)
    assert math.isnan(smooth([2.0, float("nan"), 2.0])[1]) and smooth([2.0, float("nan"), 2.0])[2] == pytest.approx(2.0)


def _sweep():
    """Loss falling linearly in log-lr from 2.3 at 1e-5 to 0.8 at 0.1, then blowing up."""
    lrs = np.logspace(-5, 0, 100)
    loss = np.where(lrs <= 0.1, 2.3 - 1.5 * (np.log10(lrs) + 5) / 4, 0.8 + 20 * (lrs - 0.1))
    return lrs.tolist(), loss.tolist()


def test_lr_rules_read_the_curve():
    lrs, loss = _sweep()
    raw_min = lrs[int(np.argmin(loss))]
    pick, _ = pick_lr(lrs, loss, "min_over_10")
    assert raw_min / 10 <= pick <= raw_min  # a tenth of the smoothed minimum, which lags the raw one
    steep, _ = pick_lr(lrs, loss, "steepest")
    assert lrs[10] <= steep < raw_min


def test_valley_rule_is_fastais_longest_valley():
    # the longest decreasing subsequence: the bump (10..19) and the descent (20..60), 51 points
    curve = np.concatenate([np.linspace(2.0, 1.9, 10), np.linspace(2.2, 2.1, 10), np.linspace(2.05, 1.0, 41), np.linspace(1.1, 3.0, 39)])
    i = valley_index(curve)
    start, end = 9, 60  # fastai: max_start = max_end - lds[max_end] (one before the run's first point)
    sections = (end - start) / 3
    assert i == start + int(sections) + int(sections / 2) == 34
    lrs, loss = _sweep()
    pick, _ = pick_lr(lrs, loss, "valley")
    raw_min = lrs[int(np.argmin(loss))]
    assert lrs[0] * 10 < pick < raw_min  # inside the valley, below its bottom


def test_onecycle_rule_is_a_third_of_the_last_lr_before_the_divergence():
    """The loss blows up past 0.1 (0.8 + 20 (lr - 0.1)); the smoothed curve, which lags, first stays
    10 % above the start (2.3) a few points later: the pick is a third of the point before that."""
    lrs, loss = _sweep()
    pick, why = pick_lr(lrs, loss, "onecycle")
    curve = np.asarray(smooth(loss))
    start = float(np.median(loss[:10]))
    edge = next(i for i in range(len(curve)) if (curve[i:] > 1.1 * start).all())
    assert why == "ok" and pick == pytest.approx(lrs[edge - 1] / 3)
    assert 0.1 < lrs[edge - 1] < 0.3  # past the raw blow-up at 0.1, by the smoothing's lag
    assert pick > pick_lr(lrs, loss, "valley")[0] and pick > pick_lr(lrs, loss, "min_over_10")[0]


def test_onecycle_rule_needs_a_divergence_not_a_dip():
    """A flat sweep that ends 25 % up has diverged: a pick (the other rules decline: no 5 % dip); a
    sweep that falls and never rises again has no bound to read; a loss that turns NaN diverged."""
    lrs = np.logspace(-5, 0, 60).tolist()
    flat_then_up = [2.3] * 50 + [2.3 + 0.3 * k for k in range(1, 11)]
    pick, why = pick_lr(lrs, flat_then_up, "onecycle")
    assert why == "ok" and lrs[40] / 3 < pick < lrs[59] / 3
    assert pick_lr(lrs, flat_then_up, "valley")[0] is None
    falling = np.linspace(2.3, 1.0, 60).tolist()
    none, why = pick_lr(lrs, falling, "onecycle")
    assert none is None and "never rose 10% above its start" in why and "raise lr_find.max_lr" in why
    nan_end = falling[:50] + [float("nan")] * 10
    pick, why = pick_lr(lrs, nan_end, "onecycle")
    assert why == "ok" and pick == pytest.approx(lrs[49] / 3)


def test_auto_rule_follows_the_scheduler():
    assert rule_for("auto", "cifar_shared.engine.schedulers.onecycle") == "onecycle"
    assert rule_for("auto", "cifar_shared.engine.schedulers.plateau") == "valley"
    assert rule_for("auto", None) == "valley"
    assert rule_for("steepest", "cifar_shared.engine.schedulers.onecycle") == "steepest"


def test_lr_finder_refuses_a_flat_curve():
    rng = np.random.default_rng(0)
    lrs = np.logspace(-6, 0, 100).tolist()
    pick, why = pick_lr(lrs, (2.3 + 0.02 * rng.standard_normal(100)).tolist(), "min_over_10")
    assert pick is None and "never fell" in why


def test_every_swept_value_is_checked_once():
    sets = checked_override_sets(["lr=0.1", "seed=0,1,2", "model.stem=cifar,imagenet"])
    assert sets[0] == ["lr=0.1", "seed=0", "model.stem=cifar"]
    assert ["lr=0.1", "seed=2", "model.stem=cifar"] in sets and ["lr=0.1", "seed=0", "model.stem=imagenet"] in sets
    assert len(sets) == 4
    assert checked_override_sets(["seed=0,1"], multirun=False) == [["seed=0,1"]]  # Hydra's error, as typed


def test_flags_become_overrides():
    assert translate_flags(["--lr-find", "epochs=1"]) == ["lr_find.enabled=true", "epochs=1"]


def test_hydra_errors_become_one_line():
    text = "Could not override 'epochz'.\nTo append to your config use +epochz=1\nKey 'epochz' is not in struct\n    full_key: epochz\n    object_type=dict"
    line = one_line(Exception(text))
    assert "\n" not in line and "unknown config key 'epochz'" in line
    missing = one_line(Exception("In 'train': Could not find 'data/cifar11'\n\nAvailable options in 'data':\n\tcifar10\n\tsynthetic\n"))
    assert missing == "unknown option 'cifar11' for data: choose one of cifar10, synthetic"



def test_auto_flags_follow_the_device(monkeypatch):
    """channels_last/compile/deterministic=auto: on (fast) for a CUDA GPU, off (reproducible) on CPU."""
    from cifar_shared.engine import train as engine

    cfg = OmegaConf.create({"channels_last": "auto", "compile": True, "trainer": {"accelerator": "auto"}})
    for cuda in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        assert engine.gpu_flag(cfg, "channels_last") is cuda and engine.gpu_flag(cfg, "compile") is True
        assert engine.gpu_flag(OmegaConf.merge(cfg, {"trainer": {"accelerator": "cpu"}}), "channels_last") is False
        assert engine.resolve_determinism({"deterministic": "auto", "accelerator": "auto"}) == (
            {"deterministic": False, "benchmark": True} if cuda else {"deterministic": "warn", "benchmark": None})
        assert engine.resolve_determinism({"deterministic": "auto", "accelerator": "gpu", "benchmark": False})["benchmark"] is False
        assert engine.resolve_determinism({"deterministic": True, "accelerator": "auto"}) == {"deterministic": True, "benchmark": None}
    with pytest.raises(UserError, match=r"channels_last='yes' is invalid: it must be true, false or auto"):
        check_config(OmegaConf.create({"channels_last": "yes"}))


def test_batch_mean_weights_each_batch_by_its_size():
    """The loss mean of an epoch is per sample: torchmetrics' MeanMetric (checks on) is the reference."""
    from torchmetrics import MeanMetric

    from cifar_shared.engine.metrics import BatchMean

    ours, reference = BatchMean(), MeanMetric()
    for value, n in [(1.0, 10), (3.0, 30), (0.5, 7)]:
        ours.update(torch.tensor(value), weight=n)
        reference.update(torch.tensor(value), weight=n)
    assert ours.compute().item() == pytest.approx(reference.compute().item()) == pytest.approx((10 + 90 + 3.5) / 47)


def test_time_to_accuracy_records_the_first_time_each_target_is_reached(tmp_path, monkeypatch):
    """The speedrun clock with scripted test accuracies and a fake clock: a target gets the training
    time of the first pass at or above it and keeps it (a dip and a later pass above change
    nothing), a target never reached stays out, and the time of the clock's own test passes is
    not training time."""
    from types import SimpleNamespace

    from cifar_shared.engine.callbacks import RunRecorder, TimeToAccuracy

    # readings: training starts at 0; each epoch end reads once before its test pass, once after
    readings = iter([0.0, 10.0, 13.0, 20.0, 21.0, 25.0, 30.0])  # training: 10 s, then 7 s, then 4 s
    accuracies = iter([0.6, 0.4, 0.8])
    monkeypatch.setattr(TimeToAccuracy, "_now", staticmethod(lambda pl_module: next(readings)))
    monkeypatch.setattr(TimeToAccuracy, "test_accuracy", lambda self, trainer, pl_module: next(accuracies))
    clock, recorder = TimeToAccuracy([0.9, 0.5, 0.7]), RunRecorder(tmp_path / "metrics.json", [])
    trainer = SimpleNamespace(datamodule=SimpleNamespace(test_dataloader=lambda: []), callbacks=[recorder], current_epoch=0)
    module = SimpleNamespace(device=torch.device("cpu"))
    clock.on_train_start(trainer, module)
    for epoch in range(3):
        trainer.current_epoch = epoch
        clock.on_train_epoch_end(trainer, module)
    recorded = json.loads((tmp_path / "metrics.json").read_text())["time_to_accuracy"]
    assert recorded == {
        "targets": {"0.50": 10.0, "0.70": 21.0},
        "curve": [{"epoch": 1, "train_s": 10.0, "test_acc": 0.6}, {"epoch": 2, "train_s": 17.0, "test_acc": 0.4},
                  {"epoch": 3, "train_s": 21.0, "test_acc": 0.8}],
        "device": "cpu",
    }
