"""Every bad input is one clear line: the table of them, run as the commands run them.

Each row is an input (overrides, files it needs) and the start of the line it must give. Every
row must end with exit code 2, exactly one line on stderr (``error: ...``), no traceback, and no
file in the run folder (a new one: none at all; an existing one: every file as it was). Config
rows run on every installed package's ``*-train`` and on ``tiny`` (the shared config with
``cifar_shared.testing.tiny_net``, so the shared session, which installs no package, runs them
too); a package's model rows on that package; data rows on ``tiny`` (data loading is shared).
Commands run in this process (config errors stop before torch is imported); the read-only file
system row is a real process in its own mount namespace (slow).
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

from cifar_shared.registry import installed_packages
from cifar_shared.testing import call_command, write_cifar10

PACKAGES = ("basiccnn", "debugcnn", "perceiver", "qvit", "resnet")
TINY = ["name=tiny", "+model={_target_:cifar_shared.testing.tiny_net}"]
SYNTHETIC = ["data=synthetic", "data.train_size=200", "data.test_size=50"]


@dataclass
class Case:
    id: str
    argv: list[str]
    message: str  # what the one line must contain
    packages: tuple[str, ...] = ("tiny", *PACKAGES)
    files: object = None  # files(tmp_path) -> extra argv: writes the input the row needs
    existing: bool = False  # the run folder exists (a resume): its files must stay as they were
    after: object = None  # after(tmp_path): a further check (nothing ran, ...)
    marks: list = field(default_factory=list)


# --------------------------------------------------------------------------- inputs on disk

def cifar(tmp_path: Path, name: str = "", **changes) -> list[str]:
    """Tiny CIFAR-10 in the official format, with ``changes`` made to batch file ``name``."""
    folder = write_cifar10(tmp_path / "data")
    if name:
        path = folder / name
        batch = pickle.loads(path.read_bytes(), encoding="latin1")
        batch.update(changes)
        path.write_bytes(pickle.dumps(batch, protocol=2))
    return ["data=cifar10", f"data.root={tmp_path / 'data'}", "data.download=false"]


class Payload:
    """Unpickling it creates the file ``marker``: a crafted batch file's code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def crafted_pickle(tmp_path: Path) -> list[str]:
    argv = cifar(tmp_path)
    (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1").write_bytes(
        pickle.dumps({"data": Payload(tmp_path / "code-ran"), "labels": [0]}, protocol=2))
    return argv


def no_code_ran(tmp_path: Path) -> None:
    assert not (tmp_path / "code-ran").exists()


def folder(tmp_path: Path, images: dict[str, list[np.ndarray]], suffix: str = ".png") -> list[str]:
    from PIL import Image

    for cls, arrays in images.items():
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(tmp_path / "imgs" / cls / f"{i}{suffix}")
    return ["data=folder", f"data.root={tmp_path / 'imgs'}", f"data.cache_dir={tmp_path / 'cache'}"]


def noise(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(n)]


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: enough for PIL to measure it (and refuse it)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def bomb(tmp_path: Path) -> list[str]:
    argv = folder(tmp_path, {"cat": noise(4), "dog": noise(4, 1)})
    (tmp_path / "imgs" / "dog" / "huge.png").write_bytes(png_header(20000, 20000))  # 400 megapixels
    return argv


def perceiver_file(text: str | bytes):
    def write(tmp_path: Path) -> list[str]:
        path = tmp_path / "original.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["--config", str(path)]
    return write


def config_folder(tmp_path: Path) -> list[str]:
    (tmp_path / "configs").mkdir()
    return ["--config", str(tmp_path / "configs")]


# --------------------------------------------------------------------------- the table

