"""``cifar-eval`` (a run's model on any data source) and ``cifar-predict`` (class of image files).

Both feed the network exactly what training fed it: the run's own normalization and image size
(recorded in metrics.json), through the same batch loader; ``cifar-eval`` tests through the same
``Trainer.test`` as ``train()``, so on the run's own data it reproduces the run's test metrics.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path

from cifar_shared.errors import UserError
from cifar_shared.runs.folder import (
    Parser,
    RunFolder,
    apply_overrides,
    main_guard,
    output_path,
    write_text,
)


def eval_set(data_cfg):
    """The images to evaluate: the source's test split; a plain image folder (no train/ and test/
    subfolders) is evaluated whole."""
    from cifar_shared.data.sources import load_image_folder, load_source

    if data_cfg.get("name") == "folder":
        root = Path(str(data_cfg.root)).expanduser()
        if not ((root / "train").is_dir() and (root / "test").is_dir()):
            return load_image_folder(root, data_cfg.get("image_size", 32), data_cfg.get("cache_dir"))
    return load_source(data_cfg)[1]


def batches(images, mean, std, batch_size: int, device="cpu", channels_last: bool = False):
    """Unaugmented batches in order, normalized as the run's val/test loaders normalize them."""
    import torch

    from cifar_shared.data.loader import ShardedPermutation, TensorBatchLoader

    labels = torch.zeros(len(images), dtype=torch.int64)
    return TensorBatchLoader(images, labels, batch_size, mean, std, sampler=ShardedPermutation(len(images), 0, shuffle=False),
                             device=device, channels_last=channels_last)


def evaluate(run_dir: str | Path, overrides: list[str], checkpoint: str = "best", name: str | None = None) -> dict:
    """Test the run's checkpoint on the data ``overrides`` select; write eval-NAME.json, its
    confusion matrix PNG and per-image predictions CSV into the run folder; return the record."""
    import pytorch_lightning as pl
    import torch

    from cifar_shared.data.loader import ShardedPermutation, TensorBatchLoader
    from cifar_shared.engine.config import check_config
    from cifar_shared.engine.console import is_terminal, quiet_libraries
    from cifar_shared.engine.train import gpu_flag, resolve_determinism, resolve_precision

    quiet_libraries()
    run = RunFolder.open(run_dir)
    if name is not None:
        check_name(name)
    if not os.access(run.path, os.W_OK | os.X_OK):
        raise UserError(f"run folder {run.path} is read-only and cifar-eval writes eval-NAME.json into it: copy the folder somewhere writable")
    chosen = run.select_checkpoint(checkpoint)
    ckpt = chosen.path
    cfg = apply_overrides(run.cfg, overrides)
    check_config(cfg, writable=False)  # the recorded output_dir may be the original's, elsewhere: run.path was checked above
    data = eval_set(cfg.data)
    classes = run.classes() or data.classes
    if data.classes != classes:
        raise UserError(f"the data's classes ({', '.join(data.classes[:5])}, ...) are not the run's ({', '.join(classes[:5])}, ...): "
                        "give one subfolder per class, named as the run's classes")
    mean, std, shape = run.input_spec()
    if tuple(data.images.shape[1:]) != tuple(shape):
        raise UserError(f"the data's images are {tuple(data.images.shape[1:])}, the run trained on {tuple(shape)}: set data.image_size={shape[-1]}")
    module = run.build_module(ckpt, len(classes))
    probs: list[torch.Tensor] = []

    class Collect(pl.Callback):  # the test pass's own logits, so predictions and metrics agree
        def on_test_start(self, trainer, pl_module):
            self.hook = pl_module.register_forward_hook(lambda m, i, out: probs.append(out.detach().float().softmax(1).cpu()))

        def on_test_end(self, trainer, pl_module):
            self.hook.remove()

    tcfg = cfg.get("trainer") or {}
    accelerator = tcfg.get("accelerator", "auto")
    trainer = pl.Trainer(accelerator=accelerator, devices=1, precision=resolve_precision(tcfg.get("precision", "auto"), accelerator),
                         logger=False, enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=is_terminal(),
                         **resolve_determinism(tcfg), callbacks=[Collect()])
    loader = TensorBatchLoader(data.images, data.labels, cfg.batch_size, mean, std,
                               sampler=ShardedPermutation(len(data), cfg.seed, shuffle=False),
                               device=trainer.strategy.root_device, channels_last=gpu_flag(cfg, "channels_last"))
    results = trainer.test(module, dataloaders=loader, verbose=False)[0]
    test = {k.removeprefix("test/"): float(v) for k, v in sorted(results.items())}
    test["checkpoint"] = ckpt.name
    test["confusion_matrix"] = module.confusion_matrix

    name = name or f"{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    record = {"run": str(run.path), "package": run.package, "checkpoint": chosen.record(), "data": _plain(cfg.data),
              "images": len(data), "classes": classes, "test": test}
    out = run.path / f"eval-{name}.json"
    write_text(out, json.dumps(record, indent=2), "the run folder")
    p = torch.cat(probs)
    rows = io.StringIO()
    w = csv.writer(rows, lineterminator="\r\n")
    w.writerow(["index", "label", "class", "predicted", "predicted_class", "probability"])
    for i, (label, row) in enumerate(zip(data.labels.tolist(), p)):
        k = int(row.argmax())
        w.writerow([i, label, classes[label], k, classes[k], f"{float(row[k]):.6f}"])
    write_text(run.path / f"eval-{name}-predictions.csv", rows.getvalue(), "the run folder")
    from cifar_shared.runs.plots import confusion_figure

    confusion_figure(test["confusion_matrix"], classes).savefig(run.path / f"eval-{name}-confusion.png", dpi=120, bbox_inches="tight")
    record["files"] = [str(out), str(run.path / f"eval-{name}-predictions.csv"), str(run.path / f"eval-{name}-confusion.png")]
    return record


