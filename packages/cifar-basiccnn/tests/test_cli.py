"""The commands as a user runs them: exit codes, one-line errors, files kept.

Refusals that come before any training import are cheap real processes; those that need the
training stack (data loading) call ``train_main`` in this process, except one that stays a real
process (an error from inside the Hydra job); the runs come from the session's shared
``cli_run`` / ``cli_sweep``.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_basiccnn.cli import train_main

pytestmark = pytest.mark.slow  # subprocess runs of the CLI: once, on the first Python of the nox matrix

BIN = Path(sys.executable).parent
FAST = ["data=synthetic", "data.train_size=300", "data.test_size=100", "trainer.enable_progress_bar=false"]


def cli(*args: str, tool: str = "basiccnn-train") -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0]


def test_smoke_run_writes_the_run_folder(cli_run):
    run, _ = cli_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and metrics["test"]["confusion_matrix"]
    figures = cli(str(run), tool="basiccnn-visualize")
    assert figures.returncode == 0 and (run / "plots" / "confusion_matrix.png").exists()


def test_visualize_checkpoint_file_draws_the_curves_it_holds_into_the_runs_plots(cli_run, tmp_path):
    """The original's form: the curves up to the checkpoint's epoch, into RUN/plots/."""
    import matplotlib.image

    run, _ = cli_run
    figures = cli("--checkpoint-file", str(run / "checkpoints" / "checkpoint_epoch_1.ckpt"), tool="basiccnn-visualize")
    assert figures.returncode == 0, figures.stderr
    written = [Path(line) for line in figures.stdout.split()]
    assert {p.name for p in written} == {"loss.png", "accuracy.png", "f1.png", "lr.png"}  # epoch 1 is not the tested checkpoint
    assert all(p.parent == run / "plots" and matplotlib.image.imread(p).ndim == 3 for p in written)
    missing = cli("--checkpoint-file", str(tmp_path / "nope.ckpt"), tool="basiccnn-visualize")
    assert_one_line_error(missing, "does not exist")


def test_the_originals_data_keys_are_accepted(tmp_path):
    """raw_data_dir is where the archive goes (data.root); processed_dir gets the PNG export."""
    raw, processed = tmp_path / "raw", tmp_path / "processed"
    result = cli(f"raw_data_dir={raw}", f"processed_dir={processed}", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert f"root: {raw}" in result.stdout and f"export_dir: {processed}" in result.stdout
    assert "original key processed_dir -> export_dir" in result.stderr


def test_unknown_key():
    assert_one_line_error(cli("epochz=3"), "unknown config key 'epochz'")


def test_wrong_type_and_range():
    assert_one_line_error(cli("epochs=abc"), "epochs='abc'", "integer")
    assert_one_line_error(cli("data.val_fraction=1.5"), "data.val_fraction=1.5")


def test_unknown_group_option():
    assert_one_line_error(cli("data=cifar11"), "unknown option 'cifar11'", "cifar10")


def in_process_error(result: tuple[int, str, str], *needles: str) -> None:
    code, out, err = result
    assert_one_line_error(subprocess.CompletedProcess([], code, out, err), *needles)


def test_truncated_pickles(tmp_path, in_process):
    from cifar_shared.testing import write_cifar10

    folder = write_cifar10(tmp_path)
    for f in folder.glob("data_batch_*"):
        f.write_bytes(f.read_bytes()[:1000])
    in_process_error(in_process(train_main, f"data.root={tmp_path}", f"output_dir={tmp_path / 'run'}"), "data_batch_1 is truncated or corrupt")
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_empty_folder_without_network(tmp_path, in_process):
    in_process_error(in_process(train_main, f"data.root={tmp_path}", f"output_dir={tmp_path / 'run'}"), "no cifar10 data under", "data.root")


def test_unreadable_checkpoint_is_kept(tmp_path):
    """A real process: an error raised inside the Hydra job still exits 2 with one line."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_text("not a checkpoint")
    (tmp_path / "metrics.json").write_text('{"history": []}')
    assert_one_line_error(cli(*FAST, f"output_dir={tmp_path}"), "last.ckpt is unreadable")
    assert (tmp_path / "checkpoints" / "last.ckpt").read_text() == "not a checkpoint"
    assert (tmp_path / "metrics.json").read_text() == '{"history": []}'
    assert not (tmp_path / "config.yaml").exists() and not (tmp_path / "model_info.txt").exists()


def test_visualize_missing_run(tmp_path):
    assert_one_line_error(cli(str(tmp_path), tool="basiccnn-visualize"), "metrics.json does not exist")


def test_print_resolved_config():
    result = cli("--cfg", "job", "lr=0.01")
    assert result.returncode == 0 and "lr: 0.01" in result.stdout


def test_entry_points_exist():
    assert (BIN / "basiccnn-train").exists() and (BIN / "basiccnn-visualize").exists()


def test_multirun_sweep_gets_one_run_folder_per_job(cli_sweep):
    for job, seed in enumerate((0, 1, 2)):
        assert json.loads((cli_sweep / str(job) / "metrics.json").read_text())["test"]
        assert f"seed: {seed}\n" in (cli_sweep / str(job) / "config.yaml").read_text()


def test_bad_value_in_a_sweep_fails_before_the_first_job(tmp_path):
    assert_one_line_error(cli("-m", *FAST, "seed=1,abc", f"output_dir={tmp_path}"), "seed='abc' is invalid")
    assert not (tmp_path / "0").exists()


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_output_dir_that_is_a_file(tmp_path, where):
    (tmp_path / "f").write_text("keep")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "run"
    assert_one_line_error(cli(*FAST, f"output_dir={out}"), f"output_dir {out}")
    assert (tmp_path / "f").read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]
