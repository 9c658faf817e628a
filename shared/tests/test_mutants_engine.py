"""Schedulers, metrics and the LR finder's rules, on the points test_engine_parts.py leaves open:
each argument reaching torch, the edges (no warmup, a schedule shorter than its warmup), every
rule's refusal. Written to kill the mutants of these modules (``uvx nox -s mutants``, docs/testing.md)."""

import math

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as S

from cifar_shared.engine import schedulers
from cifar_shared.engine.lr_finder import (
    divergence_index,
    pick_lr,
    smooth,
    smoothing_beta,
    valley_index,
)
from cifar_shared.engine.metrics import BatchMean, classification_metrics
from cifar_shared.testing.schedules import lr_trace, one_param_sgd

# --------------------------------------------------------------------------- schedulers

def test_plateau_passes_its_settings_to_torch():
    out = schedulers.plateau(one_param_sgd(), 10, 1, factor=0.5, patience=3, monitor="val/acc", mode="max")
    sched = out["scheduler"]
    assert isinstance(sched, S.ReduceLROnPlateau) and set(out) == {"scheduler", "interval", "monitor"}
    assert (out["interval"], out["monitor"], sched.mode, sched.factor, sched.patience) == ("epoch", "val/acc", "max", 0.5, 3)
    lrs = []
    for acc in [0.5, 0.5, 0.5, 0.5, 0.5]:  # no improvement: the 4th bad epoch (patience 3) halves the lr
        sched.step(acc)
        lrs.append(sched.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05])
    default = schedulers.plateau(one_param_sgd(), 10, 1)
    assert (default["scheduler"].mode, default["scheduler"].factor, default["scheduler"].patience) == ("min", 0.1, 2)


def test_no_warmup_is_the_main_schedule_itself():
    out = schedulers.cosine(one_param_sgd(), total_steps=20, steps_per_epoch=10)
    assert isinstance(out["scheduler"], S.CosineAnnealingLR) and out == {"scheduler": out["scheduler"], "interval": "step"}
    out = schedulers.step(one_param_sgd(), total_steps=20, steps_per_epoch=10, step_epochs=1, warmup_epochs=0.04)  # rounds to 0 steps
    assert isinstance(out["scheduler"], S.StepLR) and out == {"scheduler": out["scheduler"], "interval": "step"}
    warm = schedulers.step(one_param_sgd(), total_steps=20, steps_per_epoch=10, warmup_epochs=0.1)  # 1 step
    assert isinstance(warm["scheduler"], S.SequentialLR)


def test_warmup_is_linear_from_its_start_factor_to_the_lr():
    lrs = lr_trace(schedulers.cosine(one_param_sgd(), total_steps=40, steps_per_epoch=10, warmup_epochs=0.4, warmup_start_factor=0.2), 6)
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])  # 4 warmup steps, then the cosine's start
    lrs = lr_trace(schedulers.step(one_param_sgd(), total_steps=40, steps_per_epoch=10, step_epochs=10, warmup_epochs=0.4, warmup_start_factor=0.2), 6)
    assert lrs == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1])
    lrs = lr_trace(schedulers.step(one_param_sgd(), total_steps=40, steps_per_epoch=10, step_epochs=10, warmup_epochs=0.2), 3)
    assert lrs == pytest.approx([0.001, 0.1 * (0.01 + 0.99 / 2), 0.1])  # default start factor 0.01


def test_cosine_when_the_warmup_takes_the_whole_run():
    # no steps left after the warmup: the cosine's period is 1 step (not 0), reaching min_lr at once
    lrs = lr_trace(schedulers.cosine(one_param_sgd(), total_steps=4, steps_per_epoch=4, warmup_epochs=1, min_lr=0.01), 6)
    assert lrs[4] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.01)


def test_cosine_decays_over_the_steps_after_the_warmup():
    lrs = lr_trace(schedulers.cosine(one_param_sgd(), total_steps=30, steps_per_epoch=10, warmup_epochs=1, min_lr=0.0), 31)
    assert lrs[10] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.05) and lrs[30] == pytest.approx(0.0, abs=1e-12)


def test_step_size_is_at_least_one_step():
    lrs = lr_trace(schedulers.step(one_param_sgd(), total_steps=4, steps_per_epoch=1, step_epochs=0.4, gamma=0.5), 4)
    assert lrs == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    lrs = lr_trace(schedulers.step(one_param_sgd(), total_steps=8, steps_per_epoch=4, step_epochs=0.5, gamma=0.1), 5)
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    lrs = lr_trace(schedulers.step(one_param_sgd(), total_steps=8, steps_per_epoch=1, step_epochs=2.6), 4)  # round(2.6) = 3 steps
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.01])


