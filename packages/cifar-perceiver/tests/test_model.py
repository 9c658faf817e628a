"""The wrapper: channels-first in, the library's Perceiver inside, FLOPs as counted by hand."""

import pytest
import torch
from perceiver_pytorch import Perceiver

from cifar_perceiver.config_file import fourier_input_dim
from cifar_perceiver.model import PerceiverClassifier
from cifar_shared import UserError
from cifar_shared.engine.model_stats import model_stats

TINY = dict(num_freq_bands=1, num_latents=2, latent_dim=8, cross_heads=1, cross_dim_head=4,
            latent_heads=2, latent_dim_head=4, depth=1, self_per_cross_attn=1)


def test_channels_first_batches_give_the_library_model_channels_last():
    torch.manual_seed(0)
    net = PerceiverClassifier(10, **TINY)
    x = torch.randn(3, 3, 8, 6)  # non-square, so a wrong permute cannot pass
    ref = Perceiver(input_channels=3, input_axis=2, num_classes=10, max_freq=10.0, **TINY)
    ref.load_state_dict(net.perceiver.state_dict())
    assert net(x).shape == (3, 10)
    assert torch.allclose(net(x), ref(x.permute(0, 2, 3, 1).contiguous()))


@pytest.mark.parametrize("bands, width", [(8, 37), (6, 29), (1, 9)])
def test_input_dim_is_the_fourier_width(bands, width):
    assert fourier_input_dim(bands) == width
    net = PerceiverClassifier(10, **{**TINY, "num_freq_bands": bands}, input_dim=width)
    assert net.perceiver.layers[0].cross_attn.fn.to_kv.in_features == width


def test_disagreeing_input_dim_names_the_formula_and_the_fitting_value():
    with pytest.raises(UserError, match=r"input_dim=36 .* 3 \+ 2 x \(2 x num_freq_bands \+ 1\) = 37"):
        PerceiverClassifier(10, **{**TINY, "num_freq_bands": 8}, input_dim=36)


def test_flops_of_a_tiny_perceiver_match_the_formula():
    """Per image, 2 FLOPs per multiply-add of every linear layer and attention product."""
    pixels, latents, width, classes = 4 * 4, 2, 8, 5
    context = 3 + 2 * (2 * 1 + 1)  # 9 input features per pixel (1 band)
    cross_inner, self_inner = 1 * 4, 2 * 4  # heads x dim_head

    def linear(rows, fan_in, fan_out):
        return 2 * rows * fan_in * fan_out

    cross = (linear(latents, width, cross_inner)  # q
             + linear(pixels, context, 2 * cross_inner)  # k, v of every pixel
             + 2 * (2 * latents * pixels * cross_inner)  # q·k and attention·v
             + linear(latents, cross_inner, width))  # out
    self_attn = (linear(latents, width, self_inner) + linear(latents, width, 2 * self_inner)
                 + 2 * (2 * latents * latents * self_inner) + linear(latents, self_inner, width))
    feedforward = linear(latents, width, width * 4 * 2) + linear(latents, width * 4, width)  # GEGLU
    forward = cross + feedforward + self_attn + feedforward + linear(1, width, classes)

    stats = model_stats(PerceiverClassifier(classes, **TINY), (3, 4, 4))
    assert stats.forward_flops == forward
    # backward: every product needs the gradient of both operands (even the pixels' k/v layer: its
    # input went through the context LayerNorm, which has weights), each as costly as the forward
    assert stats.train_flops == 3 * forward
