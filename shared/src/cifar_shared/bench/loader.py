"""``cifar-bench-loader``: training-batch throughput of the batch loader vs a textbook pipeline.

Both make the same batches (random crop with 4 px padding, horizontal flip, normalize, batch 128)
from the same images in the same run. The textbook pipeline is what most CIFAR tutorials do:
``torchvision.datasets.CIFAR10.__getitem__`` (a PIL image per sample), PIL transforms, and a
DataLoader with worker processes.

``--policies`` adds the shared augment configs (``augment=crop_flip``, ``moco``,
``flip_rotate_jitter``, ``randaug``), each through the pipeline its config names (batched
``tensor`` or ``per_sample`` in DataLoader workers), measured in the same run.
"""

from __future__ import annotations

import argparse
import platform

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cifar_shared.bench import timer
from cifar_shared.data import AugmentPolicy, BatchAugment, ShardedPermutation, TensorBatchLoader
from cifar_shared.data.real_sets import real_subset_path
from cifar_shared.data.sources import ImageSet, load_cifar, make_synthetic

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # conf/data/cifar10.yaml's


class TextbookCIFAR(Dataset):
    """Mirrors ``torchvision.datasets.CIFAR10``: HWC uint8 array, PIL image per item, transform."""

    def __init__(self, data: ImageSet, transform):
        self.data = data.images.permute(0, 2, 3, 1).numpy()
        self.targets = data.labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        img = Image.fromarray(self.data[index])
        return self.transform(img), self.targets[index]


def textbook_loader(data: ImageSet, batch_size: int, mean, std, workers: int, pin_memory: bool = False,
                    drop_last: bool = False) -> DataLoader:
    """The tutorial pipeline: PIL crop (4 px padding) + flip, to-tensor, normalize, in workers."""
    import torchvision.transforms as T

    size = data.images.shape[-1]
    transform = T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    return DataLoader(TextbookCIFAR(data, transform), batch_size=batch_size, shuffle=True, drop_last=drop_last,
                      num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0)


def images_per_second(loader, epochs: int) -> float:
    """Wall time to draw every training batch of ``epochs`` epochs (after one warm-up epoch)."""
    for _ in loader:
        pass
    count, start = 0, timer.now()
    for epoch in range(epochs):
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch + 1)
        for x, _ in loader:
            count += x.shape[0]
    return count / (timer.now() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="CIFAR-10 folder (default: the real subset beside the repo, else synthetic)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the textbook pipeline")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--policies", action="store_true", help="also time the shared augment policies (crop_flip, moco, flip_rotate_jitter, randaug)")
    args = parser.parse_args(argv)

    root = args.root or real_subset_path()
    try:
        data, _ = load_cifar("cifar10", root, download=False)
        source = f"CIFAR-10 at {root}"
    except Exception:
        data, _ = make_synthetic(10, 5000, 10, 32, seed=0)
        source = "synthetic (no CIFAR-10 found)"

    fast = TensorBatchLoader(
        data.images, data.labels, args.batch_size, MEAN, STD, ShardedPermutation(len(data), seed=0),
        BatchAugment(AugmentPolicy(crop_padding=4, flip=True)), device=args.device,
    )
    textbook = textbook_loader(data, args.batch_size, MEAN, STD, args.workers)
    fast_ips = images_per_second(fast, args.epochs)
    slow_ips = images_per_second(textbook, args.epochs)
    print(f"data: {source}, {len(data)} images, batch {args.batch_size}, {args.epochs} epochs after 1 warm-up")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, device {args.device}")
    print(f"batch loader (tensor ops on {args.device}):      {fast_ips:12,.0f} images/s")
    print(f"textbook (PIL + DataLoader, {args.workers} workers): {slow_ips:12,.0f} images/s")
    print(f"ratio: {fast_ips / slow_ips:.1f}x")
    if args.policies:
        bench_policies(data, args)


POLICIES = ("crop_flip", "moco", "flip_rotate_jitter", "randaug")


def policy_loader(name: str, data: ImageSet, args):
    """The loader ``augment=<name>`` trains with: batched, or per image in DataLoader workers."""
    from importlib import resources

    from omegaconf import OmegaConf

    from cifar_shared.data.per_sample import _Torchvision, per_sample_loader, per_sample_transform

    cfg = OmegaConf.to_container(OmegaConf.load(resources.files("cifar_shared.conf") / "augment" / f"{name}.yaml"))
    policy = AugmentPolicy.from_config(cfg)
    sampler = ShardedPermutation(len(data), seed=0)
    if cfg.get("pipeline", "tensor") == "tensor":
        loader = TensorBatchLoader(data.images, data.labels, args.batch_size, MEAN, STD, sampler, BatchAugment(policy), device=args.device)
        return loader, f"tensor, batched on {args.device}"
    transform = per_sample_transform(policy, MEAN, STD, data.images.shape[-1])
    library = "torchvision v2" if isinstance(transform, _Torchvision) else "albumentations"
    loader = per_sample_loader(data.images, data.labels, transform, args.batch_size, sampler, num_workers=args.workers)
    return loader, f"per_sample: {library} per image, {args.workers} DataLoader workers"


def bench_policies(data: ImageSet, args) -> None:
    print(f"augment policies (same images, batch {args.batch_size}, {args.epochs} epochs after 1 warm-up, one run):")
    results = {}
    for name in POLICIES:
        loader, how = policy_loader(name, data, args)
        results[name] = images_per_second(loader, args.epochs)
        print(f"  augment={name:<20} {results[name]:12,.0f} images/s  ({how})")
    base = results["crop_flip"]
    print("  relative to crop_flip: " + ", ".join(f"{n} {results[n] / base:.2f}x" for n in POLICIES[1:]))


if __name__ == "__main__":
    main()
