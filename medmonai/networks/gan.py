"""Class-conditional GAN networks for 2D images and small 3D volumes: a DCGAN generator, a projection discriminator.

:class:`ConditionalGenerator` maps a latent vector ``z`` and a class index ``y`` to an image in ``[-1, 1]``
(``tanh``): the class embedding is concatenated to ``z`` (conditional DCGAN, Mirza & Osindero 2014; Radford et al.
2016), a linear layer makes a ``base``-sized feature map, and ``n_levels`` blocks of nearest-neighbour upsampling +
3x3 convolution + batch norm + ReLU double it up to ``spatial_size``.

:class:`ProjectionDiscriminator` mirrors it (3x3 convolution then 4x4 stride-2 convolution per level, leaky ReLU,
spectral normalisation on every weight, Miyato et al. 2018) and ends with global sum pooling ``h``, a linear output
and the class projection ``<embed(y), h>`` (Miyato & Koyama, "cGANs with projection discriminator", 2018). It
returns one real/fake logit per sample.

Both are built with MONAI's N-d layer factories, so ``spatial_dims`` 2 and 3 share the code. Every spatial size
must be divisible by ``2 ** n_levels`` (:func:`gan_levels` picks the largest number of levels, at most 5, that
leaves a base grid of at least 4 per axis; e.g. 28 -> 2 levels from 7, 32 -> 3 levels from 4, 64 -> 4 levels).

:func:`ema_generator` wraps a generator in ``torch.optim.swa_utils.AveragedModel`` for an exponential moving average
of its weights (and batch-norm statistics), the usual generator to sample from.

:class:`FeatureGenerator` and :class:`FeatureDiscriminator` are the MLP counterparts for a *feature-level* GAN, which
generates a CNN's pooled feature vectors of a class instead of images (see :mod:`medmonai.engines.feature_gan`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv, Norm
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm
from torch.optim.swa_utils import AveragedModel

__all__ = [
    "gan_levels",
    "ConditionalGenerator",
    "ProjectionDiscriminator",
    "ema_generator",
    "FeatureGenerator",
    "FeatureDiscriminator",
]


def gan_levels(spatial_size: Sequence[int], min_base: int = 4, max_levels: int = 5) -> tuple[int, tuple[int, ...]]:
    """Number of up/down-sampling levels and the base grid for an image size.

    Args:
        spatial_size: the image size per axis.
        min_base: smallest base grid edge.
        max_levels: most levels.

    Returns:
        ``(n_levels, base_size)`` with ``base_size * 2 ** n_levels == spatial_size``.

    Raises:
        ValueError: when no level fits (an axis smaller than ``2 * min_base`` or odd).
    """
    size = tuple(int(s) for s in spatial_size)
    n = 0
    while n < max_levels and all(s % 2 ** (n + 1) == 0 and s // 2 ** (n + 1) >= min_base for s in size):
        n += 1
    if n == 0:
        raise ValueError(
            f"GAN image size {list(size)}: every axis must be even and at least {2 * min_base} (divisible by 2**k with "
            f"at least {min_base} left per axis), e.g. 28, 32, 48 or 64"
        )
    return n, tuple(s // 2**n for s in size)


def _size(spatial_size: Sequence[int] | int, spatial_dims: int) -> tuple[int, ...]:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    size = [int(spatial_size)] * spatial_dims if isinstance(spatial_size, int) else [int(s) for s in spatial_size]
    if len(size) != spatial_dims:
        raise ValueError(f"spatial_size {size} does not have {spatial_dims} values")
    return tuple(size)


class _ConditionalImageNet(nn.Module):
    """Geometry shared by the image generator and discriminator: size per axis, classes and the level grid."""

    def __init__(self, spatial_dims: int, spatial_size: Sequence[int] | int, num_classes: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.spatial_size = _size(spatial_size, spatial_dims)
        self.num_classes = int(num_classes)
        self.n_levels, self.base_size = gan_levels(self.spatial_size)


class ConditionalGenerator(_ConditionalImageNet):
    """Class-conditional DCGAN generator (see the module docstring).

    Args:
        spatial_dims: 2 or 3.
        spatial_size: output image size (one int for a square/cube).
        num_classes: number of classes.
        latent_dim: length of ``z``.
        embed_dim: length of the class embedding concatenated to ``z``.
        channels: feature channels of the last (full-resolution) block; doubled per level towards the base, capped at
            ``max_channels``.
        out_channels: image channels.
        max_channels: channel cap.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        spatial_size: Sequence[int] | int = 64,
        num_classes: int = 2,
        latent_dim: int = 64,
        embed_dim: int = 32,
        channels: int = 32,
        out_channels: int = 1,
        max_channels: int = 256,
    ) -> None:
        super().__init__(spatial_dims, spatial_size, num_classes)
        self.latent_dim = int(latent_dim)
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        widths = [min(channels * 2 ** (self.n_levels - i), max_channels) for i in range(self.n_levels + 1)]
        self.embed = nn.Embedding(self.num_classes, embed_dim)
        self.fc = nn.Linear(self.latent_dim + embed_dim, widths[0] * math.prod(self.base_size))
        self.base_norm = norm(widths[0])
        blocks = []
        for i in range(self.n_levels):
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                conv(widths[i], widths[i + 1], kernel_size=3, padding=1, bias=False),
                norm(widths[i + 1]),
                nn.ReLU(inplace=True),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Sequential(conv(widths[-1], out_channels, kernel_size=3, padding=1), nn.Tanh())
        self.widths = widths
        for m in self.modules():  # DCGAN initialisation
            if isinstance(m, nn.Conv2d | nn.Conv3d | nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images ``(B, out_channels, *spatial_size)`` in [-1, 1] for latents ``(B, latent_dim)``, classes ``(B,)``."""
        h = self.fc(torch.cat([z, self.embed(y.long().view(-1))], dim=1))
        h = h.view(z.shape[0], self.widths[0], *self.base_size)
        h = torch.relu(self.base_norm(h))
        return self.out(self.blocks(h))


class ProjectionDiscriminator(_ConditionalImageNet):
    """Spectral-normalised conditional discriminator with a projection head (see the module docstring).

    Args:
        spatial_dims: 2 or 3.
        spatial_size: input image size (one int for a square/cube).
        num_classes: number of classes.
        channels: feature channels of the first block; doubled per level, capped at ``max_channels``.
        in_channels: image channels.
        max_channels: channel cap.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        spatial_size: Sequence[int] | int = 64,
        num_classes: int = 2,
        channels: int = 32,
        in_channels: int = 1,
        max_channels: int = 256,
    ) -> None:
        super().__init__(spatial_dims, spatial_size, num_classes)
        conv = Conv[Conv.CONV, spatial_dims]
        widths = [min(channels * 2**i, max_channels) for i in range(self.n_levels + 1)]
        layers: list[nn.Module] = [spectral_norm(conv(in_channels, widths[0], kernel_size=3, padding=1))]
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        for i in range(self.n_levels):
            layers += [
                spectral_norm(conv(widths[i], widths[i + 1], kernel_size=4, stride=2, padding=1)),
                nn.LeakyReLU(0.2, inplace=True),
                spectral_norm(conv(widths[i + 1], widths[i + 1], kernel_size=3, padding=1)),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = spectral_norm(nn.Embedding(self.num_classes, widths[-1]))
        self.widths = widths

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Real/fake logits ``(B,)`` for images ``(B, C, *spatial_size)`` of classes ``(B,)``."""
        h = self.features(x).sum(dim=tuple(range(2, x.ndim)))  # global sum pooling
        return self.linear(h).view(-1) + (self.embed(y.long().view(-1)) * h).sum(dim=1)


class _WarmupEMA:
    """``multi_avg_fn`` of ``AveragedModel``: EMA with decay ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates.

    The warm-up keeps the average from being dominated by the random initial weights in short runs (with a fixed
    0.999, the initial weights still have 74 % of the weight after 300 steps).
    """

    def __init__(self, decay: float) -> None:
        self.decay = float(decay)

    def __call__(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        d = min(self.decay, (1.0 + n) / (10.0 + n))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - d)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():  # e.g. batch-norm step counters
                a.copy_(c)


def ema_generator(generator: nn.Module, decay: float = 0.999) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``generator`` (weights and buffers), updated by the GAN trainer.

    Args:
        generator: the trained generator.
        decay: EMA decay per generator step, reached after a warm-up (decay ``(1 + n) / (10 + n)`` after ``n``
            updates while that is smaller); ``0`` copies the generator every step.

    Returns:
        ``AveragedModel``; its ``module`` is the averaged generator (what ``generate.yaml`` samples from).
    """
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
    return AveragedModel(generator, multi_avg_fn=_WarmupEMA(decay), use_buffers=True)


class FeatureGenerator(nn.Module):
    """Class-conditional MLP generator of feature *vectors* (a feature-level GAN's generator).

    ``[z, embed(y)]`` -> ``n_layers`` x (linear, layer norm, leaky ReLU) -> linear to ``feature_dim`` (no output
    activation: it generates standardised features).

    Args:
        feature_dim: length of the generated feature vectors.
        num_classes: number of classes.
        latent_dim: length of ``z``.
        hidden: width of the hidden layers.
        n_layers: number of hidden layers.
    """

    def __init__(
        self, feature_dim: int, num_classes: int = 2, latent_dim: int = 64, hidden: int = 256, n_layers: int = 2
    ) -> None:
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.latent_dim = int(latent_dim)
        self.embed = nn.Embedding(self.num_classes, self.latent_dim)
        layers: list[nn.Module] = []
        width = 2 * self.latent_dim
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(0.2, inplace=True)]
            width = hidden
        layers.append(nn.Linear(width, self.feature_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Feature vectors ``(B, feature_dim)`` for latents ``(B, latent_dim)`` and classes ``(B,)``."""
        return self.net(torch.cat([z, self.embed(y.long().view(-1))], dim=1))


class FeatureDiscriminator(nn.Module):
    """Spectral-normalised MLP discriminator of feature vectors with a class projection head.

    Args:
        feature_dim: length of the feature vectors.
        num_classes: number of classes.
        hidden: width of the hidden layers.
        n_layers: number of hidden layers.
    """

    def __init__(self, feature_dim: int, num_classes: int = 2, hidden: int = 256, n_layers: int = 2) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        layers: list[nn.Module] = []
        width = int(feature_dim)
        for _ in range(n_layers):
            layers += [spectral_norm(nn.Linear(width, hidden)), nn.LeakyReLU(0.2, inplace=True)]
            width = hidden
        self.features = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(width, 1))
        self.embed = spectral_norm(nn.Embedding(self.num_classes, width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Real/fake logits ``(B,)`` for feature vectors ``(B, feature_dim)`` of classes ``(B,)``."""
        h = self.features(x)
        return self.linear(h).view(-1) + (self.embed(y.long().view(-1)) * h).sum(dim=1)
