"""Run folders you can trust: the run tools and resume on folders someone else made or changed.

One real basiccnn run (synthetic data, 3 epochs, the 3 best checkpoints kept) through the real
config and ``train()``; each test works on its own copy of it, made as a user would (cp -r).
"""

import json
import os
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from cifar_basiccnn.cli import train_main
from cifar_shared import UserError
from cifar_shared.engine.train import train
from cifar_shared.runs.evaluate import eval_main, predict_main
from cifar_shared.runs.export import export_main
from cifar_shared.runs.folder import load_checkpoint
from cifar_shared.runs.report import report_main

pytestmark = pytest.mark.slow  # a training run and the run tools on it

TOP3 = ["data.test_size=120", "epochs=3", "callbacks.checkpoint.save_top_k=3"]


@pytest.fixture(scope="module")
def top3_run(tmp_path_factory, small_config) -> Path:
    out = tmp_path_factory.mktemp("top3")
    train(small_config(out, *TOP3))
    return out


def copy_run(run: Path, to: Path, own_paths: bool = True) -> Path:
    """``cp -r``; ``own_paths``: config.yaml rewritten as if the run had trained there."""
    shutil.copytree(run, to)
    if own_paths:
        (to / "config.yaml").write_text((to / "config.yaml").read_text().replace(str(run), str(to)))
    return to


def one_line_error(result, *needles) -> str:
    code, out, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out + err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def ok(result) -> str:
    code, out, err = result
    assert code == 0, err[-3000:]
    return out


class Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling creates the marker file: any code could run there
        return (open, (self.marker, "w"))


