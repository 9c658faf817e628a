"""``debugcnn-check``: the set-up checks to run on a config before a long training run.

Data (loads, one batch: shapes, dtype, value and label range), model (builds, forward shape),
one training step (finite loss, every parameter gets a non-zero finite gradient), and a few steps
on that one batch (the loss must fall). Prints a pass/fail table; exit 0 when all pass, else 2
with one line on stderr naming the first failure. Nothing is written anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from cifar_shared import UserError

LEARN_STEPS = 5  # Adam steps on one batch; the loss must end below where it started
VALUE_LIMIT = 20.0  # normalized inputs beyond this mean the normalization is wrong


class CheckFailed(Exception):
    pass


def run_checks(cfg: DictConfig, print_table: Callable[[str], None] = print) -> list[tuple[str, bool, str]]:
    """Run every check in order; a check whose inputs failed is reported as skipped."""
    import pytorch_lightning as pl

    from cifar_shared.data.datamodule import ImageDataModule
    from cifar_shared.engine.train import gpu_flag

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    state: dict = {}
    results: list[tuple[str, bool | None, str]] = []

    def data():
        state["dm"] = dm = ImageDataModule(cfg.data, cfg.augment, cfg.batch_size, cfg.seed, gpu_flag(cfg, "channels_last"))
        return f"{len(dm.train_set)} train / {len(dm.val_set)} val / {len(dm.test_set)} test images, {dm.num_classes} classes, {'x'.join(map(str, dm.image_shape))}"

    def model():
        dm = state["dm"]
        try:
            net = instantiate(cfg.model, num_classes=dm.num_classes)
        except Exception as e:  # Hydra wraps what the constructor raised
            raise CheckFailed(str(e.__cause__ or e).splitlines()[0]) from None
        net.eval()
        with torch.no_grad():
            out = net(torch.zeros(2, *dm.image_shape))
        if tuple(out.shape) != (2, dm.num_classes):
            raise CheckFailed(f"a batch of 2 gives output {tuple(out.shape)}, expected (2, {dm.num_classes})")
        state["net"] = net
        return f"{type(net).__name__}, {sum(p.numel() for p in net.parameters()):,} parameters, (2, {dm.num_classes}) out"

    def batch():
        dm = state["dm"]
        x, y = next(iter(dm.train_dataloader()))
        c, h, w = dm.image_shape
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w) or x.dtype != torch.float32:
            raise CheckFailed(f"images are {x.dtype} {tuple(x.shape)}, expected float32 (B, {c}, {h}, {w})")
        if y.dtype != torch.int64 or y.shape != (x.shape[0],):
            raise CheckFailed(f"labels are {y.dtype} {tuple(y.shape)}, expected int64 ({x.shape[0]},)")
        if not torch.isfinite(x).all():
            raise CheckFailed("the batch holds non-finite pixel values: check data.mean/data.std")
        lo, hi = float(x.min()), float(x.max())
        if max(abs(lo), abs(hi)) > VALUE_LIMIT:
            raise CheckFailed(f"pixel values span [{lo:.1f}, {hi:.1f}] after normalization: check data.mean/data.std")
        if int(y.min()) < 0 or int(y.max()) >= dm.num_classes:
            raise CheckFailed(f"labels span {int(y.min())}..{int(y.max())}, outside 0..{dm.num_classes - 1}")
        state["batch"] = (x, y)
        return f"{tuple(x.shape)} float32 in [{lo:.2f}, {hi:.2f}], labels {int(y.min())}..{int(y.max())} ({y.unique().numel()} classes)"

    def step():
        net, (x, y) = state["net"], state["batch"]
        net.train()
        optimizer = instantiate(cfg.optim)(params=net.parameters())
        optimizer.zero_grad()
        loss = F.cross_entropy(net(x), y)
        if not torch.isfinite(loss):
            raise CheckFailed(f"the loss of one batch is {loss.item()}")
        loss.backward()
        for name, p in net.named_parameters():
            if not p.requires_grad:
                continue
            if p.grad is None:
                raise CheckFailed(f"{name} gets no gradient: it is not used in forward (or is detached)")
            norm = float(torch.linalg.vector_norm(p.grad))
            if not math.isfinite(norm):
                raise CheckFailed(f"{name} gets a non-finite gradient ({norm})")
            if norm == 0.0:
                raise CheckFailed(f"{name} gets an all-zero gradient: nothing after it depends on it")
        optimizer.step()
        state["optimizer"], state["loss0"] = optimizer, loss.item()
        return f"loss {loss.item():.4f}, all {sum(1 for p in net.parameters() if p.requires_grad)} parameter tensors get non-zero finite gradients"

    def learns():
        net, optimizer, (x, y) = state["net"], state["optimizer"], state["batch"]
        losses = [state["loss0"]]
        for _ in range(LEARN_STEPS):
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        if not losses[-1] < losses[0]:
            raise CheckFailed(f"the loss on one batch went {losses[0]:.4f} -> {losses[-1]:.4f} in {LEARN_STEPS} steps: check the lr ({cfg.optim.get('lr')})")
        return f"loss on one batch {losses[0]:.4f} -> {losses[-1]:.4f} in {LEARN_STEPS} steps"

    checks = [("data loads", data), ("model builds", model), ("one batch", batch),
              ("one training step", step), ("loss moves", learns)]
    failed = None
    for name, fn in checks:
        if failed is not None:
            results.append((name, None, "skipped: an earlier check failed"))
            continue
        try:
            results.append((name, True, fn()))
        except (UserError, CheckFailed) as e:
            results.append((name, False, str(e)))
            failed = (name, str(e))
    print_table(format_table(results))
    if failed:
        raise UserError(f"check '{failed[0]}' failed: {failed[1]}")
    return results


def format_table(results) -> str:
    w = max(len(name) for name, _, _ in results)
    rows = [f"{'check':<{w}}  result  detail"]
    for name, ok, detail in results:
        rows.append(f"{name:<{w}}  {'PASS' if ok else ('skip' if ok is None else 'FAIL'):<6}  {detail}")
    return "\n".join(rows)
