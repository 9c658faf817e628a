import torch

from cifar_basiccnn.model import BasicCNN


def test_output_shape_and_parameter_count():
    net = BasicCNN(num_classes=10)
    assert net(torch.zeros(5, 3, 32, 32)).shape == (5, 10)
    convs = (3 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 128 * 9 + 128)
    head = (2048 * 256 + 256) + (256 * 10 + 10)
    assert sum(p.numel() for p in net.parameters()) == convs + head == 620_362


def test_layers_follow_the_original():
    net = BasicCNN(num_classes=100)
    kinds = [type(m).__name__ for m in net.modules() if not isinstance(m, torch.nn.Sequential)][1:]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d"] * 3 + ["Flatten", "Linear", "ReLU", "Dropout", "Linear"]
    assert net.classifier[1].in_features == 2048 and net.classifier[-1].out_features == 100
