"""ResNet-18/34/50 from torchvision, with the stem chosen for the image size.

torchvision's ImageNet stem (7×7 stride-2 conv + max-pool) shrinks a 32×32 CIFAR image to 8×8
before the first residual block; the CIFAR stem (3×3 stride-1 conv, no pool) keeps 32×32, which
is what CIFAR ResNets use and what trains well on small images.
"""

from torch import nn
from torchvision import models

ARCHS = {"resnet18": models.resnet18, "resnet34": models.resnet34, "resnet50": models.resnet50}
STEMS = ("cifar", "imagenet")


def resnet(arch: str = "resnet18", num_classes: int = 100, stem: str = "cifar") -> models.ResNet:
    """A randomly initialised torchvision ResNet; ``stem=imagenet`` leaves it as torchvision has it."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHS)}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}: choose one of {', '.join(STEMS)}")
    net = ARCHS[arch](weights=None, num_classes=num_classes)
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
        net.maxpool = nn.Identity()
    return net
