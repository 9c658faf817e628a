"""The probes inside a real debugcnn-train run: when they watch, what they write, what they diagnose."""

import json
import math

import pytest
import pytorch_lightning as pl

from cifar_debugcnn import report
from cifar_shared.engine.train import train
from cifar_shared.testing import faults

pytestmark = pytest.mark.slow  # training runs with probes: once, on the first Python of the nox matrix


class HookCounter(pl.Callback):
    """Counts the forward hooks on the network while each training step runs."""

    def __init__(self):
        self.per_step = []

    def on_before_backward(self, trainer, pl_module, loss):
        self.per_step.append(sum(len(m._forward_hooks) for m in pl_module.net.modules()))


def train_counting_hooks(cfg):
    """``train(cfg)`` with a HookCounter appended to the trainer the shared engine builds."""
    from cifar_shared.engine import train as engine

    counter, build = HookCounter(), engine.build_trainer

    def with_counter(cfg, recorder, *rest):
        trainer = build(cfg, recorder, *rest)
        trainer.callbacks.append(counter)
        return trainer

    engine.build_trainer = with_counter
    try:
        return train(cfg), counter
    finally:
        engine.build_trainer = build


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_config):
    out = tmp_path_factory.mktemp("run")
    test, counter = train_counting_hooks(small_config(out))
    return out, test, counter


def test_default_cadence_watches_the_first_batch_of_every_epoch(run):
    out, _, _ = run
    debug = json.loads((out / "debug.json").read_text())
    steps = debug["steps"]
    assert [(s["epoch"], s["batch"], s["global_step"]) for s in steps] == [(1, 0, 0), (2, 0, 5)]  # 320 images / 64 = 5 steps
    layers = {r["name"]: r for r in steps[0]["layers"]}
    assert layers["classifier.flatten"]["shape"] == [64, 1024]
    assert layers["features.block4.relu"]["units"] == 256 and layers["classifier.relu1"]["units"] == 512
    assert all(r["grad_norm"] > 0 for r in steps[0]["params"])
    assert sum(steps[0]["labels"]) == sum(steps[0]["predicted"]) == 64
    assert not list(out.glob("*.tmp"))


def test_unwatched_steps_run_without_hooks(run):
    _, _, counter = run
    leaves = 4 * 4 + 1 + 2 * 4 + 1  # four conv blocks, flatten, two (fc, bn, relu, dropout), out
    watched = leaves + 1  # + the network's own hook for the logits
    assert counter.per_step == [watched, 0, 0, 0, 0] * 2


def test_table_in_train_log_and_figures(run):
    out, _, _ = run
    log = (out / "train.log").read_text()
    assert "debug probe: epoch 1, step 0 (batch 0)" in log and "features.block1.relu" in log
    assert "classifier.fc1.weight" in log and "update/w" in log
    for name in ("grad_flow_epoch001.png", "grad_flow_epoch002.png", "dead_units.png"):
        assert (out / "debug" / name).stat().st_size > 5000


def test_tensorboard_gets_scalars_and_histograms(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, _ = run
    tags = {"scalars": set(), "histograms": set()}
    for events in (out / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "histograms": 0})
        acc.Reload()
        for kind in tags:
            tags[kind] |= set(acc.Tags()[kind])
    assert "debug/dead_fraction/features.block1.relu" in tags["scalars"]
    assert "debug/grad_norm/classifier.fc1.weight" in tags["scalars"]
    assert "debug/update_ratio/classifier.out.bias" in tags["scalars"]
    assert "debug/activations/features.block2.bn" in tags["histograms"]
    assert "debug/grads/features.block3.conv.weight" in tags["histograms"]


def test_every_n_steps_and_off(tmp_path, small_config):
    train(small_config(tmp_path / "n", "epochs=1", "data.image_size=16", "callbacks.extra.probes.every_n_steps=2", "callbacks.extra.probes.figures=false"))
    steps = json.loads((tmp_path / "n" / "debug.json").read_text())["steps"]
    assert [s["global_step"] for s in steps] == [0, 2, 4]
    train(small_config(tmp_path / "off", "epochs=1", "data.image_size=16", "callbacks.extra.probes=null"))
    assert not (tmp_path / "off" / "debug.json").exists() and not (tmp_path / "off" / "debug").exists()


def _record(**changes):
    record = {"loss": 1.0,
              "layers": [{"name": "features.block1.relu", "type": "ReLU", "min": 0.0, "max": 1.0, "dead": 30, "units": 32, "dead_fraction": 30 / 32},
                         {"name": "head.tanh", "type": "Tanh", "min": -1.0, "max": 1.0, "saturated": 0.8},
                         {"name": "head.fc", "type": "Linear", "min": -math.inf, "max": 1.0}],
              "params": [{"name": "a.weight", "grad_norm": 1e-9}, {"name": "b.weight", "grad_norm": 5e3},
                         {"name": "c.weight", "grad_norm": 0.1}, {"name": "d.weight", "grad_norm": math.nan}]}
    record.update(changes)
    return record


THRESHOLDS = {"dead": 0.5, "vanishing": 1e-6, "exploding": 100.0, "saturation": 0.5}


def test_diagnoses_name_the_layer():
    found = report.diagnose(_record(), THRESHOLDS)
    assert any(d.startswith("features.block1.relu: 30 of 32 units dead (94%") for d in found)
    assert any(d.startswith("head.tanh: 80% of its outputs saturate") for d in found)
    assert any(d.startswith("a.weight: gradient norm 1.0e-09") and "vanishing" in d for d in found)
    assert any(d.startswith("b.weight: gradient norm 5.0e+03") and "exploding" in d for d in found)
    assert any(d.startswith("d.weight: gradient norm is nan") for d in found)
    assert not any(d.startswith("c.weight") for d in found) and len(found) == 5


def test_non_finite_loss_names_the_first_bad_layer():
    found = report.diagnose(_record(loss=math.nan, params=[]), THRESHOLDS)
    assert found[0].startswith("loss is nan: first non-finite activations at head.fc")
    healthy = {"loss": 0.5, "layers": [{"name": "x", "type": "ReLU", "min": 0.0, "max": 2.0, "dead": 1, "units": 8, "dead_fraction": 0.125}],
               "params": [{"name": "x.weight", "grad_norm": 0.3}]}
    assert report.diagnose(healthy, THRESHOLDS) == []



def test_a_mid_epoch_resume_keeps_that_epochs_probe_record_and_no_partial_figure(tmp_path, small_config):
    """Ctrl-C after step 8 (epoch 2, batch 4 of 5) saves mid-epoch; the rerun resumes after it, so
    epoch 2's watched batch 0 is not trained again: its record must come back from debug.json, and
    a figure a kill left half-written (0-byte .tmp.png) must be gone."""
    cfg = lambda: small_config(tmp_path, "callbacks.checkpoint.every_n_minutes=1e-9")  # noqa: E731
    with pytest.raises(SystemExit) as stopped, faults.inject("sigint:8"):  # the tests' fault injector
        train(cfg())
    assert stopped.value.code == 130
    partial = tmp_path / "debug" / "grad_flow_epoch002.tmp.png"
    partial.parent.mkdir(exist_ok=True)
    partial.write_bytes(b"")
    train(cfg())
    steps = json.loads((tmp_path / "debug.json").read_text())["steps"]
    assert [(s["epoch"], s["global_step"], s["batch"]) for s in steps] == [(1, 0, 0), (2, 5, 0)]
    assert not partial.exists() and (tmp_path / "debug" / "grad_flow_epoch002.png").exists()
