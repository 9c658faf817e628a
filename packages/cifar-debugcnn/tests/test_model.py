import pytest
import torch

from cifar_debugcnn.model import DebugCNN
from cifar_shared import UserError


def test_output_shape_and_parameter_count():
    net = DebugCNN(num_classes=10)
    assert net(torch.zeros(3, 3, 32, 32)).shape == (3, 10)
    convs = sum(cin * cout * 9 + 2 * cout for cin, cout in [(3, 32), (32, 64), (64, 128), (128, 256)])  # no conv bias; BN scale + shift
    head = (1024 * 512 + 2 * 512) + (512 * 256 + 2 * 256) + (256 * 10 + 10)
    assert sum(p.numel() for p in net.parameters()) == convs + head


def test_layers_follow_the_original():
    net = DebugCNN(num_classes=100)
    kinds = [type(m).__name__ for m in net.modules() if not list(m.children())]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 4 + ["Flatten"] + ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)] == [32, 64, 128, 256]
    assert net.classifier.fc1.out_features == 512 and net.classifier.fc2.out_features == 256
    assert net.classifier.out.out_features == 100 and net.classifier.drop1.p == 0.5


@pytest.mark.parametrize("size, width", [(16, 256), (32, 1024), (64, 4096), (224, 50176)])
def test_flatten_width_follows_the_image_size(size, width):
    assert DebugCNN(image_size=size).classifier.fc1.in_features == width == 256 * (size // 16) ** 2


@pytest.mark.parametrize("size", [8, 40, 100])
def test_an_image_size_the_pools_cannot_take_is_a_user_error(size):
    with pytest.raises(UserError, match=f"cannot take {size} px images.*multiple of 16"):
        DebugCNN(image_size=size)
