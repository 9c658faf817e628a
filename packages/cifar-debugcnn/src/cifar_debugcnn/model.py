"""The original project's CNN: four conv/BN/ReLU/max-pool blocks and a BN + dropout MLP head.

Layers are named (``features.block1.conv``, ``classifier.fc1``...) because the probes report them
by name. Convs and hidden Linears carry no bias: the BatchNorm after each removes any constant, so
such a bias gets an exactly-zero gradient and only adds a false "vanishing gradient" alarm.

``net(x, debug=True)`` returns ``(logits, stats)``, the probes' per-layer numbers for that one
batch, to look inside the network from a notebook without a Trainer.
"""

from collections import OrderedDict

import torch
from torch import nn

from cifar_debugcnn.cli import check_image_size
from cifar_debugcnn.stats import layer_entry, layer_row, leaf_layers


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        bn=nn.BatchNorm2d(cout),
        relu=nn.ReLU(),
        pool=nn.MaxPool2d(2),
    ))


class DebugCNN(nn.Module):
    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128, 256),
                 hidden: tuple[int, ...] = (512, 256), dropout: float = 0.5, image_size: int = 32):
        super().__init__()
        check_image_size(image_size, len(widths))
        shrink = 2 ** len(widths)
        channels, blocks = 3, OrderedDict()
        for i, width in enumerate(widths, 1):
            blocks[f"block{i}"] = conv_block(channels, width)
            channels = width
        self.features = nn.Sequential(blocks)
        width = channels * (image_size // shrink) ** 2  # 256 * (s/16)^2: 1,024 at 32 px, 50,176 at 224 px
        head = OrderedDict(flatten=nn.Flatten())
        for i, size in enumerate(hidden, 1):
            head[f"fc{i}"] = nn.Linear(width, size, bias=False)
            head[f"bn{i}"] = nn.BatchNorm1d(size)
            head[f"relu{i}"] = nn.ReLU()
            head[f"drop{i}"] = nn.Dropout(dropout)
            width = size
        head["out"] = nn.Linear(width, num_classes)
        self.classifier = nn.Sequential(head)

    def forward(self, x: torch.Tensor, debug: bool = False):
        """Logits; with ``debug=True`` ``(logits, stats)``: ``stats`` maps each leaf layer's name,
        in forward order, to the row debug.json's ``layers`` holds for it (the same functions make
        both; no ``out_grad_norm``, as there is no backward here). The mode is the caller's:
        ``net.eval()`` for what validation sees, ``net.train()`` for batch statistics and dropout."""
        if not debug:
            return self.classifier(self.features(x))
        stats: dict[str, dict] = {}

        def keep(name: str):
            def hook(module, inputs, output):
                stats[name] = layer_row(name, layer_entry(module, output))
            return hook

        handles = [layer.register_forward_hook(keep(name)) for name, layer in leaf_layers(self)]
        try:  # hooks on the real forward path, so the numbers are those of forward(x); none outlives the call
            logits = self.classifier(self.features(x))
        finally:
            for h in handles:
                h.remove()
        return logits, stats
