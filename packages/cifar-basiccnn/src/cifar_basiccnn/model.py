"""The plain CNN of the original project: three conv/ReLU/max-pool blocks and a two-layer head."""

from torch import nn


class BasicCNN(nn.Module):
    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128), hidden: int = 256, dropout: float = 0.5, image_size: int = 32):
        super().__init__()
        blocks, channels = [], 3
        for width in widths:
            blocks += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*blocks)
        side = image_size // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
