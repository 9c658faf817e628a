"""``cifar-bench-train``: training images per second of the full engine against a textbook pipeline.

One process, one model architecture, the same images and the same precision for every row:

- ``textbook``: what most CIFAR tutorials do. A torchvision-style dataset (a PIL image per sample),
  per-sample torchvision transforms (random crop, flip, to-tensor, normalize) in DataLoader worker
  processes with pinned memory, an eager NCHW model under the same autocast, and ``loss.item()``
  every step for the running loss.
- ``engine``: ``*-train`` itself (Lightning trainer, ``ClassificationModule``, metrics, callbacks,
  the batch loader on the device) with the config's settings; each ``--variant`` adds overrides.
- ``bare loop``: the best variant's model and loader in a plain PyTorch loop, no Lightning: the
  difference to ``engine`` is the engine's own overhead.

Achieved FLOP/s = images/s x the model's forward+backward FLOPs per image (``model_stats``:
matmuls and convolutions, PyTorch's count), as a fraction of the GPU's peak dense bf16 rate.
``--profile`` adds the fraction of a step's wall time the GPU spends in kernels (torch.profiler).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from cifar_shared.bench import timer

# Peak dense (no sparsity) bf16 tensor-core rates from NVIDIA's data sheets, in TFLOP/s.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "A100": 312.0, "L40S": 362.1, "A10": 125.0, "RTX 4090": 165.2}

DEFAULT_VARIANTS = [  # the last one is profiled and run again without Lightning (the bare loop)
    "eager: channels_last=false compile=false trainer.deterministic=warn",
    "channels_last: channels_last=true compile=false trainer.deterministic=warn",
    "channels_last+compile: channels_last=true compile=true trainer.deterministic=warn",
    "channels_last+nondeterministic: channels_last=true compile=false trainer.deterministic=false trainer.benchmark=true",
    "channels_last+compile+nondeterministic: channels_last=true compile=true trainer.deterministic=false trainer.benchmark=true",
]


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


class StepClock:
    """Wall time of training steps ``warmup`` .. ``warmup + steps`` (GPU synchronized at both ends)."""

    def __init__(self, warmup: int, steps: int, device: torch.device):
        self.warmup, self.steps, self.device = warmup, steps, device
        self.images = 0
        self.t0 = self.t1 = None

    def tick(self, step: int, batch_size: int) -> bool:
        """Call before step ``step`` (0-based); returns False once the timed steps are done."""
        if step == self.warmup:
            self.t0 = timer.now(self.device)
        if step == self.warmup + self.steps:
            self.t1 = timer.now(self.device)
            return False
        if step >= self.warmup:
            self.images += batch_size
        return True

    @property
    def images_per_second(self) -> float:
        return self.images / (self.t1 - self.t0)


def engine_run(cfg, dm, warmup: int, steps: int, profile_steps: int = 0) -> dict:
    """``*-train``'s own trainer and module for ``warmup + steps`` steps (no validation, no test)."""
    import pytorch_lightning as pl
    from omegaconf import open_dict

    from cifar_shared.engine.callbacks import RunRecorder
    from cifar_shared.engine.guard import RunGuard
    from cifar_shared.engine.train import build_module, build_trainer, gpu_flag

    class Clock(pl.Callback):
        def __init__(self):
            self.clock, self.profile = None, None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.clock is None:
                self.clock = StepClock(warmup, steps, pl_module.device)
            step = trainer.global_step
            if profile_steps and step == warmup + steps:
                self.profile = KernelProfile(pl_module.device).__enter__()
            if profile_steps and step == warmup + steps + profile_steps:
                self.profile.__exit__(None, None, None)
                trainer.should_stop = True  # (a callback's return value is ignored; max_steps bounds the run too)
            elif not self.clock.tick(step, batch[1].shape[0]) and not profile_steps:
                trainer.should_stop = True

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm.channels_last = gpu_flag(cfg, "channels_last")
    module = build_module(cfg, dm.num_classes)
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp, open_dict(cfg):
        cfg.output_dir = cfg.checkpoint_dir = tmp
        cfg.logger = {}
        cfg.callbacks.checkpoint.monitor = None  # no validation here: keep last.ckpt only, quietly
        cfg.trainer.max_steps = warmup + steps + profile_steps + 1
        cfg.trainer.max_epochs = -1
        cfg.trainer.limit_val_batches = 0
        cfg.trainer.enable_progress_bar = False
        trainer = build_trainer(cfg, RunRecorder(Path(tmp) / "metrics.json", dm.classes), RunGuard(tmp, "bench", None), extra=[clock])
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.fit(module, datamodule=dm)
    result = {"images_per_second": clock.clock.images_per_second, "precision": str(trainer.precision)}
    if clock.profile is not None:
        result["gpu_busy"] = clock.profile.busy_fraction
    if torch.cuda.is_available():
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


