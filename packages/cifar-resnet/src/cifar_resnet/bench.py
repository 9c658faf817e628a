"""``resnet-bench``: training-batch throughput of the two augmentation paths, side by side.

Both paths get the same images, normalization and policy (the package's default,
flip + affine + cutout): ``tensor`` augments whole batches with tensor ops on the training device,
``per_sample`` runs albumentations one image at a time in DataLoader workers. Only batch making is
timed (no model), up to the batch being on the training device.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import torch

from cifar_shared.bench import timer
from cifar_shared.data import AugmentPolicy, BatchAugment, ShardedPermutation, TensorBatchLoader
from cifar_shared.data.per_sample import albumentations_transform, per_sample_loader
from cifar_shared.data.real_sets import real_subset_path
from cifar_shared.data.sources import ImageSet, load_cifar, make_synthetic
from cifar_shared.data.stats import channel_stats
from cifar_shared.engine.cli import compose_config


def load_images(root: Path) -> tuple[ImageSet, str]:
    """The real CIFAR-10 training images under ``root`` when there, else synthetic ones."""
    if (root / "cifar-10-batches-py" / "data_batch_1").exists():
        return load_cifar("cifar10", root, download=False)[0], f"CIFAR-10 at {root}"
    return make_synthetic(10, 5000, 1, 32, seed=0)[0], f"synthetic (no CIFAR-10 at {root})"


def images_per_second(loader: Iterable, batches: int, device: torch.device, warmup: int = 2) -> float:
    """Batches per second times batch size, after ``warmup`` batches (worker start-up excluded)."""
    def endless():
        while True:
            yield from loader

    stream, seen = endless(), 0
    for _ in range(warmup):
        next(stream)
    with timer.Stopwatch(device) as watch:
        for _ in range(batches):
            x, y = next(stream)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            seen += len(y)
    return seen / watch.seconds


def main(argv: list[str] | None = None) -> None:
    measure(argv)


def measure(argv: list[str] | None = None) -> dict[str, float]:
    """Parse ``argv``, time both paths, print the table; return images/s per path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].strip("`: "))
    parser.add_argument("--data-root", type=Path, default=None, help="CIFAR-10 folder (default: the real subset beside the repo); synthetic images when absent")
    parser.add_argument("--augment", default="flip_affine_cutout", help="augment config (default: the resnet policy)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=200, help="timed batches per path")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers of the per-sample path")
    args = parser.parse_args(argv)

    data, source = load_images(args.data_root or real_subset_path())
    cfg = compose_config("cifar_resnet.conf", ["data=cifar10", f"augment={args.augment}"])
    policy = AugmentPolicy.from_config(cfg.augment)
    mean, std = (cfg.data.mean, cfg.data.std) if source.startswith("CIFAR") else channel_stats(data.images)
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def sampler() -> ShardedPermutation:
        return ShardedPermutation(len(data), seed=0)

    tensor = TensorBatchLoader(data.images, data.labels, args.batch_size, mean, std, sampler(), BatchAugment(policy), device=device)
    per_sample = per_sample_loader(
        data.images, data.labels, albumentations_transform(policy, mean, std, data.images.shape[-1], seed=0),
        args.batch_size, sampler(), num_workers=args.num_workers,
    )
    print(f"{source}: {len(data):,} images | augment={args.augment} | batch {args.batch_size} | "
          f"{args.batches} timed batches | device {device} | {torch.get_num_threads()} torch threads")
    rates = {
        "tensor": images_per_second(tensor, args.batches, device),
        "per_sample": images_per_second(per_sample, args.batches, device),
    }
    labels = {
        "tensor": "TensorBatchLoader + BatchAugment",
        "per_sample": f"DataLoader ({args.num_workers} workers) + albumentations",
    }
    for name, rate in rates.items():
        print(f"  {name:<11} {labels[name]:<45} {rate:>10,.0f} img/s")
    print(f"  tensor / per_sample: {rates['tensor'] / rates['per_sample']:.2f}x")
    return rates


if __name__ == "__main__":
    main()
