"""Parameters and FLOPs per image, counted by ``torch.utils.flop_counter.FlopCounterMode``.

FLOPs follow PyTorch's convention (a multiply-add is 2 FLOPs; matmul, conv and attention kernels
are counted, elementwise ops are not). Forward+backward is what one training step costs per image:
the backward pass computes the parameters' gradients (not the input's), as training does.
The count runs under ``fork_rng`` on an eval-mode pass, so it shifts neither the run's random
stream nor any weight or gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

BATCH = 2  # eval-mode pass on 2 images, divided by 2: batch-size-1 quirks (BatchNorm1d) stay out


@dataclass(frozen=True)
class ModelStats:
    params: int
    trainable: int
    forward_flops: int  # per image
    train_flops: int  # forward + backward, per image

    def line(self) -> str:
        return (f"{self.params:,} parameters ({self.trainable:,} trainable); FLOPs per image: "
                f"forward {_giga(self.forward_flops)}, forward+backward {_giga(self.train_flops)}")


def _giga(flops: int) -> str:
    return f"{flops / 1e9:.3f} G" if flops >= 1e8 else f"{flops / 1e6:.3f} M"


def model_stats(net: torch.nn.Module, image_shape: tuple[int, int, int]) -> ModelStats:
    """Count on the device of the network's parameters, with ``BATCH`` random images."""
    params = list(net.parameters())
    trainable = [p for p in params if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    was_training = net.training
    net.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.compiler.set_stance("force_eager"):  # a compiled net: count, don't compile
            x = torch.randn(BATCH, *image_shape, device=device)
            # grad enabled in both passes: the counter's module tracker trips over some models
            # (perceiver-pytorch) under no_grad, and the forward FLOPs are the same either way
            with FlopCounterMode(display=False) as fwd:
                out = net(x)
            with FlopCounterMode(display=False) as bwd:
                if trainable and out.requires_grad:  # gradients returned, not accumulated into .grad
                    torch.autograd.grad(out.float().sum(), trainable, allow_unused=True)
    finally:
        net.train(was_training)
    return ModelStats(
        params=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in trainable),
        forward_flops=fwd.get_total_flops() // BATCH,
        train_flops=(fwd.get_total_flops() + bwd.get_total_flops()) // BATCH,
    )