def test_onecycle_peaks_at_max_lr_or_the_optimizers_lr_with_its_annealing():
    def reference(max_lr, strategy, steps=20):
        opt = one_param_sgd(0.3)
        ref = S.OneCycleLR(opt, max_lr=max_lr, total_steps=steps, pct_start=0.25, anneal_strategy=strategy,
                           div_factor=10.0, final_div_factor=100.0)
        return lr_trace({"scheduler": ref}, steps)

    out = schedulers.onecycle(one_param_sgd(0.3), total_steps=20, steps_per_epoch=5, max_lr=0.5, pct_start=0.25,
                              anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0)
    assert out == {"scheduler": out["scheduler"], "interval": "step"}
    assert lr_trace(out, 20) == pytest.approx(reference(0.5, "linear"))
    out = schedulers.onecycle(one_param_sgd(0.3), total_steps=20, steps_per_epoch=5, pct_start=0.25, div_factor=10.0, final_div_factor=100.0)
    assert lr_trace(out, 20) == pytest.approx(reference(0.3, "cos"))
    lrs = lr_trace(schedulers.onecycle(one_param_sgd(0.3), total_steps=100, steps_per_epoch=10), 100)
    assert lrs[0] == pytest.approx(0.3 / 25) and max(lrs) == pytest.approx(0.3, rel=1e-3) and lrs.index(max(lrs)) in (29, 30)
    assert lrs[-1] == pytest.approx(0.3 / 25 / 1e4, rel=0.05)


def test_defaults_of_the_schedules():
    lrs = lr_trace(schedulers.cosine(one_param_sgd(), total_steps=10, steps_per_epoch=5), 11)
    assert lrs[5] == pytest.approx(0.05) and lrs[10] == pytest.approx(0.0, abs=1e-12)  # down to 0
    lrs = lr_trace(schedulers.step(one_param_sgd(), total_steps=100, steps_per_epoch=1), 32)
    assert lrs[29] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.01)  # every 30 epochs, by 0.1
    lrs = lr_trace(schedulers.onecycle(one_param_sgd(0.5), total_steps=50, steps_per_epoch=5), 50)
    assert lrs[0] == pytest.approx(0.5 / 25, rel=1e-9) and lrs[-1] == pytest.approx(0.5 / 25 / 1e4, rel=1e-6)


def test_constant_keeps_the_lr_per_epoch():
    out = schedulers.constant(one_param_sgd(0.2), 10, 5)
    assert isinstance(out["scheduler"], S.LambdaLR) and out == {"scheduler": out["scheduler"], "interval": "epoch"}
    assert lr_trace(out, 4) == pytest.approx([0.2] * 4)


# --------------------------------------------------------------------------- metrics

def test_metric_collection_names_prefix_and_averages():
    few = classification_metrics(5, "val/")
    assert sorted(few.keys()) == ["val/acc", "val/f1_macro", "val/precision_macro", "val/recall_macro"]
    many = classification_metrics(6, "test/")
    assert sorted(many.keys()) == ["test/acc", "test/acc_top5", "test/f1_macro", "test/precision_macro", "test/recall_macro"]
    for metric in many.values():
        assert metric.num_classes == 6 and metric.validate_args is False
    assert many["acc_top5"].top_k == 5 and many["acc"].top_k == 1
    assert many["acc"].average == "micro" and many["acc_top5"].average == "micro"
    assert {many[k].average for k in ("f1_macro", "precision_macro", "recall_macro")} == {"macro"}


def test_metrics_by_hand_on_an_unbalanced_batch():
    # 6 classes; class 0 dominates, so micro and macro numbers differ
    logits = torch.full((8, 6), -5.0)
    preds = [0, 0, 0, 0, 1, 2, 0, 3]
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2, 3])
    for i, p in enumerate(preds):
        logits[i, p] = 5.0
    logits[5, 1] = 1.0  # sample 5's class is its runner-up: in its top 5
    logits[6, 2] = -10.0  # sample 6's class is its last: not in its top 5
    out = classification_metrics(6, "m/")(logits, y)
    assert out["m/acc"] == pytest.approx(6 / 8)
    # per class (0..3 present): precision 4/5, 1, 0, 1; recall 1, 1/2, 0, 1 (4, 5 never predicted nor true)
    assert out["m/precision_macro"] == pytest.approx((4 / 5 + 1 + 0 + 1) / 4)
    assert out["m/recall_macro"] == pytest.approx((1 + 1 / 2 + 0 + 1) / 4)
    f1 = [2 * 0.8 / 1.8, 2 / 3, 0.0, 1.0]
    assert out["m/f1_macro"] == pytest.approx(sum(f1) / 4)
    assert out["m/acc_top5"] == pytest.approx(7 / 8)


