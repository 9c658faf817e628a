"""``qvit-bench``: QAT training-step time against the full-precision step, tiny ViT, one process.

Steps of the two models are interleaved (FP, QAT, FP, QAT, ...) so a loaded machine slows both
alike; the ratio of the medians is the figure (goal on CPU: <= 1.3x).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def step_fn(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> None:
    from cifar_qvit.model import QViT

    parser = argparse.ArgumentParser(prog="qvit-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=("tiny", "small", "base", "large"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (after 2 warm-up steps)")
    parser.add_argument("--bits", type=int, default=4)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    side = 32 if args.size == "tiny" else 224
    x, y = torch.randn(args.batch_size, 3, side, side), torch.randint(0, 10, (args.batch_size,))
    models = {
        "fp32": QViT(10, pretrained=None, size=args.size, nbits_w=32, nbits_a=32).train(),
        f"W{args.bits}A{args.bits}": QViT(10, pretrained=None, size=args.size, nbits_w=args.bits, nbits_a=args.bits).train(),
    }
    steps = {name: step_fn(net, x, y) for name, net in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(args.steps + 2):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            if i >= 2:
                times[name].append(time.perf_counter() - t0)
    fp, q = (statistics.median(times[n]) for n in models)
    print(f"{args.size} ViT, batch {args.batch_size}, {torch.get_num_threads()} threads, {args.steps} interleaved steps each (median):")
    print(f"  full precision step {fp * 1000:.1f} ms | {list(models)[1]} QAT step {q * 1000:.1f} ms | ratio {q / fp:.2f}x (goal <= 1.3x)")


if __name__ == "__main__":
    main()
