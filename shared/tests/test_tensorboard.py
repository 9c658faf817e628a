"""TensorBoard holds what a run was, not only its curves: the config as hyperparameters, the
network's graph and the test confusion matrix. The real ``train()`` writes them on tiny synthetic
data; the tests read them back as TensorBoard does (``EventAccumulator``)."""

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch import nn

import cifar_shared.testing
from cifar_shared.engine.loggers import CONFUSION_TAG, HPARAM_METRICS, log_graph
from cifar_shared.engine.train import close_run_logs, train
from cifar_shared.testing import tiny_net
from cifar_shared.testing.fault_suite import tiny_config

TENSORBOARD = ["logger=tensorboard", "callbacks.checkpoint.every_n_minutes=null"]  # fault_suite's default is csv, saving every batch


@pytest.fixture(autouse=True)
def _close_logs():
    yield
    close_run_logs()


def event_files(out: Path) -> list[EventAccumulator]:
    """Each event file of the run's ``tensorboard/`` (fit and test write one each), loaded whole."""
    loaded = []
    for path in sorted((out / "tensorboard").glob("events.out.tfevents.*")):
        events = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        loaded.append(events)
    return loaded


def hparams_plugin(files: list[EventAccumulator], field: str) -> list:
    """Every ``session_start_info`` or ``experiment`` record the hparams plugin would read."""
    found = []
    for events in files:
        try:
            contents = events.PluginTagToContent("hparams")
        except KeyError:  # no hparams in this file
            continue
        for content in contents.values():
            data = HParamsPluginData.FromString(content)
            if data.HasField(field):
                found.append(getattr(data, field))
    return found


def graphs(files: list[EventAccumulator]) -> list:
    return [events.Graph() for events in files if events.Tags()["graph"]]


