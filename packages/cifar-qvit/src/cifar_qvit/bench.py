"""``qvit-bench``: QAT training-step time against the full-precision step, one process.

On CPU the steps of the two models are interleaved (FP, QAT, FP, QAT, ...) so a loaded machine
slows both alike; the ratio of the medians is the figure (goal on CPU: <= 1.3x). On a GPU
(``--device cuda``) they run one after the other under bf16 autocast, each with its peak memory:
``--size base|large --batch-size 32 --dgd --gradient-checkpointing`` is the ViT-B/ViT-L check.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from cifar_shared.bench import timer


def step_fn(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_hook=None, dtype: torch.dtype | None = None):
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4)
    holder = SimpleNamespace(net=net)  # what a loss hook reads as ``module.net``

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            if loss_hook is not None:
                loss = loss + sum(loss_hook(holder, x, y, logits).values())
        loss.backward()
        opt.step()

    return step


def save_as_run(net: torch.nn.Module, folder: Path) -> Path:
    """``net`` as a finished run folder (``checkpoints/best-*.ckpt``): what model.init_from and DGD read."""
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text("name: qvit\nmodel:\n  _target_: cifar_qvit.model.QViT\n")  # the run-folder reader needs one
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, folder / "checkpoints" / "best-epoch000-acc0.0000.ckpt")
    return folder


def build_models(args, teacher_dir: Path) -> dict[str, tuple[torch.nn.Module, object]]:
    """name -> (model, loss hook): full precision, and W/A-bit QAT (from the FP weights, with DGD if asked)."""
    from cifar_qvit.distill import DGDLoss
    from cifar_qvit.model import QViT

    common = dict(pretrained=None, size=args.size, gradient_checkpointing=args.gradient_checkpointing)
    fp = QViT(10, nbits_w=32, nbits_a=32, **common).train()
    name = f"W{args.bits}A{args.bits}" + (" + DGD" if args.dgd else "")
    if not args.dgd:
        return {"full precision": (fp, None), name: (QViT(10, nbits_w=args.bits, nbits_a=args.bits, **common).train(), None)}
    save_as_run(fp, teacher_dir)  # QAT starts from the FP weights, which also teach it (Q-ViT's recipe)
    q = QViT(10, nbits_w=args.bits, nbits_a=args.bits, init_from=str(teacher_dir), **common).train()
    return {"full precision": (fp, None), name: (q, DGDLoss(str(teacher_dir)))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="qvit-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=("tiny", "small", "base", "large"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (after 2 warm-up steps, 3 with --compile)")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--device", default="cpu", help="cpu (steps interleaved) or cuda (one model after the other, with peak memory)")
    parser.add_argument("--dgd", action="store_true", help="QAT with the DGD loss hook and its frozen full-precision teacher")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute each layer's activations in backward")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile both models (as compile=true in training): the quantizers' elementwise passes fuse")
    args = parser.parse_args(argv)
    warmup = 3 if args.compile else 2  # compiling: the first step compiles, the second recompiles once the quantizers are initialised

    torch.manual_seed(0)
    device = torch.device(args.device)
    side = 32 if args.size == "tiny" else 224
    x = torch.randn(args.batch_size, 3, side, side, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(args, Path(tmp))
        if args.compile:
            for net, _ in models.values():
                net.compile()
        if device.type == "cuda":
            results = sequential(models, x, y, dtype, args.steps, device, warmup)
        else:
            results = interleaved(models, x, y, args.steps, warmup)
    (fp_name, fp), (q_name, q) = results.items()
    where = f"{torch.cuda.get_device_name(device)}, bf16 autocast" if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"{args.size} ViT ({side} px), batch {args.batch_size}, {where}, gradient checkpointing {args.gradient_checkpointing}, "
          f"compile {args.compile}, {args.steps} steps each after {warmup} warm-up (median):")
    for name, r in results.items():
        memory = f", peak memory {r['peak_gib']:.2f} GiB" if "peak_gib" in r else ""
        print(f"  {name:<16} step {r['step_s'] * 1000:8.1f} ms  {args.batch_size / r['step_s']:8.1f} images/s{memory}")
    print(f"  ratio {q_name} / {fp_name}: {q['step_s'] / fp['step_s']:.2f}x step time")


def interleaved(models, x, y, steps: int, warmup: int = 2) -> dict[str, dict]:
    """CPU: FP, QAT, FP, QAT, ... so a loaded machine slows both alike."""
    fns = {name: step_fn(net, x, y, hook) for name, (net, hook) in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(steps + warmup):
        for name, step in fns.items():
            with timer.Stopwatch() as watch:
                step()
            if i >= warmup:
                times[name].append(watch.seconds)
    return {name: {"step_s": statistics.median(t)} for name, t in times.items()}


def sequential(models, x, y, dtype, steps: int, device: torch.device, warmup: int = 2) -> dict[str, dict]:
    """GPU: one model at a time on the device, so each peak memory is its own (weights, AdamW, activations, teacher)."""
    out = {}
    for name, (net, hook) in list(models.items()):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        net.to(device)
        step, times = step_fn(net, x, y, hook, dtype), []
        for i in range(steps + warmup):
            with timer.Stopwatch(device) as watch:
                step()
            if i >= warmup:
                times.append(watch.seconds)
        out[name] = {"step_s": statistics.median(times), "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30}
        net.to("cpu")
        if hook is not None:
            hook._teacher.clear()
        del models[name]
    return out


if __name__ == "__main__":
    main()
