"""The probes inside a real debugcnn-train run: when they watch, what they write, what they diagnose."""

import json
import math

import pytest
import pytorch_lightning as pl
import torch

from cifar_debugcnn import report
from cifar_debugcnn.model import DebugCNN
from cifar_shared.engine.train import train
from cifar_shared.testing import faults

pytestmark = pytest.mark.slow  # training runs with probes: once, on the first Python of the nox matrix


def forward_hooks(net) -> int:
    return sum(len(m._forward_hooks) for m in net.modules())


class HookCounter(pl.Callback):
    """Counts the forward hooks on the network while each training, validation and test step runs
    (appended after the probes, so a batch's count includes what they attached for it); keeps the
    first validation batch of each run and the weights it met, for a reference computation."""

    def __init__(self):
        self.per_step, self.per_val_batch, self.per_test_batch, self.first_val = [], [], [], []

    def on_before_backward(self, trainer, pl_module, loss):
        self.per_step.append(forward_hooks(pl_module.net))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.per_val_batch.append(forward_hooks(pl_module.net))
        if batch_idx == 0:
            weights = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}
            self.first_val.append((batch[0].clone(), batch[1].clone(), weights))

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.per_test_batch.append(forward_hooks(pl_module.net))


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
    assert counter.per_val_batch == [watched, 0] * 2  # 80 validation images: the first of 2 batches is watched
    assert counter.per_test_batch == [0, 0]  # 100 test images, never watched


def test_every_epoch_has_a_validation_record(run):
    out, _, _ = run
    val = json.loads((out / "debug.json").read_text())["val"]
    assert [(v["split"], v["epoch"], v["global_step"], v["batch"]) for v in val] == [("val", 1, 5, 0), ("val", 2, 10, 0)]
    assert all(sum(v["labels"]) == sum(v["predicted"]) == 64 and "params" not in v for v in val)


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
    assert "debug/dead_element_fraction/features.block1.relu" in tags["scalars"]
    assert "debug/val/act_std/classifier.relu1" in tags["scalars"] and "debug/val/loss" in tags["scalars"]
    assert "debug/val/activations/features.block2.bn" in tags["histograms"]
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


FORWARD_ORDER = [f"features.block{i}.{kind}" for i in range(1, 5) for kind in ("conv", "bn", "relu", "pool")] + [
    "classifier.flatten", *(f"classifier.{kind}{i}" for i in (1, 2) for kind in ("fc", "bn", "relu", "drop")), "classifier.out"]


def test_a_one_epoch_run_records_validation_probes_in_eval_mode(tmp_path, small_config):
    """debug.json's ``val`` against the layers recomputed by hand from the batch and the weights the
    validation met, in eval mode (running BatchNorm statistics, no dropout): train-mode numbers would
    differ. The test after fit runs with no hook on."""
    out = tmp_path / "one"
    _, counter = train_counting_hooks(small_config(out, "epochs=1", "data.image_size=16", "callbacks.extra.probes.figures=false",
                                                   "callbacks.extra.probes.histograms=false"))
    debug = json.loads((out / "debug.json").read_text())
    assert [(s["epoch"], s["global_step"]) for s in debug["steps"]] == [(1, 0)]
    [val] = debug["val"]
    assert (val["split"], val["epoch"], val["global_step"], val["batch"]) == ("val", 1, 5, 0)
    assert counter.per_val_batch == [len(FORWARD_ORDER) + 1, 0] and counter.per_test_batch == [0, 0]  # + the logits hook

    [(x, y, weights)] = counter.first_val
    net = DebugCNN(num_classes=10, image_size=16)
    net.load_state_dict(weights)
    net.eval()
    rows = {r["name"]: r for r in val["layers"]}
    assert list(rows) == FORWARD_ORDER
    h = x
    with torch.no_grad():
        for name in FORWARD_ORDER:
            h = net.get_submodule(name)(h)
            row = rows[name]
            assert row["shape"] == list(h.shape) and row["out_grad_norm"] is None
            expected = [h.min(), h.max(), h.mean(), h.std(unbiased=False)]
            assert [row[k] for k in ("min", "max", "mean", "std")] == pytest.approx([float(v) for v in expected], rel=1e-5, abs=1e-6)
            if name.endswith(("relu", "relu1", "relu2")):
                zero = (h == 0).all(dim=0)  # per element: zero in every image
                assert (row["dead_elements"], row["elements"]) == (int(zero.sum()), zero.numel())
                assert row["dead"] == int(zero.reshape(zero.shape[0], -1).all(dim=1).sum())
        assert val["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(h, y)), rel=1e-5)
        assert val["labels"] == torch.bincount(y, minlength=10).tolist()
        assert val["predicted"] == torch.bincount(h.argmax(dim=1), minlength=10).tolist()
    assert "debug probe (validation): epoch 1, step 5 (batch 0)" in (out / "train.log").read_text()


def test_the_validation_table_has_no_parameter_section():
    row = {"name": "features.block1.relu", "type": "ReLU", "shape": [64, 32, 32, 32], "min": 0.0, "max": 2.0, "mean": 0.4,
           "std": 0.5, "dead": 1, "units": 32, "dead_elements": 12345, "elements": 32768, "out_grad_norm": None}
    text = report.table({"split": "val", "epoch": 3, "global_step": 90, "batch": 0, "loss": 1.25, "labels": None,
                         "predicted": None, "layers": [row], "diagnoses": []})
    assert text.splitlines()[0] == "debug probe (validation): epoch 3, step 90 (batch 0), loss 1.2500"
    assert " 1/32 " in text and " 12345/32768 " in text and "parameter" not in text


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
    debug = json.loads((tmp_path / "debug.json").read_text())
    assert [(s["epoch"], s["global_step"], s["batch"]) for s in debug["steps"]] == [(1, 0, 0), (2, 5, 0)]
    assert [(v["epoch"], v["global_step"]) for v in debug["val"]] == [(1, 5), (2, 10)]  # epoch 1's kept, epoch 2's once
    assert not partial.exists() and (tmp_path / "debug" / "grad_flow_epoch002.png").exists()