def check_name(name: str) -> None:
    """``--name`` names files inside the run folder: a plain name, never a path."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
        raise UserError(f"--name {name!r} is not a plain name: use letters, digits, '.', '_' and '-' "
                        "(it names eval-NAME.json in the run folder)")


def _plain(node):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def eval_main(argv: list[str] | None = None) -> None:
    parser = Parser(
        prog="cifar-eval", description="Evaluate a run's checkpoint on its test data or any other source (overrides like data=folder data.root=PATH).")
    parser.add_argument("run_dir", help="a training run's output_dir")
    parser.add_argument("overrides", nargs="*", help="config overrides on the run's config.yaml, e.g. data=folder data.root=PATH")
    parser.add_argument("--checkpoint", default="best", help="best (default; last.ckpt when there is none), last, or a .ckpt path")
    parser.add_argument("--name", help="names the outputs eval-NAME.json/-predictions.csv/-confusion.png (default: data source + time)")
    args = parser.parse_args(argv)

    def go():
        r = evaluate(args.run_dir, args.overrides, args.checkpoint, args.name)
        t = r["test"]
        print(f"{r['package']} {Path(r['checkpoint']['path']).name} on {r['data'].get('name')} ({r['images']} images): "
              f"acc {t['acc']:.4f}  f1_macro {t['f1_macro']:.4f}  loss {t['loss']:.4f}")
        for path in r["files"]:
            print(path)

    main_guard(go)


# --------------------------------------------------------------------------- predict

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_paths(paths: list[str]) -> list[Path]:
    """Files as given; folders searched recursively, in sorted order."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"{p} does not exist: give image files or folders of images")
    if not found:
        raise UserError(f"no images (.png, .jpg, ...) in {', '.join(paths)}")
    return found


UNREADABLE_FIX = "remove it, or pass --skip-unreadable"


