"""The network: perceiver-pytorch's Perceiver (Jaegle et al., 2021), fed channels-first batches.

A small latent array cross-attends to every pixel (its colour plus a Fourier encoding of its
position), then self-attends; weight tying and the number of self-attention blocks per
cross-attention follow the paper. The attention is the library's; this file only adapts the layout.
"""

from __future__ import annotations

import torch
from perceiver_pytorch import Perceiver
from torch import nn

from cifar_perceiver.config_file import check_input_dim, fourier_input_dim


class PerceiverClassifier(nn.Module):
    """``Perceiver`` for (N, C, H, W) images: the library wants channels last, (N, H, W, C)."""

    def __init__(
        self,
        num_classes: int,
        num_freq_bands: int = 8,
        max_freq: float = 10.0,
        depth: int = 1,
        num_latents: int = 256,
        latent_dim: int = 512,
        cross_heads: int = 1,
        latent_heads: int = 8,
        cross_dim_head: int = 64,
        latent_dim_head: int = 64,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        weight_tie_layers: bool = False,
        self_per_cross_attn: int = 1,
        input_dim: int | None = None,
        in_channels: int = 3,
    ):
        super().__init__()
        check_input_dim(input_dim, num_freq_bands)
        self.input_dim = fourier_input_dim(num_freq_bands, in_channels)
        self.perceiver = Perceiver(
            input_channels=in_channels, input_axis=2, num_freq_bands=num_freq_bands, max_freq=max_freq,
            depth=depth, num_latents=num_latents, latent_dim=latent_dim, cross_heads=cross_heads,
            latent_heads=latent_heads, cross_dim_head=cross_dim_head, latent_dim_head=latent_dim_head,
            num_classes=num_classes, attn_dropout=attn_dropout, ff_dropout=ff_dropout,
            weight_tie_layers=weight_tie_layers, self_per_cross_attn=self_per_cross_attn,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.perceiver(x.permute(0, 2, 3, 1))  # a view; the library flattens it anyway
