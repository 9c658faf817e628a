"""Dataset commands: ``cifar-stats`` (per-channel mean/std) and ``cifar-export`` (PNG folders + CSV)."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from cifar_shared.data.sources import ImageSet, load_source
from cifar_shared.data.stats import channel_stats
from cifar_shared.errors import UserError


def _source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="cifar10", choices=["cifar10", "cifar100", "folder", "synthetic"], help="data source")
    parser.add_argument("--root", default="data", help="dataset folder (or .tar.gz for CIFAR)")
    parser.add_argument("--download", action="store_true", help="download CIFAR through torchvision when missing")


def _load(args) -> tuple[ImageSet, ImageSet]:
    return load_source({"name": args.data, "root": args.root, "download": args.download})


def _run(fn) -> None:
    try:
        fn()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def stats_overrides(mean, std) -> str:
    """``data.mean=[...] data.std=[...]``: pasted after a train command, it sets the normalization."""
    return " ".join(f"data.{key}=[{','.join(f'{v:.4f}' for v in values)}]" for key, values in (("mean", mean), ("std", std)))


def stats_main(argv: list[str] | None = None) -> None:
    """Print the training split's per-channel mean and std as overrides, ready to paste after a train command."""
    parser = argparse.ArgumentParser(description="Per-channel mean/std of a data source's training split.")
    _source_args(parser)
    args = parser.parse_args(argv)

    def go():
        train, _ = _load(args)
        mean, std = channel_stats(train.images)
        print(f"# {args.data} train split, {len(train)} images; as overrides of any *-train command:")
        print(stats_overrides(mean, std))

    _run(go)


def export_images(data: ImageSet, out: Path, split: str) -> Path:
    """Write ``out/split/<class>/<index>.png`` and ``out/split/labels.csv`` (file, label, class)."""
    from PIL import Image

    folder = out / split
    for name in data.classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
    rows = []
    hwc = data.images.permute(0, 2, 3, 1).numpy()
    for i, (image, label) in enumerate(zip(hwc, data.labels.tolist())):
        rel = f"{data.classes[label]}/{i:05d}.png"
        Image.fromarray(image).save(folder / rel)
        rows.append((rel, label, data.classes[label]))
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "class"])
        writer.writerows(rows)
    return folder


def export_splits(splits: tuple[ImageSet, ImageSet], out: Path) -> list[str]:
    """The training and test split as ``out/train`` and ``out/test`` PNG folders, written once: a
    split whose labels.csv already lists as many images is kept (a rerun or resume costs nothing)."""
    lines = []
    for split, data in zip(("train", "test"), splits):
        done = out / split / "labels.csv"
        if done.is_file() and sum(1 for _ in done.open()) - 1 == len(data):
            lines.append(f"{out / split}: {len(data)} images, already exported")
            continue
        try:
            lines.append(f"{export_images(data, out, split)}: {len(data)} images exported")
        except OSError as e:
            raise UserError(f"cannot export the {split} images to {out / split} ({e.strerror or type(e).__name__}): "
                            "set export_dir (processed_dir) to a writable folder") from None
    return lines


def export_main(argv: list[str] | None = None) -> None:
    """Export a source to PNG class folders + labels.csv (readable back with data=folder)."""
    parser = argparse.ArgumentParser(description="Export a data source as PNG files in class folders plus a labels CSV.")
    _source_args(parser)
    parser.add_argument("--out", required=True, help="output folder; gets train/ and test/")
    parser.add_argument("--split", default="all", choices=["train", "test", "all"])
    args = parser.parse_args(argv)

    def go():
        train, test = _load(args)
        for split, data in (("train", train), ("test", test)):
            if args.split in (split, "all"):
                print(f"{export_images(data, Path(args.out), split)}: {len(data)} images")

    _run(go)
