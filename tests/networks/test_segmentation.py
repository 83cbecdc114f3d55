"""Segmentation network factory: nnU-Net topology from patch size and spacing, shapes, errors, TorchScript."""

from __future__ import annotations

import pytest
import torch

from medmonai.networks.segmentation import (
    SEGMENTATION_NETWORKS,
    build_segmentation_network,
    dynunet_topology,
    n_downsamplings,
)


def test_dynunet_topology_isotropic_hippocampus_patch_matches_nnunet():
    # nnU-Net's 3d_fullres plan for MSD Task04: patch 40x56x40, three poolings down to 5x7x5, 3x3x3 kernels
    kernels, strides = dynunet_topology([40, 56, 40], [1.0, 1.0, 1.0])
    assert strides == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert kernels == [[3, 3, 3]] * 4


def test_dynunet_topology_anisotropic_axis_waits_until_the_others_catch_up():
    kernels, strides = dynunet_topology([64, 64, 16], [0.8, 0.8, 3.0])
    assert strides[1] == [2, 2, 1] and kernels[0] == [3, 3, 1]  # thick slices: no pooling, no mixing across them
    assert strides[2] == [2, 2, 2] and kernels[1] == [3, 3, 3]  # 1.6 mm vs 3 mm: ratio <= 2, pooled from here on
    sizes = [64, 64, 16]
    for st in strides:
        sizes = [s // t for s, t in zip(sizes, st)]
    assert min(sizes) >= 4


def test_n_downsamplings_keeps_even_sizes_and_min_size():
    assert n_downsamplings([40, 56, 40]) == 3
    assert n_downsamplings([64, 64]) == 4
    assert n_downsamplings([12, 12]) == 1
    assert n_downsamplings([6, 16]) == 0


@pytest.mark.parametrize("name", SEGMENTATION_NETWORKS)
@pytest.mark.parametrize("spatial_dims,patch", [(3, [16, 24, 16]), (2, [32, 48])])
def test_networks_map_patch_to_logits_of_the_same_size(name, spatial_dims, patch):
    net = build_segmentation_network(name, spatial_dims, 1, 3, patch_size=patch, base_filters=4, dropout=0.1)
    net.eval()
    with torch.no_grad():
        y = net(torch.rand(2, 1, *patch))
    assert y.shape == (2, 3, *patch)
    assert all(p % d == 0 for p, d in zip(patch, net.patch_divisor))


def test_defaults_come_from_the_plan():
    plan = {"spatial_size": [16, 16, 8], "target_spacing": [1.0, 1.0, 2.5]}
    net = build_segmentation_network("dynunet", 3, 1, 2, plan=plan, base_filters=4)
    assert net.strides_plan[1] == [2, 2, 1]
    with torch.no_grad():
        assert net.eval()(torch.rand(1, 1, 16, 16, 8)).shape == (1, 2, 16, 16, 8)


def test_errors_are_explicit():
    with pytest.raises(ValueError, match="unknown segmentation network"):
        build_segmentation_network("vnet", 3, 1, 2)
    with pytest.raises(ValueError, match="too small"):
        build_segmentation_network("unet", 2, 1, 2, patch_size=[6, 6])
    with pytest.raises(ValueError, match="patch_size has 2 values"):
        build_segmentation_network("dynunet", 3, 1, 2, patch_size=[32, 32])
    with pytest.raises(ValueError, match="out_channels"):
        build_segmentation_network("unet", 3, 1, 1)


def test_unet_is_torchscript_scriptable():
    net = build_segmentation_network("unet", 2, 1, 2, patch_size=[32, 32], base_filters=4).eval()
    scripted = torch.jit.script(net)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))
