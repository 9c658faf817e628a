"""The commands as a user runs them: debugcnn-check's table and exit codes, debugcnn-train at 224 px."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # subprocess runs of the CLI: once, on the first Python of the nox matrix

BIN = Path(sys.executable).parent
FAST = ["data=synthetic", "data.train_size=200", "data.test_size=50"]


def cli(*args: str, tool: str = "debugcnn-check", cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def assert_check_fails(result: subprocess.CompletedProcess, check: str, *needles: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: check '{check}' failed: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert f"{check}" in result.stdout and "FAIL" in result.stdout  # the table still prints


def write_folder(root: Path, classes: list[str], per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_check_passes_on_synthetic_and_writes_nothing(tmp_path):
    """The table: a header, then every check in order, each PASS with its detail; nothing on
    stderr, nothing written; the 'loss moves' row shows the loss it says fell, falling."""
    result = cli(*FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["check", "result", "detail"]
    parsed = [re.fullmatch(r"(\S.*?)\s{2,}(PASS|FAIL|skip)\s+(\S.*)", row) for row in rows]
    assert all(parsed), rows
    assert [(m[1], m[2]) for m in parsed] == [(name, "PASS") for name in
                                              ("data loads", "model builds", "one batch", "one training step", "loss moves")]
    train, val, test = map(int, re.match(r"(\d+) train / (\d+) val / (\d+) test images, 10 classes, 3x32x32$", parsed[0][3]).groups())
    assert (train + val, test) == (200, 50) and 0 < val < train  # FAST's sizes, split into train and val
    before, after = map(float, re.search(r"loss on one batch ([\d.]+) -> ([\d.]+)", parsed[4][3]).groups())
    assert after < before
    assert result.stderr.strip() == "" and list(tmp_path.iterdir()) == []


def run_checks_in_process(*overrides: str):
    """The same checks without a new interpreter (exit codes and the one line: the tests above/below)."""
    from cifar_debugcnn.check import run_checks
    from cifar_shared.engine.cli import compose_config

    printed = []
    cfg = compose_config("cifar_debugcnn.conf", list(overrides))
    return run_checks(cfg, print_table=printed.append), printed[0]


def test_check_passes_on_the_real_subset(real_subset):
    results, table = run_checks_in_process("data=cifar10", f"data.root={real_subset}", "data.download=false")
    assert all(ok for _, ok, _ in results) and table.count("PASS") == 5
    assert "3728 train / 932 val / 423 test images, 10 classes, 3x32x32" in table


def test_check_fails_on_a_folder_with_one_class(tmp_path):
    from cifar_shared import UserError

    write_folder(tmp_path / "imgs", ["cat"])
    with pytest.raises(UserError, match="^check 'data loads' failed: image folder .* needs at least 2 class folders"):
        run_checks_in_process("data=folder", f"data.root={tmp_path / 'imgs'}", f"data.cache_dir={tmp_path / 'cache'}")


def test_check_fails_on_an_unreadable_image(tmp_path):
    from cifar_shared import UserError

    write_folder(tmp_path / "imgs", ["cat", "dog"])
    (tmp_path / "imgs" / "dog" / "2.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="^check 'data loads' failed: cannot read image .*dog/2.png"):
        run_checks_in_process("data=folder", f"data.root={tmp_path / 'imgs'}", f"data.cache_dir={tmp_path / 'cache'}")


def test_check_fails_on_an_image_size_the_model_cannot_take():
    assert_check_fails(cli(*FAST, "data.image_size=40"), "model builds", "cannot take 40 px images", "data.image_size=48")


def test_train_refuses_the_same_image_size_in_one_line(tmp_path):
    result = cli(*FAST, "data.image_size=40", f"output_dir={tmp_path}", tool="debugcnn-train")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: model cannot take 40 px images: its 4 2x2 max-pools need a multiple of 16 (e.g. data.image_size=48)"]


@pytest.mark.parametrize("flag", ["--cfg"])
def test_check_takes_the_training_overrides(flag):
    result = cli(flag, "job", "experiment=subset", "callbacks.extra.probes.every_n_steps=3")
    assert result.returncode == 0 and "every_n_steps: 3" in result.stdout and "cifar10-subset" in result.stdout