def write_png(path: Path, seed: int) -> Path:
    from PIL import Image

    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def decompression_bomb(path: Path, side: int = 20_000) -> Path:
    """A PNG whose header claims side x side pixels (400 MP): a few bytes on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def val_acc_by_epoch(run: Path) -> dict[int, float]:
    return {int(e): float(a) for e, a in re.findall(r"epoch (\d+)/\d+ .*?\| val loss [\d.]+ acc ([\d.]+)", (run / "train.log").read_text())}


def test_best_checkpoint_names_count_epochs_like_the_log(top3_run):
    logged = val_acc_by_epoch(top3_run)
    names = sorted(p.name for p in (top3_run / "checkpoints").glob("best-*.ckpt"))
    assert len(names) == 3 and sorted(logged) == [1, 2, 3]
    for name in names:
        epoch, acc = re.fullmatch(r"best-epoch(\d{3})-acc([\d.]+)\.ckpt", name).groups()
        assert f"{logged[int(epoch)]:.4f}" == acc  # the log's epoch N is the file's epochN
        assert load_checkpoint(top3_run / "checkpoints" / name, "")["epoch"] + 1 == int(epoch)


def test_eval_takes_the_best_recorded_score_not_the_latest_name(top3_run, tmp_path, in_process):
    run = copy_run(top3_run, tmp_path / "run")
    ok(in_process(eval_main, run, "--name", "natural"))
    record = json.loads((run / "eval-natural.json").read_text())["checkpoint"]
    metrics = json.loads((run / "metrics.json").read_text())
    best = max(row["val/acc"] for row in metrics["history"])
    assert Path(record["path"]).name == metrics["test"]["checkpoint"]  # the one training tested
    assert record["val/acc"] == pytest.approx(best) and metrics["history"][record["epoch"] - 1]["val/acc"] == pytest.approx(best)

    # make epoch 1 the best on record: its ModelCheckpoint state says so, the name still says otherwise
    first = sorted((run / "checkpoints").glob("best-epoch001-*.ckpt"))[0]
    ckpt = torch.load(first, weights_only=True)
    key = next(k for k in ckpt["callbacks"] if k.startswith("ModelCheckpoint"))
    ckpt["callbacks"][key]["current_score"] = torch.tensor(1.0)
    torch.save(ckpt, first)
    out = ok(in_process(eval_main, run, "--name", "rescored"))
    record = json.loads((run / "eval-rescored.json").read_text())["checkpoint"]
    assert record == {"path": str(first), "epoch": 1, "val/acc": 1.0} and first.name in out


def test_a_copied_run_folder_reads_its_own_checkpoints(top3_run, tmp_path, in_process):
    original = copy_run(top3_run, tmp_path / "original")
    copy = copy_run(original, tmp_path / "copy", own_paths=False)  # config.yaml still names the original's paths
    for ckpt in sorted((original / "checkpoints").glob("*.ckpt")):
        if "epoch001" in ckpt.name:
            ckpt.unlink()
        else:
            ckpt.write_bytes(b"overwritten")
    ok(in_process(eval_main, copy, "--name", "copy"))
    record = json.loads((copy / "eval-copy.json").read_text())
    assert Path(record["checkpoint"]["path"]).parent == copy / "checkpoints"
    assert record["test"] == json.loads((copy / "metrics.json").read_text())["test"]  # the run's own numbers, from the copy


def test_crafted_checkpoints_run_nothing_in_resume_or_any_tool(top3_run, tmp_path, in_process):
    run = copy_run(top3_run, tmp_path / "run")
    marker = tmp_path / "marker"
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        torch.save({"state_dict": {"net.w": Payload(marker)}, "epoch": 0}, ckpt)
    torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)  # the payload is live
    assert marker.exists()
    marker.unlink()
    image = write_png(tmp_path / "a.png", 0)
    records = {name: (run / name).read_bytes() for name in ("config.yaml", "metrics.json", "model_info.txt")}

    resume = [*TOP3[:-1], "data=synthetic", "data.train_size=400", "batch_size=64", "trainer.enable_progress_bar=false", f"output_dir={run}"]
    line = one_line_error(in_process(train_main, *resume), "last.ckpt refers to io.open, which loading would call")
    assert line in (run / "train.log").read_text()  # the run's log keeps the line too
    one_line_error(in_process(eval_main, run), "refers to io.open")
    one_line_error(in_process(predict_main, run, image, "--out", tmp_path / "p.csv"), "refers to io.open")
    one_line_error(in_process(export_main, run, "--format", "torchscript", "--out", tmp_path / "m.pt"), "refers to io.open")
    one_line_error(in_process(eval_main, run, "--checkpoint", "last"), "last.ckpt refers to io.open")
    assert not marker.exists()
    assert {name: (run / name).read_bytes() for name in records} == records
    assert not (tmp_path / "p.csv").exists() and not list(tmp_path.glob("m.pt*"))


@pytest.mark.parametrize("target", ["torch.load", "os.system"])
def test_a_foreign_config_target_is_refused_naming_the_key(top3_run, tmp_path, in_process, target):
    """The issue's payload: torch.load(weights_only=False) of an io.BytesIO holding a crafted
    pickle, nested under model; and os.system (which this Hydra also blocks by itself)."""
    import io

    from hydra.utils import instantiate

    run = copy_run(top3_run, tmp_path / "run")
    marker = tmp_path / "marker"
    if target == "torch.load":
        blob = io.BytesIO()
        torch.save(Payload(marker), blob)
        payload = {"_target_": "torch.load", "weights_only": False, "f": {"_target_": "io.BytesIO", "initial_bytes": blob.getvalue()}}
    else:
        payload = {"_target_": "os.system", "command": f"touch {marker}"}
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.model.payload = payload
    OmegaConf.save(cfg, run / "config.yaml")
    if target == "torch.load":
        instantiate(OmegaConf.load(run / "config.yaml").model.payload)  # live: Hydra runs it
        assert marker.exists()
        marker.unlink()
    one_line_error(in_process(eval_main, run, "--name", "x"), f"{run / 'config.yaml'}: model.payload._target_={target} is a nested target",
                   "refusing to instantiate")
    assert not marker.exists() and not list(run.glob("eval-*"))


def test_predict_skips_unreadable_images_only_when_asked(top3_run, tmp_path, in_process):
    images = tmp_path / "images"
    images.mkdir()
    good = [write_png(images / f"{name}.png", seed) for seed, name in enumerate(("a", "b", "c"))]
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    decompression_bomb(images / "bomb.png")
    one_line_error(in_process(predict_main, top3_run, images, "--out", tmp_path / "p.csv"), "bomb.png", "decompression-bomb", "--skip-unreadable")
    assert not (tmp_path / "p.csv").exists()
    code, out, err = in_process(predict_main, top3_run, images, "--out", tmp_path / "p.csv", "--skip-unreadable")
    assert code == 0, err
    skipped = sorted(err.strip().splitlines())
    assert len(skipped) == 2 and skipped[1] == f"skipped {images / 'corrupt.png'}: unreadable (UnidentifiedImageError)"
    assert skipped[0].startswith(f"skipped {images / 'bomb.png'}: unreadable (it is larger than PIL's decompression-bomb limit")
    rows = (tmp_path / "p.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == [str(p) for p in good] and "3 images ->" in out


def test_out_name_and_format_mistakes_are_one_line_and_overwrite_nothing(top3_run, tmp_path, in_process):
    run = copy_run(top3_run, tmp_path / "run")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    image = write_png(tmp_path / "a.png", 0)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for name in ("../../x", "/x/y", "a/b", ".."):
        one_line_error(in_process(eval_main, run, "--name", name), "is not a plain name")
    cases = [
        (predict_main, [run, image, "--out", run / "metrics.json"], "own record (metrics.json)"),
        (predict_main, [run, image, "--out", tmp_path], "is a folder"),
        (predict_main, [run, image, "--out", blocker / "p.csv"], "is not writable"),
        (export_main, [run, "--format", "bogus"], "invalid choice: 'bogus'"),
        (export_main, [run], "the following arguments are required: --format"),
        (export_main, [run, "--format", "torchscript", "--out", run / "metrics"], "own record (metrics.json)"),  # its sidecar
        (export_main, [run, "--format", "torchscript", "--out", run / "checkpoints" / "last.ckpt"], "checkpoint"),
        (export_main, [run, "--format", "torchscript", "--out", tmp_path], "is a folder"),
        (report_main, [run, "--out", run / "train.log"], "own record (train.log)"),
        (report_main, [run, "--out", run / "config.yaml"], "own record (config.yaml)"),
        (report_main, [run, "--out", tmp_path], "is a folder"),
    ]
    for main, argv, needle in cases:
        one_line_error(in_process(main, *argv), needle)
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        read_only = tmp_path / "ro"
        read_only.mkdir(mode=0o555)
        one_line_error(in_process(predict_main, run, image, "--out", read_only / "p.csv"), "is not writable")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not list(tmp_path.parent.glob("x*")) and not list(tmp_path.glob("*.csv"))


def test_export_sidecar_paths_are_absolute_and_report_reads_flops(top3_run, tmp_path, in_process, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = copy_run(top3_run, tmp_path / "run")
    ok(in_process(export_main, "run", "--format", "torchscript", "--out", "exported/m.pt"))
    info = json.loads((tmp_path / "exported" / "m.pt.json").read_text())
    assert (info["run"], info["file"]) == (str(run), str(tmp_path / "exported" / "m.pt"))
    assert Path(info["checkpoint"]["path"]).parent == run / "checkpoints" and info["checkpoint"]["epoch"] >= 1
    out = ok(in_process(report_main, "run", "--out", "r.md"))
    flops = re.search(r"FLOPs per image: forward ([\d.]+ M)", (run / "model_info.txt").read_text()).group(1)
    assert f"| {flops} |" in out


def test_a_truncated_last_checkpoint_is_one_line_on_the_console_and_in_train_log(top3_run, tmp_path, small_config):
    run = copy_run(top3_run, tmp_path / "run")
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(UserError, match="last.ckpt is unreadable") as e:
        train(small_config(run, *TOP3))
    assert (run / "train.log").read_text().rstrip().endswith(f"error: {e.value}")


def test_resume_restores_the_checkpoint_callback_state(tmp_path, small_config):
    """The renamed epochs come from a ModelCheckpoint subclass whose state keeps ModelCheckpoint's
    key: resuming restores which checkpoint is best (else epoch 1's would stay beside the new one)."""
    run = tmp_path / "run"
    train(small_config(run, "epochs=1", "data.train_size=200", "data.test_size=60"))
    train(small_config(run, "epochs=3", "data.train_size=200", "data.test_size=60"))
    logged = val_acc_by_epoch(run)
    best_epoch = min(e for e, a in logged.items() if a == max(logged.values()))
    assert [p.name[:13] for p in (run / "checkpoints").glob("best-*.ckpt")] == [f"best-epoch{best_epoch:03d}"]
