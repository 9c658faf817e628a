import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from cifar_resnet.model import resnet


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_parameter_counts_at_100_classes():
    assert n_params(resnet("resnet18", 100, stem="imagenet")) == 11_227_812
    assert n_params(resnet("resnet18", 100, stem="cifar")) == 11_220_132
    assert n_params(resnet("resnet18", 100)) == 11_220_132  # cifar is the default stem


def test_imagenet_stem_is_torchvision_as_is():
    ours, theirs = resnet("resnet18", 100, stem="imagenet"), resnet18(weights=None, num_classes=100)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert isinstance(ours.maxpool, nn.MaxPool2d) and ours.conv1.kernel_size == (7, 7) and ours.conv1.stride == (2, 2)


def test_cifar_stem_keeps_32x32_into_the_first_block():
    net = resnet("resnet18", 100, stem="cifar")
    conv = net.conv1
    assert (conv.kernel_size, conv.stride, conv.padding, conv.bias) == ((3, 3), (1, 1), (1, 1), None)
    assert isinstance(net.maxpool, nn.Identity)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    assert stem(torch.zeros(1, 3, 32, 32)).shape == (1, 64, 32, 32)


@pytest.mark.parametrize("arch, stem", [("resnet18", "cifar"), ("resnet34", "cifar"), ("resnet50", "cifar"), ("resnet18", "imagenet")])
def test_output_shape(arch, stem):
    net = resnet(arch, num_classes=10, stem=stem).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50"):
        resnet("resnet101")
    with pytest.raises(ValueError, match="cifar, imagenet"):
        resnet(stem="tiny")