CASES = [
    # config values, every package: refused by check_config before the run folder exists
    Case("image_size=0", ["data.image_size=0"], "data.image_size=0 is invalid: it must be a positive number of pixels"),
    Case("image_size=-8", ["data.image_size=-8"], "data.image_size=-8 is invalid: it must be a positive number of pixels"),
    Case("train_size=0", [*SYNTHETIC, "data.train_size=0"], "data.train_size=0 is invalid"),
    Case("num_classes=0", [*SYNTHETIC, "data.num_classes=0"], "data.num_classes=0 is invalid: it must be an integer >= 2"),
    Case("num_classes=1", [*SYNTHETIC, "data.num_classes=1"], "data.num_classes=1 is invalid: it must be an integer >= 2"),
    Case("test_size=0", [*SYNTHETIC, "data.test_size=0"], "data.test_size=0 is invalid"),
    Case("devices=abc", ["trainer.devices=abc"], "trainer.devices='abc' is invalid: it must be a device count"),
    Case("precision=bogus", ["trainer.precision=bogus"], "trainer.precision='bogus' is invalid: choose one of auto, 32-true"),
    Case("accelerator=tpu", ["trainer.accelerator=tpu"], "trainer.accelerator='tpu' is invalid: choose one of auto, cpu, gpu"),
    Case("every_n_minutes=abc", ["callbacks.checkpoint.every_n_minutes=abc"], "callbacks.checkpoint.every_n_minutes='abc' is invalid"),
    Case("every_n_minutes=-1", ["callbacks.checkpoint.every_n_minutes=-1"], "callbacks.checkpoint.every_n_minutes=-1 is invalid"),
    Case("gradient_clip_val=-1", ["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is invalid: it must be null or a number >= 0"),
    Case("precision=bogus on an existing run", ["trainer.precision=bogus"], "trainer.precision='bogus' is invalid", existing=True),
    # a package's model values: its check, given to the shared run()
    Case("widths=[]", ["model.widths=[]"], "model.widths=[] is invalid: it must be a non-empty list", ("basiccnn", "debugcnn")),
    Case("dropout=2", ["model.dropout=2"], "model.dropout=2 is invalid: it must be a probability in [0, 1)", ("basiccnn", "debugcnn")),
    Case("basiccnn image sizes disagree", ["data.image_size=64"], "model.image_size=32 but data.image_size=64", ("basiccnn",)),
    Case("debugcnn image size the pools cannot take", ["data.image_size=40"], "model cannot take 40 px images", ("debugcnn",)),
    Case("latent_heads=abc", ["model.latent_heads=abc"], "model.latent_heads='abc' is invalid: it must be an integer >= 1", ("perceiver",)),
    Case("depth=-1", ["model.depth=-1"], "model.depth=-1 is invalid: it must be an integer >= 1", ("perceiver",)),
    Case("depth=0", ["model.depth=0"], "model.depth=0 is invalid", ("perceiver",)),
    Case("num_latents=0", ["model.num_latents=0"], "model.num_latents=0 is invalid", ("perceiver",)),
    Case("arch=resnet99", ["model.arch=resnet99"], "model.arch='resnet99' is invalid: choose one of resnet18", ("resnet",)),
    Case("--config a folder", [], "is a folder: give the YAML file itself", ("perceiver",), files=config_folder),
    Case("--config a binary file", [], "is not a text file", ("perceiver",), files=perceiver_file(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")),
    Case("--config magnitude: high", [], "augmentation.magnitude: 'high'", ("perceiver",),
         files=perceiver_file("augmentation: {type: randaug, num_ops: 2, magnitude: high}\n")),
    # data: found while loading, before anything is written (data loading is shared: tiny runs it)
    Case("crafted data_batch_1", [], "data_batch_1 is not a CIFAR data file: its pickle imports", ("tiny",), files=crafted_pickle, after=no_code_ran),
    Case("empty test_batch", [], "test_batch holds no images", ("tiny",),
         files=lambda p: cifar(p, "test_batch", data=np.zeros((0, 3072), np.uint8), labels=[])),
    Case("string labels", [], "data_batch_2 has <U3 labels, not class numbers", ("tiny",),
         files=lambda p: cifar(p, "data_batch_2", labels=["cat"] * 20)),
    Case("float32 CIFAR pixels", [], "data_batch_1 holds float32 pixels, not the official uint8", ("tiny",),
         files=lambda p: cifar(p, "data_batch_1", data=np.zeros((20, 3072), np.float32))),
    Case("400-megapixel PNG", [], "huge.png: it is larger than PIL's decompression-bomb limit", ("tiny",), files=bomb),
    Case("float TIFF", [], "it holds 32-bit floating-point pixels (mode F)", ("tiny",),
         files=lambda p: folder(p, {"a": [np.full((8, 8), 0.5, np.float32)], "b": [np.zeros((8, 8), np.float32)]}, ".tiff")),
    Case("one image per class", [], "has only 2 images: data.test_fraction=0.1 of them rounds to no test image", ("tiny",),
         files=lambda p: folder(p, {"cat": noise(1), "dog": noise(1, 1)})),
    Case("saturated images", [], "the training images have no variation in channel R", ("tiny",),
         files=lambda p: folder(p, {c: [np.full((16, 16, 3), 255, np.uint8)] * 12 for c in ("white", "whiter")})),
    Case("too few images to validate on", [*SYNTHETIC, "data.train_size=4"], "leaves no validation image", ("tiny",)),
]


def _rows():
    installed = set(installed_packages())
    for case in CASES:
        for package in case.packages:
            marks = list(case.marks)
            if package != "tiny" and package not in installed:
                marks.append(pytest.mark.skip(reason=f"cifar-{package} is not installed in this environment"))
            yield pytest.param(case, package, id=f"{package}: {case.id}", marks=marks)


# --------------------------------------------------------------------------- running a command

def train_command(package: str):
    """The ``*-train`` entry function, as its console script calls it."""
    if package == "tiny":
        from cifar_shared.engine.cli import run

        return lambda: run("cifar_shared.conf", argv=[*sys.argv[1:], *TINY], config_name="train_base")
    (script,) = entry_points(group="console_scripts", name=f"{package}-train")
    return script.load()


def call(main, argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    with warnings.catch_warnings():  # train_base is meant to be included: Hydra notes its missing _self_
        warnings.filterwarnings("ignore", message=".*Defaults list is missing `_self_`")
        return call_command(main, argv, monkeypatch, capsys)


def assert_one_line(code: int, out: str, err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), f"exit {code}\n{err}\n{out[-2000:]}"
    assert "Traceback" not in out + err
    assert message in lines[0], lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


@pytest.mark.parametrize("case, package", list(_rows()))
def test_bad_input_is_one_line_and_writes_nothing(case: Case, package: str, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    before = {}
    if case.existing:  # a run folder from an earlier run: a refused rerun must leave it as it was
        out.mkdir()
        (out / "config.yaml").write_text("name: earlier\n")
        (out / "train.log").write_text("an earlier run's line\n")
        before = snapshot(out)
    extra = case.files(tmp_path) if case.files else []
    argv = [*extra, *case.argv, "trainer.enable_progress_bar=false", f"output_dir={out}"]
    assert_one_line(*call(train_command(package), argv, monkeypatch, capsys), case.message)
    assert snapshot(out) == before
    if case.after:
        case.after(tmp_path)


# --------------------------------------------------------------------------- a read-only file system

def _read_only_mount_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /mnt && mount -o remount,ro /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow  # a real process in its own user and mount namespace
def test_a_run_folder_on_a_read_only_file_system_is_one_line(tmp_path):
    """The run folder exists (with its train.log) on a file system mounted read-only: one line,
    before Hydra or the run touches it (opening train.log used to be a traceback)."""
    if not _read_only_mount_works():
        pytest.skip("no unprivileged mount namespace here (unshare -rm) to mount a read-only file system")
    packages = [p for p in PACKAGES if p in installed_packages()]
    command = [str(Path(sys.executable).parent / f"{packages[0]}-train")] if packages else [
        sys.executable, "-W", "ignore::UserWarning", "-c", f"from cifar_shared.engine.cli import run; run('cifar_shared.conf', argv=__import__('sys').argv[1:] + {TINY!r}, config_name='train_base')"]
    mount = tmp_path / "ro"
    mount.mkdir()
    script = (f"mount -t tmpfs none {mount} && mkdir {mount}/run && echo earlier > {mount}/run/train.log "
              f"&& mount -o remount,ro {mount} && exec \"$@\"")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *command, *SYNTHETIC, f"output_dir={mount}/run"],
                            capture_output=True, text=True, timeout=300)
    assert_one_line(result.returncode, result.stdout, result.stderr, f"run folder {mount}/run cannot be written (Read-only file system)")
