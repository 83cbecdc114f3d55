"""Conditional GAN networks: shapes in 2D/3D, level planning, class conditioning, EMA wrapper."""

from __future__ import annotations

import pytest
import torch

from medmonai.networks.gan import ConditionalGenerator, ProjectionDiscriminator, ema_generator, gan_levels


@pytest.mark.parametrize(
    "size, expected",
    [((28, 28), (2, (7, 7))), ((32, 32), (3, (4, 4))), ((64, 48), (3, (8, 6))), ((16, 16, 16), (2, (4, 4, 4)))],
)
def test_gan_levels(size, expected):
    assert gan_levels(size) == expected


def test_gan_levels_rejects_odd_or_tiny_sizes():
    with pytest.raises(ValueError, match="divisible"):
        gan_levels((27, 27))
    with pytest.raises(ValueError, match="divisible"):
        gan_levels((6, 6))


@pytest.mark.parametrize("dims, size", [(2, 28), (2, 32), (3, 16)])
def test_shapes_and_output_range(dims, size):
    g = ConditionalGenerator(dims, size, num_classes=3, latent_dim=16, channels=4)
    d = ProjectionDiscriminator(dims, size, num_classes=3, channels=4)
    y = torch.tensor([0, 1, 2])
    x = g(torch.randn(3, 16), y)
    assert x.shape == (3, 1, *([size] * dims))
    assert x.min() >= -1 and x.max() <= 1
    assert d(x, y).shape == (3,)


def test_discriminator_projection_depends_on_the_class():
    torch.manual_seed(0)
    d = ProjectionDiscriminator(2, 16, num_classes=2, channels=4).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(d(x, torch.tensor([0, 0])), d(x, torch.tensor([1, 1])))


def test_generator_depends_on_the_class():
    g = ConditionalGenerator(2, 16, num_classes=2, latent_dim=8, channels=4).eval()
    z = torch.randn(1, 8)
    with torch.no_grad():
        assert not torch.allclose(g(z, torch.tensor([0])), g(z, torch.tensor([1])))


def test_ema_generator_tracks_the_average_after_a_warm_up():
    g = ConditionalGenerator(2, 16, num_classes=2, latent_dim=8, channels=4)
    ema = ema_generator(g, decay=0.5)
    ema.update_parameters(g)  # first update copies
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    ema.update_parameters(g)  # n = 1: warm-up decay 2/11 < 0.5
    for pe, p in zip(ema.module.parameters(), g.parameters()):
        assert torch.allclose(pe, p - 2 / 11)
    for _ in range(30):
        ema.update_parameters(g)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    ema.update_parameters(g)  # warm-up over: decay 0.5
    for pe, p in zip(ema.module.parameters(), g.parameters()):
        assert torch.allclose(pe, p - 0.5, atol=1e-5)
    with pytest.raises(ValueError):
        ema_generator(g, decay=1.0)