def test_batch_mean_weights_sums_and_starts_empty():
    m = BatchMean()
    assert m.total.item() == 0.0 and m.count.item() == 0.0
    m.update(torch.tensor([1.0, 3.0]), weight=2)  # a vector: its sum, times the weight
    m.update(torch.tensor(2.0, dtype=torch.float64), 4)
    assert m.total.dtype == torch.float32 and m.total.item() == pytest.approx(8 + 8) and m.count.item() == 6
    assert m.compute().item() == pytest.approx(16 / 6)
    m.reset()
    m.update(torch.tensor(5.0, requires_grad=True), 1)
    assert not m.total.requires_grad and m.compute().item() == 5.0
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert math.isnan(BatchMean().compute().item())  # no samples: 0 / 0


def test_batch_mean_sums_its_states_across_processes():
    """Under DDP each process holds its own total and count; the sync must add them (a weighted
    mean over all samples), not stack them. Two processes faked with torchmetrics' own hook."""
    m = BatchMean()
    m.update(torch.tensor(3.0), weight=2)  # this process: total 6, count 2

    def gather(t, group=None):  # the other process saw 4 samples of loss 1.5 (total 6, count 4)
        return [t, torch.tensor(4.0) if t.item() == 2.0 else torch.tensor(6.0)]

    m.sync(dist_sync_fn=gather, distributed_available=lambda: True)
    assert m.total.shape == () and m.count.shape == ()
    assert (m.total.item(), m.count.item()) == (12.0, 6.0)  # a mean of 2.0 over the 6 samples
    m.unsync()
    assert (m.total.item(), m.count.item()) == (6.0, 2.0)


# --------------------------------------------------------------------------- LR finder rules

def _falling(n, lo=1e-5, hi=1.0):
    lrs = np.logspace(math.log10(lo), math.log10(hi), n).tolist()
    return lrs, np.linspace(2.3, 1.0, n).tolist()


def test_every_rule_says_ok_with_its_pick():
    lrs, loss = _sweep()
    curve = np.asarray(smooth(loss))
    assert pick_lr(lrs, loss, "min_over_10") == (lrs[int(curve.argmin())] / 10, "ok")
    assert pick_lr(lrs, loss, "valley") == (lrs[valley_index(curve)], "ok")
    assert pick_lr(lrs, loss, "onecycle") == (lrs[divergence_index(curve, float(np.median(loss[:10]))) - 1] / 3, "ok")
    steep, why = pick_lr(lrs, loss, "steepest")
    assert why == "ok" and len({steep, pick_lr(lrs, loss, "valley")[0], pick_lr(lrs, loss, "onecycle")[0],
                                pick_lr(lrs, loss, "min_over_10")[0]}) == 4  # four rules, four answers


def _sweep():
    lrs = np.logspace(-5, 0, 100)
    loss = np.where(lrs <= 0.1, 2.3 - 1.5 * (np.log10(lrs) + 5) / 4, 0.8 + 20 * (lrs - 0.1))
    return lrs.tolist(), loss.tolist()


def test_steepest_is_per_log_lr_past_the_first_points():
    """Three stretches after the skipped start: the densest lrs (flat loss), the largest drop per
    point (lrs far apart), and the largest drop per log-lr (lrs close together): the rule picks the last."""
    parts = [(12, 0.1, 0.0), (5, 0.005, 0.0), (3, 0.1, 0.0), (5, 0.2, 0.1), (4, 0.1, 0.01), (5, 0.02, 0.03), (4, 0.1, 0.0), (8, 0.1, -0.3)]
    x, loss = [-6.0], [2.3]
    for k, dx, dl in parts:
        for _ in range(k):
            x.append(x[-1] + dx)
            loss.append(loss[-1] - dl)
    lrs = (10 ** np.array(x)).tolist()
    pick, why = pick_lr(lrs, loss, "steepest")
    assert why == "ok" and lrs.index(pick) in (32, 33)  # in the close-together drop (points 30..34)


def test_steepest_needs_more_points_than_it_skips():
    lrs, loss = _falling(12)
    assert pick_lr(lrs, loss, "steepest") == (None, "only 12 points for the steepest rule")
    lrs, loss = _falling(13)
    assert pick_lr(lrs, loss, "steepest") == (lrs[10], "ok")


def test_five_finite_losses_are_enough():
    lrs, loss = _falling(8)
    assert pick_lr(lrs, loss[:4] + [float("nan")] * 4, "valley") == (None, "only 4 finite losses")
    assert pick_lr(lrs, loss[:4] + [float("inf")] * 4, "valley") == (None, "only 4 finite losses")
    assert pick_lr(lrs[:5], loss[:5], "min_over_10")[1] == "ok"
    pick, why = pick_lr(lrs, [float("nan")] + loss[1:], "min_over_10")  # a NaN point is left out of the curve
    assert (pick, why) == (lrs[-1] / 10, "ok")