class KernelProfile:
    """Fraction of wall time the GPU spends running kernels (one stream: kernels do not overlap)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.busy_fraction = None

    def __enter__(self):
        from torch.profiler import ProfilerActivity, profile

        timer.sync(self.device)
        self.prof = profile(activities=[ProfilerActivity.CUDA]).__enter__()
        self.t0 = timer.now(self.device)
        return self

    def __exit__(self, *exc):
        wall_us = (timer.now(self.device) - self.t0) * 1e6
        self.prof.__exit__(None, None, None)
        self.busy_fraction = busy_us(self.prof.events()) / wall_us if wall_us > 0 else None


def busy_us(events) -> float:
    """Microseconds in which at least one kernel or copy ran on the GPU (overlaps counted once)."""
    from torch.autograd import DeviceType

    spans = sorted((e.time_range.start, e.time_range.end) for e in events if e.device_type == DeviceType.CUDA)
    total, end = 0.0, float("-inf")
    for a, b in spans:
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def autocast_for(precision: str, device: torch.device):
    if "bf16" in precision:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if "16" in precision:
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def plain_loop(net, optimizer, batches, precision: str, device: torch.device, warmup: int, steps: int, item_every_step: bool) -> float:
    """The textbook training loop; returns images per second over the timed steps."""
    clock = StepClock(warmup, steps, device)
    net.train()
    step = 0
    while True:
        for x, y in batches():
            if not clock.tick(step, y.shape[0]):
                return clock.images_per_second
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast_for(precision, device):
                loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if item_every_step:
                loss.item()  # the tutorial's running-loss print
            step += 1


def textbook_run(cfg, dm, precision: str, device: torch.device, warmup: int, steps: int, workers: int) -> dict:
    from hydra.utils import instantiate

    from cifar_shared.bench.loader import textbook_loader

    torch.manual_seed(cfg.seed)
    net = instantiate(cfg.model, num_classes=dm.num_classes).to(device)
    optimizer = instantiate(cfg.optim)(params=net.parameters())
    loader = textbook_loader(dm.train_set, cfg.batch_size, dm.mean, dm.std, workers, pin_memory=device.type == "cuda", drop_last=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ips = plain_loop(net, optimizer, lambda: loader, precision, device, warmup, steps, item_every_step=True)
    out = {"images_per_second": ips, "precision": precision}
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def bare_run(cfg, dm, precision: str, device: torch.device, warmup: int, steps: int) -> dict:
    """The engine's model, compile and channels_last settings and batch loader, without Lightning."""
    from hydra.utils import instantiate

    from cifar_shared.data import BatchAugment, ShardedPermutation, TensorBatchLoader
    from cifar_shared.engine.train import gpu_flag

    torch.manual_seed(cfg.seed)
    channels_last = gpu_flag(cfg, "channels_last")
    net = instantiate(cfg.model, num_classes=dm.num_classes).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optim)(params=net.parameters())
    if gpu_flag(cfg, "compile"):
        net = torch.compile(net)
    loader = TensorBatchLoader(dm.train_set.images, dm.train_set.labels, cfg.batch_size, dm.mean, dm.std,
                               ShardedPermutation(len(dm.train_set), cfg.seed), BatchAugment(dm.policy), drop_last=True,
                               device=device, channels_last=channels_last)
    epoch = iter(range(10**6))

    def batches():
        loader.sampler.set_epoch(next(epoch))
        return loader

    ips = plain_loop(net, optimizer, batches, precision, device, warmup, steps, item_every_step=False)
    return {"images_per_second": ips, "precision": precision}


