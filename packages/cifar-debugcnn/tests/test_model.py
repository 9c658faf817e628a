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


SMALL_ORDER = [f"features.block{i}.{kind}" for i in (1, 2) for kind in ("conv", "bn", "relu", "pool")] + [
    "classifier.flatten", "classifier.fc1", "classifier.bn1", "classifier.relu1", "classifier.drop1", "classifier.out"]


def _randomized(net: DebugCNN) -> DebugCNN:
    """BatchNorm with non-trivial running statistics and affine terms, so eval mode is not an identity."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g))
    return net.eval()


def test_debug_forward_returns_logits_and_the_probes_rows_layer_by_layer():
    torch.manual_seed(0)
    net = _randomized(DebugCNN(num_classes=3, widths=(4, 8), hidden=(6,), image_size=8))
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    logits, stats = net(x, debug=True)
    assert torch.equal(logits, net(x))
    assert list(stats) == SMALL_ORDER
    assert sum(len(m._forward_hooks) for m in net.modules()) == 0  # nothing left on the network
    h = x
    with torch.no_grad():
        for name in SMALL_ORDER:  # the reference: each layer called by hand, the numbers straight from torch
            h = net.get_submodule(name)(h)
            row = stats[name]
            assert row["name"] == name and row["shape"] == list(h.shape) and row["type"] == type(net.get_submodule(name)).__name__
            expected = [float(h.min()), float(h.max()), float(h.mean()), float(h.std(unbiased=False))]
            assert [row[k] for k in ("min", "max", "mean", "std")] == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert torch.equal(h, logits)
    assert "out_grad_norm" not in stats["classifier.fc1"] and "dead" not in stats["classifier.fc1"]


def test_debug_forward_counts_dead_units_and_elements_of_a_constructed_input():
    """Block 1 (3 channels, 4x4): channel 0 is off everywhere (BN shift -1 on a zero conv), channel 1
    copies input channel 0, negative in the right two columns of every image (8 of its 16 elements
    dead), channel 2 copies input channel 1, positive everywhere. Per channel 1 of 3 is dead, per
    element 16 + 8 = 24 of 48. In the head, units 0 and 1 are shifted to -100: 2 of 4 both ways."""
    net = DebugCNN(num_classes=2, widths=(3,), hidden=(4,), image_size=4).eval()
    with torch.no_grad():
        conv, bn = net.features.block1.conv, net.features.block1.bn
        conv.weight.zero_()
        conv.weight[1, 0, 1, 1] = 1.0  # the centre tap: channel 1 = input channel 0
        conv.weight[2, 1, 1, 1] = 1.0
        bn.bias.copy_(torch.tensor([-1.0, 0.0, 0.0]))
        net.classifier.fc1.weight.fill_(1.0)
        net.classifier.bn1.bias.copy_(torch.tensor([-100.0, -100.0, 0.0, 0.0]))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 4, 4, generator=g).abs() + 0.1
    x[:, 0, :, 2:] *= -1
    _, stats = net(x, debug=True)
    relu = stats["features.block1.relu"]
    assert (relu["dead"], relu["units"], relu["dead_elements"], relu["elements"]) == (1, 3, 24, 48)
    assert (relu["dead_fraction"], relu["dead_element_fraction"]) == (pytest.approx(1 / 3), 0.5)
    head = stats["classifier.relu1"]
    assert (head["dead"], head["units"], head["dead_elements"], head["elements"]) == (2, 4, 2, 4)