def test_start_is_the_median_of_the_first_tenth_at_least_three():
    # refused (no 5 % drop): the message shows the start the rule measured from
    loss = [2.2, 2.4, 2.3, 2.5] + [2.25] * 16  # 20 points: the first 3 count (4 would make 2.35)
    assert pick_lr(np.logspace(-5, 0, 20).tolist(), loss, "valley") == (
        None, "the loss never fell 5% below its start (2.3 -> min 2.2)")
    loss = [2.3, 2.4, 2.2, 2.6, 3.0] + [2.3] * 35  # 40 points: the first 4 (3 would make 2.3)
    assert pick_lr(np.logspace(-5, 0, 40).tolist(), loss, "valley") == (
        None, "the loss never fell 5% below its start (2.35 -> min 2.27)")


def test_a_drop_of_exactly_five_percent_counts():
    lrs = np.logspace(-5, 0, 20).tolist()
    loss = [1.9, 2.0, 2.0] + [2.0] * 17  # start 2.0; the curve's first point is 1.9 = 0.95 x 2.0 exactly
    assert smooth(loss)[0] == 1.9 == (1 - 0.05) * 2.0
    assert pick_lr(lrs, loss, "min_over_10") == (lrs[0] / 10, "ok")


def test_smoothing_span_and_given_beta():
    assert [smoothing_beta(n) for n in (10, 40, 60, 100, 1000)] == pytest.approx([0.5, 0.5, 1 - 1 / 3, 0.8, 0.98])
    assert smooth([1.0, 3.0], beta=0.9) == pytest.approx([1.0, (0.09 + 0.3) / (1 - 0.81)])
    assert smooth([1.0, 3.0]) == pytest.approx([1.0, (0.25 + 1.5) / 0.75])  # 2 points: beta 0.5
    out = smooth([1.0, float("nan"), float("-inf"), 3.0], beta=0.5)
    assert out[0] == 1.0 and math.isnan(out[1]) and math.isnan(out[2]) and out[3] == pytest.approx(1.75 / 0.75)


def test_valley_edges():
    assert valley_index(np.array([1.0, 2.0, 3.0, 4.0])) == 0  # no decrease at all: the first point
    assert valley_index(np.array([3.0, 2.0, 5.0, 6.0])) == 0  # falls from the first point: fastai gave -1 (the last lr)
    rng = np.random.default_rng(0)
    for n in range(2, 30):
        assert 0 <= valley_index(rng.normal(size=n).cumsum()) < n
    # a run falling from the first point: fastai's start is one before it (-1), so 30 points -> -1 + 10 + 5
    curve = np.concatenate([np.linspace(3.0, 1.0, 30), np.linspace(1.1, 2.0, 10)])
    assert valley_index(curve) == 14
    # equal values do not extend a valley: 3 -> 2 -> 1 (3 points, ending at 7: 7 - 3 + 1 = 5), not the 7 points
    # of 3, 2, 2, 2, 2, 2, 1 (which would give 0 + 2 + 1 = 3)
    assert valley_index(np.array([0.5, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 5.0])) == 5
    # two valleys of one length: the first wins
    assert valley_index(np.array([1.0, 5.0, 4.0, 3.0, 10.0, 9.0, 8.0])) == 1


def test_divergence_index_edges():
    # exactly 10 % above the start is not diverged yet; the first point of the final run above is
    assert divergence_index(np.array([2.0, 1.0, 2.2, 2.3, 3.0]), 2.0) == 3
    # above, back below, above again: the final run counts
    assert divergence_index(np.array([2.0, 3.0, 1.0, 2.5, 2.6]), 2.0) == 3
    # ending below the bound: no divergence
    assert divergence_index(np.array([2.0, 3.0, 2.1]), 2.0) is None
    # NaN is diverged; above from the first point: index 0
    assert divergence_index(np.array([2.0, 1.0, np.nan]), 2.0) == 2
    assert divergence_index(np.array([2.5, np.nan]), 2.0) == 0


def test_onecycle_declines_without_a_divergence_or_with_one_from_the_first_step():
    lrs = np.logspace(-5, 0, 20).tolist()  # the last lr is 1, the one before 0.546
    assert pick_lr(lrs, np.linspace(2.3, 1.0, 20).tolist(), "onecycle") == (
        None, "the loss never rose 10% above its start for good (no divergence up to lr 1; raise lr_find.max_lr)")
    # start = median(5, 1, 1) = 1, and the smoothed curve is above 1.1 from its first point: no lr before it
    assert pick_lr(lrs, [5.0, 1.0, 1.0] + [20.0] * 17, "onecycle") == (None, "the loss was above its start from the first step")
    # start = median(1, 30, 1) = 1, below 1.1 at the first point only: the pick is a third of the first lr
    assert pick_lr(lrs, [1.0, 30.0, 1.0] + [30.0] * 17, "onecycle") == (pytest.approx(lrs[0] / 3), "ok")