def main(argv: list[str] | None = None) -> None:
    from cifar_shared.engine.train import setup_logging

    parser = argparse.ArgumentParser(prog="cifar-bench-train", description=__doc__.splitlines()[0],
                                     epilog="Example: cifar-bench-train --package resnet data.root=../shared/data/cifar10-full batch_size=512")
    parser.add_argument("--package", default="resnet", help="an installed package (basiccnn, resnet, ...)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (compilation, cuDNN autotuning)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per row (warm-up + steps + profile: within one epoch)")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the textbook pipeline")
    parser.add_argument("--variant", action="append", default=None,
                        help="'name: key=value ...' overrides for one engine row (repeatable); default: eager, channels_last, +compile, +nondeterministic")
    parser.add_argument("--no-textbook", action="store_true", help="engine rows only (e.g. models that need another input size)")
    parser.add_argument("--profile", type=int, default=15, help="profiled steps after the last variant's timed ones (0: off)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("overrides", nargs="*", help="config overrides for every row, as for *-train")
    args = parser.parse_args(argv)
    setup_logging(Path(tempfile.mkdtemp(prefix="cifar-bench-")) / "bench.log")  # *-train's quiet console
    epoch_lines = logging.getLogger("cifar_shared.run")
    level = epoch_lines.level
    epoch_lines.setLevel(logging.WARNING)  # no epoch lines between the rows
    try:
        figures = run_bench(args)
    finally:
        epoch_lines.setLevel(level)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def run_bench(args) -> dict:
    from hydra.utils import instantiate

    from cifar_shared.data.datamodule import ImageDataModule
    from cifar_shared.engine.cli import compose_config
    from cifar_shared.engine.config import check_config
    from cifar_shared.engine.model_stats import model_stats
    from cifar_shared.engine.train import resolve_precision
    from cifar_shared.registry import installed_packages

    packages = installed_packages()
    if args.package not in packages:
        raise SystemExit(f"error: package {args.package!r} is not installed: choose one of {', '.join(sorted(packages))}")
    conf = packages[args.package]
    variants = [v.partition(":") for v in (args.variant or DEFAULT_VARIANTS)]
    base = compose_config(conf, ["logger=csv", *args.overrides])
    check_config(base)
    accelerator = str(base.trainer.accelerator)
    device = torch.device("cuda" if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda") else "cpu")
    precision = str(resolve_precision(base.trainer.precision, accelerator))
    dm = ImageDataModule(base.data, base.augment, base.batch_size, base.seed)
    per_epoch = len(dm.train_set) // base.batch_size
    if args.warmup + args.steps + args.profile >= per_epoch:  # an epoch end (last partial batch: a recompile; a checkpoint) would be timed
        raise SystemExit(f"error: --warmup {args.warmup} + --steps {args.steps} + --profile {args.profile} must stay below the "
                         f"{per_epoch} steps of one epoch ({len(dm.train_set)} images, batch {base.batch_size}): use fewer steps or more data")
    stats = model_stats(instantiate(base.model, num_classes=dm.num_classes), dm.image_shape)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    peak = peak_tflops(gpu) if device.type == "cuda" else None
    figures = {"package": args.package, "device": gpu, "torch": str(torch.__version__), "precision": precision,
               "batch_size": int(base.batch_size), "train_images": len(dm.train_set), "overrides": args.overrides,
               "train_gflops_per_image": stats.train_flops / 1e9, "peak_bf16_tflops": peak, "rows": {}}
    print(f"{args.package}: {stats.line()}")
    print(f"device {gpu}, torch {torch.__version__}, precision {precision}, batch {base.batch_size}, "
          f"{len(dm.train_set)} training images, {args.warmup} warm-up + {args.steps} timed steps per row")
    print(f"peak dense bf16: {f'{peak:.1f} TFLOP/s (NVIDIA data sheet)' if peak else 'unknown for this device'}")

    def report(name: str, row: dict, settings: str) -> None:
        tflops = row["images_per_second"] * stats.train_flops / 1e12
        row.update(achieved_tflops=tflops, settings=settings)
        if peak:
            row["fraction_of_peak"] = tflops / peak
        figures["rows"][name] = row
        extra = "".join([f", {row['fraction_of_peak']:.1%} of peak" if peak else "",
                         f", GPU busy {row['gpu_busy']:.0%} of a step" if row.get("gpu_busy") is not None else "",
                         f", peak memory {row['peak_memory_gib']:.2f} GiB" if "peak_memory_gib" in row else ""])
        print(f"  {name:<42} {row['images_per_second']:10,.0f} images/s  {tflops:7.1f} TFLOP/s{extra}   [{settings}]", flush=True)

    if not args.no_textbook:
        row = textbook_run(base, dm, precision, device, args.warmup, args.steps, args.workers)
        report("textbook", row, f"eager, NCHW, {args.workers} workers, loss.item() per step")
    last = None
    for i, (name, _, overrides) in enumerate(variants):
        cfg = compose_config(conf, ["logger=csv", *args.overrides, *overrides.split()])
        check_config(cfg)
        profile = args.profile if i == len(variants) - 1 and device.type == "cuda" else 0
        row = engine_run(cfg, dm, args.warmup, args.steps, profile)
        report(f"engine {name.strip()}", row, settings_line(cfg, row["precision"]))
        last = cfg
    bare = bare_run(last, dm, precision, device, args.warmup, args.steps)
    report(f"bare loop ({variants[-1][0].strip()})", bare, settings_line(last, precision))
    if "textbook" in figures["rows"]:
        tb = figures["rows"]["textbook"]["images_per_second"]
        best = max((r for n, r in figures["rows"].items() if n.startswith("engine")), key=lambda r: r["images_per_second"])
        figures["best_engine_over_textbook"] = best["images_per_second"] / tb
        print(f"best engine row / textbook: {figures['best_engine_over_textbook']:.2f}x")
    return figures


def settings_line(cfg, precision: str) -> str:
    from cifar_shared.engine.train import gpu_flag

    det = cfg.trainer.get("deterministic")
    return (f"precision {precision}, channels_last {gpu_flag(cfg, 'channels_last')}, compile {gpu_flag(cfg, 'compile')}, "
            f"deterministic {det}, batch {cfg.batch_size}")


if __name__ == "__main__":
    main()
