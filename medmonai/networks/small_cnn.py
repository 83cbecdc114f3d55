"""A compact CNN for small images (28-64 px in 2D, small 3D patches), built from MONAI ``Convolution`` blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn

__all__ = ["SmallCNN"]


def _conv(spatial_dims: int, c_in: int, c_out: int, stride: int = 1) -> Convolution:
    return Convolution(
        spatial_dims, c_in, c_out, strides=stride, kernel_size=3, act="RELU", norm="BATCH", adn_ordering="NA"
    )


class SmallCNN(nn.Module):
    """Stem conv, then ``len(channels) - 1`` stages of (strided 3x3 conv, 3x3 conv), then global average pooling.

    With the default ``channels=(32, 64, 128, 256)`` a 28-px image goes 28 -> 14 -> 7 -> 4 before pooling, and the
    2D network has about 1.2 M parameters (3.4 M in 3D). Conv-BN-ReLU everywhere.

    Args:
        spatial_dims: 2 or 3.
        in_channels: number of input channels.
        channels: stem width followed by the width of every stage; the last one is the feature dimension.

    Attributes:
        stem: ``Convolution`` (``in_channels -> channels[0]``).
        stages: ``nn.ModuleList`` of the stages (each an ``nn.Sequential`` of two ``Convolution``).
        feature_dim: ``channels[-1]``.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, channels: Sequence[int] = (32, 64, 128, 256)):
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if len(channels) < 2:
            raise ValueError(f"channels needs a stem width and at least one stage width, got {tuple(channels)}")
        self.stem = _conv(spatial_dims, in_channels, channels[0])
        self.stages = nn.ModuleList(
            nn.Sequential(_conv(spatial_dims, c_in, c_out, stride=2), _conv(spatial_dims, c_out, c_out))
            for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.feature_dim = int(channels[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.pool(x).flatten(1)
