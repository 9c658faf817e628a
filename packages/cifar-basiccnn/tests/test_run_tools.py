"""cifar-eval, cifar-predict, cifar-export-model and cifar-report on a basiccnn run folder, as a user runs them.

The commands' entry functions run in this process (``in_process``) on the run folder the session
trained once with the real ``basiccnn-train`` (``cli_run``); the installed scripts themselves are
checked by their entry points and one real process; the exported models load in fresh processes.
"""

import csv
import json
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_shared.runs.evaluate import eval_main, predict_main
from cifar_shared.runs.export import export_main
from cifar_shared.runs.report import report_main

pytestmark = pytest.mark.slow  # runs of the run-folder commands: once, on the first Python of the nox matrix

BIN = Path(sys.executable).parent
TOOLS = {"cifar-eval": eval_main, "cifar-predict": predict_main, "cifar-export-model": export_main, "cifar-report": report_main}


def ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, err[-3000:]
    return out


@pytest.fixture(scope="module")
def run_dir(cli_run) -> Path:
    return cli_run[0]


@pytest.fixture(scope="module")
def pngs(run_dir, tmp_path_factory) -> Path:
    """The run's test images exported as PNG class folders (cifar-export's writer)."""
    from omegaconf import OmegaConf

    from cifar_shared.data.sources import load_source
    from cifar_shared.data.tools import export_images

    cfg = OmegaConf.load(run_dir / "config.yaml")
    return export_images(load_source(cfg.data)[1], tmp_path_factory.mktemp("png"), "test")


def test_the_scripts_run_these_functions():
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name in TOOLS}
    assert {name: ep.load() for name, ep in scripts.items()} == TOOLS
    assert all((BIN / name).exists() for name in TOOLS)


def test_eval_reproduces_the_runs_test_metrics(run_dir, in_process):
    out = ok(in_process(eval_main, run_dir, "--name", "same"))
    recorded = json.loads((run_dir / "metrics.json").read_text())["test"]
    evaluated = json.loads((run_dir / "eval-same.json").read_text())["test"]
    assert evaluated == recorded  # acc, f1, loss, confusion matrix: exactly
    assert f"acc {recorded['acc']:.4f}" in out and (run_dir / "eval-same-confusion.png").stat().st_size > 0
    assert json.loads((run_dir / "metrics.json").read_text())["test"] == recorded  # untouched


def test_eval_on_a_folder_and_predict_agree(run_dir, pngs, tmp_path, in_process):
    ok(in_process(eval_main, run_dir, "data=folder", f"data.root={pngs}", "data.cache_dir=null", "--name", "png"))
    on_pngs = json.loads((run_dir / "eval-png.json").read_text())["test"]
    recorded = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert on_pngs["acc"] == recorded["acc"] and on_pngs["confusion_matrix"] == recorded["confusion_matrix"]
    with open(run_dir / "eval-png-predictions.csv") as f:
        from_eval = [row["predicted_class"] for row in csv.DictReader(f)]

    out = ok(in_process(predict_main, run_dir, pngs, "--top-k", "3", "--out", tmp_path / "p.csv"))
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["top1"] for r in rows] == from_eval and len(rows) == 120
    probs = np.array([[float(r[f"p{j}"]) for j in (1, 2, 3)] for r in rows])
    assert (np.diff(probs, axis=1) <= 0).all() and (probs.sum(1) <= 1 + 1e-5).all()
    assert "120 images ->" in out and len(out.splitlines()) == 12  # 10 rows, "... more", the summary
    one = ok(in_process(predict_main, run_dir, pngs / rows[0]["file"].split("/test/")[1], "--top-k", "1", "--out", tmp_path / "one.csv"))
    assert rows[0]["top1"] in one


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_loads_in_a_fresh_process_and_matches(run_dir, pngs, tmp_path, fmt, in_process):
    from cifar_shared.runs.evaluate import batches, read_images
    from cifar_shared.runs.folder import RunFolder

    model = tmp_path / f"model.{fmt}"
    out = ok(in_process(export_main, run_dir, "--format", fmt, "--out", model))
    assert "within" in out and json.loads((tmp_path / f"model.{fmt}.json").read_text())["check"]["max_abs_diff"] <= 1e-4
    run = RunFolder.open(run_dir)
    mean, std, _ = run.input_spec()
    x = next(iter(batches(read_images(sorted(pngs.rglob("*.png"))[-40:], (32, 32))[0], mean, std, 40)))[0]
    with torch.no_grad():
        expected = run.build_module(run.checkpoint()).net(x).numpy()
    np.save(tmp_path / "x.npy", x.numpy())
    load = {
        "torchscript": "import torch; m = torch.jit.load(P); y = m(torch.from_numpy(x)).detach().numpy()",
        "onnx": "import onnxruntime as ort; y = ort.InferenceSession(P).run(None, {'images': x})[0]",
    }[fmt]
    script = f"import numpy as np; P = {str(model)!r}; x = np.load({str(tmp_path / 'x.npy')!r}); {load}; np.save({str(tmp_path / 'y.npy')!r}, y)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.abs(np.load(tmp_path / "y.npy") - expected).max() <= 1e-4


def assert_one_line_error(result, *needles):
    code, out, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0]


def test_a_bad_run_dir_from_the_installed_script(tmp_path):
    """The real process: exit code 2 and one line, no import-time noise on stderr."""
    result = subprocess.run([str(BIN / "cifar-eval"), str(tmp_path / "nope")], capture_output=True, text=True, timeout=900)
    assert_one_line_error((result.returncode, result.stdout, result.stderr), "does not exist")


def test_bad_run_dir_and_missing_checkpoint(run_dir, tmp_path, in_process):
    for tool, extra in ((eval_main, []), (predict_main, [tmp_path]), (export_main, ["--format", "torchscript"])):
        assert_one_line_error(in_process(tool, tmp_path / "nope", *extra), "does not exist")
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("checkpoints"))
    (bare / "config.yaml").write_text((bare / "config.yaml").read_text().replace(str(run_dir), str(bare)))
    for tool, extra in ((eval_main, []), (predict_main, [tmp_path]), (export_main, ["--format", "onnx"])):
        assert_one_line_error(in_process(tool, bare, *extra), "no checkpoint")
    assert_one_line_error(in_process(eval_main, run_dir, "data=cifar11"), "unknown option 'cifar11'")
    assert_one_line_error(in_process(eval_main, run_dir, "data.nope=1"), "unknown config key 'data.nope'")


def test_report_over_a_three_seed_sweep(cli_sweep, tmp_path, in_process):
    import statistics

    sweep = cli_sweep
    out = ok(in_process(report_main, sweep, "--out", tmp_path / "report.md"))
    md = (tmp_path / "report.md").read_text()
    assert md in out and (tmp_path / "report.png").stat().st_size > 1000
    rows = [line.split(" | ") for line in md.splitlines()[2:]]
    assert [r[0].lstrip("| ") for r in rows[:3]] == [str(sweep / s) for s in "012"] and rows[3][0].startswith("| mean ± sd of 3")
    accs = [json.loads((sweep / s / "metrics.json").read_text())["test"]["acc"] for s in "012"]
    for row, acc in zip(rows, accs):
        assert row[1:4] == ["basiccnn", "synthetic", "2/2"] and row[4] == f"{acc:.4f}" and row[6] == "620,362"
    assert rows[3][4] == f"{statistics.mean(accs):.4f} ± {statistics.stdev(accs):.4f}"
    assert in_process(report_main, tmp_path / "nope")[0] == 2