def shape(node) -> list[int]:
    return [d.size for d in node.attr["_output_shapes"].list.shape[0].dim]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One real one-epoch run with TensorBoard, its console and its warnings (a user's would show them)."""
    out = tmp_path_factory.mktemp("tensorboard_run")
    _, cfg = tiny_config(out, *TENSORBOARD, "epochs=1")
    console = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
        warnings.simplefilter("always")  # the project's own filters (quiet_libraries) still apply: train() adds them
        try:
            test = train(cfg)
        finally:
            close_run_logs()
    return {"cfg": cfg, "out": out, "test": test, "files": event_files(out), "console": console.getvalue(), "warnings": caught}


def test_hparams_are_the_runs_config_with_the_test_and_val_metrics(run):
    """The hparams plugin compares runs by their config values against their results: it needs
    every value, typed as the plugin reads it, and metric columns whose values exist."""
    cfg, files = run["cfg"], run["files"]
    (start,) = hparams_plugin(files, "session_start_info")  # once, not once per event file
    hp = start.hparams
    assert hp["lr"].number_value == pytest.approx(cfg.lr) and hp["optim.lr"].number_value == pytest.approx(cfg.optim.lr)
    assert hp["batch_size"].number_value == cfg.batch_size == 32
    assert hp["epochs"].number_value == 1 and hp["data.image_size"].number_value == cfg.data.image_size
    assert hp["model._target_"].string_value == "cifar_shared.testing.tiny_net"
    assert hp["augment.flip"].string_value == "true"  # a bool as the command line spells it
    assert hp["augment.crop_ratio"].string_value.startswith("[0.75, 1.33")  # a list as text
    assert "data.mean" not in hp  # null: the plugin has no null
    (experiment,) = hparams_plugin(files, "experiment")
    assert [m.name.tag for m in experiment.metric_infos] == list(HPARAM_METRICS)
    # the plugin reads each metric's value from the run's own scalars: they must be there, and be the run's
    scalars = {tag: events.Scalars(tag) for events in files for tag in events.Tags()["scalars"]}
    assert set(HPARAM_METRICS) <= set(scalars)
    assert scalars["test/acc"][-1].value == pytest.approx(run["test"]["acc"])
    assert len(scalars["val/acc"]) == 1  # no placeholder value written for the plugin
    saved = yaml.safe_load((run["out"] / "tensorboard" / "hparams.yaml").read_text())
    assert saved["batch_size"] == 32 and saved["optim"]["lr"] == pytest.approx(cfg.optim.lr)  # the config, nested as in config.yaml


def test_graph_is_the_network_at_the_datas_image_shape(run):
    """The network the config built, traced at one image of the data's shape and class count."""
    (graph,) = graphs(run["files"])
    nodes = {n.name: n for n in graph.node}
    inputs = [n for name, n in nodes.items() if name.startswith("input/")]
    outputs = [n for name, n in nodes.items() if name.startswith("output/")]
    assert [shape(n) for n in inputs] == [[1, 3, 32, 32]] and [shape(n) for n in outputs] == [[1, 10]]
    assert {"aten::_convolution", "aten::batch_norm", "aten::linear"} <= {n.op for n in graph.node}  # tiny_net's layers


def test_confusion_matrix_image_after_test(run):
    """The image a reader of TensorBoard sees: one per test, at the test scalars' step, a readable size."""
    images = [img for events in run["files"] if CONFUSION_TAG in events.Tags()["images"] for img in events.Images(CONFUSION_TAG)]
    assert len(images) == 1
    (image,) = images
    test_acc_step = next(events.Scalars("test/acc")[-1].step for events in run["files"] if "test/acc" in events.Tags()["scalars"])
    assert image.step == test_acc_step
    assert 400 <= image.width <= 2000 and 400 <= image.height <= 2000 and 0.8 < image.width / image.height < 1.25
    pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
    assert pixels.shape == (image.height, image.width, 3) and pixels.std() > 10  # drawn, not blank
    metrics = json.loads((run["out"] / "metrics.json").read_text())
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == run["cfg"].data.test_size  # the matrix drawn is the test's


def test_tensorboard_adds_no_console_noise_or_warnings(run):
    assert [str(w.message) for w in run["warnings"]] == []
    console = run["console"]
    assert not any(text in console for text in ("Traceback", "Error occurs", "TracerWarning", "no model graph", "hparams"))


def test_resumed_run_writes_no_second_hparams_or_graph(tmp_path):
    """A resume appends a new event file to the same folder: the first start's config and graph
    stand, a second copy would be duplicate records in the plugin."""
    for epochs in (1, 2):
        _, cfg = tiny_config(tmp_path, *TENSORBOARD, f"epochs={epochs}", "test_after_fit=false")
        train(cfg)
        close_run_logs()
    assert "resuming from" in (tmp_path / "train.log").read_text()
    files = event_files(tmp_path)
    assert len(files) == 2  # one per fit
    assert len(hparams_plugin(files, "session_start_info")) == 1 and len(hparams_plugin(files, "experiment")) == 1
    assert len(graphs(files)) == 1
    steps = [s.step for events in files for s in events.Scalars("val/acc")]
    assert len(steps) == 2 and steps[0] < steps[1]  # one point per epoch, none written at the resume's start


def test_a_compiled_network_is_drawn_as_written(tmp_path):
    """``compile: auto`` compiles the network in place on a GPU, and ``torch.jit.trace`` refuses a
    compiled module: the graph is traced from the network as written, and the compiled call is
    back afterwards (nothing is compiled for the graph)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    net = tiny_net()
    net.compile()
    compiled = net._compiled_call_impl
    logger = TensorBoardLogger(tmp_path, name="tensorboard", version="")
    assert log_graph(logger, net, (3, 32, 32), "cpu")
    logger.experiment.close()
    assert net._compiled_call_impl is compiled
    (graph,) = graphs(event_files(tmp_path))
    assert "aten::_convolution" in {n.op for n in graph.node}


class TracerRejects(nn.Module):
    """tiny_net for a network ``torch.jit.trace`` cannot follow (data-dependent structure, ops the
    tracer lacks): it trains as usual and fails only under the tracer, as such a network does."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = tiny_net(num_classes)

    def forward(self, x):
        if torch.jit.is_tracing():
            raise RuntimeError("the tracer cannot follow this network")
        return self.body(x)


def test_untraceable_network_trains_without_a_graph_and_says_so_once(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setattr(cifar_shared.testing, "tiny_net", TracerRejects)  # the config's model._target_
    _, cfg = tiny_config(tmp_path, *TENSORBOARD, "epochs=1", "test_after_fit=false")
    with caplog.at_level(logging.INFO, logger="cifar_shared"):
        train(cfg)
    close_run_logs()
    out, err = capsys.readouterr()
    lines = [r for r in caplog.records if "graph" in r.getMessage()]
    assert [(r.levelno, r.name) for r in lines] == [(logging.INFO, "cifar_shared.train")]
    assert "TracerRejects does not trace" in lines[0].getMessage() and "\n" not in lines[0].getMessage()
    assert out.count("no model graph") == 1 and "Error occurs" not in out + err and "Traceback" not in out + err  # torch prints a failed trace
    files = event_files(tmp_path)
    assert graphs(files) == [] and len(hparams_plugin(files, "session_start_info")) == 1  # the config is still there
    assert [r["epoch"] for r in json.loads((tmp_path / "metrics.json").read_text())["history"]] == [1]
