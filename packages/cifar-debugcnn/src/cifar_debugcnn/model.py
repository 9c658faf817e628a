"""The original project's CNN: four conv/BN/ReLU/max-pool blocks and a BN + dropout MLP head.

Layers are named (``features.block1.conv``, ``classifier.fc1``...) because the probes report them
by name. Convs and hidden Linears carry no bias: the BatchNorm after each removes any constant, so
such a bias gets an exactly-zero gradient and only adds a false "vanishing gradient" alarm.
"""

from collections import OrderedDict

from torch import nn

from cifar_debugcnn.cli import check_image_size


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

    def forward(self, x):
        return self.classifier(self.features(x))