def read_images(paths: list[Path], size: tuple[int, int], skip_unreadable: bool = False):
    """uint8 (N, 3, H, W) and the paths read, decoded by the decoder folder data uses for training
    (``read_image``: real pixel range, resized bilinearly). An unreadable file (corrupt, not an
    image, 32-bit pixels, a decompression bomb) is one line, or with ``skip_unreadable`` left out
    and named on stderr."""
    import numpy as np
    import torch
    from PIL import Image

    from cifar_shared.data.sources import read_image

    out = np.empty((len(paths), size[0], size[1], 3), dtype=np.uint8)
    kept: list[Path] = []
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)  # > 89 MP: not a photo to classify at 32 px
                out[len(kept)] = read_image(path, size, fix=UNREADABLE_FIX)
        except UserError as e:
            if not skip_unreadable:
                raise
            why = str(e).removeprefix(f"cannot read image {path}").rsplit(UNREADABLE_FIX, 1)[0].rstrip(" ,;:or").lstrip(" :")
            why = why[1:-1] if why.startswith("(") and why.endswith(")") else why  # "(UnidentifiedImageError)"
            print(f"skipped {path}: unreadable ({why})", file=sys.stderr)
            continue
        kept.append(path)
    if not kept:
        raise UserError(f"none of the {len(paths)} images is readable: pass image files (.png, .jpg, ...)")
    return torch.from_numpy(out[: len(kept)]).permute(0, 3, 1, 2).contiguous(), kept


def predict(run_dir: str | Path, paths: list[str], top_k: int = 3, out: str | Path | None = None,
            checkpoint: str = "best", batch_size: int = 256, skip_unreadable: bool = False) -> tuple[Path, list[dict]]:
    import torch

    run = RunFolder.open(run_dir)
    out = output_path(out, "--out", "predictions.csv", (run.path,)) if out else run.path / f"predict-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    ckpt = run.checkpoint(checkpoint)
    classes = run.classes()
    if not classes:
        raise UserError(f"{run.path}/metrics.json names no classes: the run folder is incomplete")
    if top_k < 1:
        raise UserError(f"--top-k {top_k} is invalid: it must be at least 1")
    files = image_paths(paths)
    mean, std, shape = run.input_spec()
    images, files = read_images(files, tuple(shape[1:]), skip_unreadable)
    module = run.build_module(ckpt, len(classes))
    k = min(top_k, len(classes))
    rows = []
    with torch.no_grad():
        probs = torch.cat([module(x).float().softmax(1) for x, _ in batches(images, mean, std, batch_size)])
    values, indices = probs.topk(k, dim=1)
    for path, v, i in zip(files, values.tolist(), indices.tolist()):
        rows.append({"file": str(path), **{f"top{j + 1}": classes[c] for j, c in enumerate(i)},
                     **{f"p{j + 1}": p for j, p in enumerate(v)}})
    text = io.StringIO()
    header = ["file", *(x for j in range(k) for x in (f"top{j + 1}", f"p{j + 1}"))]
    w = csv.DictWriter(text, fieldnames=header, lineterminator="\r\n")
    w.writeheader()
    w.writerows({**r, **{f"p{j + 1}": f"{r[f'p{j + 1}']:.6f}" for j in range(k)}} for r in rows)
    write_text(out, text.getvalue())
    return out, rows


def predict_main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="cifar-predict", description="Classify image files (or folders of them) with a run's checkpoint.")
    parser.add_argument("run_dir", help="a training run's output_dir")
    parser.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    parser.add_argument("--top-k", type=int, default=3, help="classes per image in the CSV (default 3)")
    parser.add_argument("--out", help="CSV path (default RUN_DIR/predict-TIME.csv)")
    parser.add_argument("--checkpoint", default="best", help="best (default; last.ckpt when there is none), last, or a .ckpt path")
    parser.add_argument("--show", type=int, default=10, help="rows printed on the console (default 10)")
    parser.add_argument("--skip-unreadable", action="store_true", help="leave out images that cannot be read (named on stderr) instead of stopping")
    args = parser.parse_args(argv)

    def go():
        out, rows = predict(args.run_dir, args.paths, args.top_k, args.out, args.checkpoint, skip_unreadable=args.skip_unreadable)
        k = min(args.top_k, sum(1 for key in rows[0] if key.startswith("top")))
        width = min(60, max(len(r["file"]) for r in rows[: args.show]))
        for r in rows[: args.show]:
            guesses = "  ".join(f"{r[f'top{j + 1}']} {r[f'p{j + 1}']:.3f}" for j in range(k))
            print(f"{r['file'][-width:]:<{width}}  {guesses}")
        if len(rows) > args.show:
            print(f"... {len(rows) - args.show} more")
        print(f"{len(rows)} images -> {out}")

    main_guard(go)
