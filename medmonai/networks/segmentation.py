"""Segmentation networks: MONAI UNet, SegResNet and DynUNet (nnU-Net topology) from one factory.

:func:`build_segmentation_network` returns a plain MONAI network that maps ``(B, in_channels, *patch)`` to
``(B, out_channels, *patch)`` logits. The depth follows the patch size (every axis is halved while it stays at
least ``min_size`` voxels and divisible by 2), so a network always fits the patch a plan gives it; DynUNet kernels
and strides are derived from the patch size *and* the voxel spacing as nnU-Net does (:func:`dynunet_topology`):
an axis that is much coarser than the finest one is neither pooled nor convolved (kernel 1) until the others have
caught up. From a bundle config::

    network_def:
      _target_: medmonai.networks.segmentation.build_segmentation_network
      name: dynunet            # unet | segresnet | dynunet
      spatial_dims: 3
      in_channels: 1
      out_channels: 3          # background + 2 structures
      patch_size: [40, 56, 40]
      spacing: [1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from monai.networks.nets import DynUNet, SegResNet, UNet
from torch import nn

__all__ = [
    "SEGMENTATION_NETWORKS",
    "dynunet_topology",
    "n_downsamplings",
    "build_segmentation_network",
]

#: names accepted by :func:`build_segmentation_network`.
SEGMENTATION_NETWORKS: tuple[str, ...] = ("unet", "segresnet", "dynunet")
#: nnU-Net caps the number of feature maps (3D: 320, 2D: 512).
_MAX_FILTERS = {2: 512, 3: 320}


def _ints(values: Sequence[float] | float | int, n: int, what: str) -> list[int]:
    vals = [values] * n if isinstance(values, int | float) else list(values)
    if len(vals) != n:
        raise ValueError(f"{what} has {len(vals)} values but spatial_dims is {n}: {list(vals)}")
    out = [int(v) for v in vals]
    if any(v < 1 or v != float(w) for v, w in zip(out, vals)):
        raise ValueError(f"{what} must be positive integers, got {list(vals)}")
    return out


def n_downsamplings(patch_size: Sequence[int], min_size: int = 4, max_levels: int = 5) -> int:
    """How often every axis of ``patch_size`` can be halved (isotropic stride 2) keeping ``>= min_size`` voxels.

    An axis can only be halved while it is even, so that the decoder's up-sampling gives back the input size.

    Args:
        patch_size: the input patch size.
        min_size: smallest size of the deepest feature map.
        max_levels: upper bound on the number of down-samplings.

    Returns:
        The number of stride-2 down-samplings (>= 0).
    """
    levels = 0
    sizes = [int(s) for s in patch_size]
    while levels < max_levels and all(s % 2 == 0 and s // 2 >= min_size for s in sizes):
        sizes = [s // 2 for s in sizes]
        levels += 1
    return levels


def dynunet_topology(
    patch_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    min_size: int = 4,
    max_levels: int = 5,
) -> tuple[list[list[int]], list[list[int]]]:
    """Kernel sizes and strides of a DynUNet for a patch size and spacing, following nnU-Net's planner.

    At each level, an axis is down-sampled (stride 2) when its current spacing is at most twice the finest current
    spacing and its current size is at least ``2 * min_size`` and even; its kernel is 3 when its spacing is at most
    twice the finest, else 1 (no in-plane mixing across thick slices). After a down-sampling the axis' spacing
    doubles, so anisotropic axes join in once the others have caught up. The first level has stride 1, the
    bottleneck a 3-kernel. (nnU-Net v1 ``get_pool_and_conv_props`` / the MONAI DynUNet tutorial.)

    Args:
        patch_size: the patch size per axis.
        spacing: voxel spacing (mm) per axis; default isotropic.
        min_size: smallest feature map size along a pooled axis.
        max_levels: maximum number of down-samplings.

    Returns:
        ``(kernels, strides)``: one entry per level (``len == number of down-samplings + 1``).

    Raises:
        ValueError: for a size/spacing of the wrong length or non-positive values.
    """
    sizes = [float(s) for s in _ints(list(patch_size), len(patch_size), "patch_size")]
    sd = len(sizes)
    spac = [1.0] * sd if spacing is None else [float(s) for s in spacing]
    if len(spac) != sd:
        raise ValueError(f"spacing has {len(spac)} values but the patch size has {sd}: {spac}")
    if any(s <= 0 for s in spac):
        raise ValueError(f"spacing must be positive, got {spac}")
    kernels: list[list[int]] = []
    strides: list[list[int]] = [[1] * sd]
    while len(strides) - 1 < max_levels:
        finest = min(spac)
        ratio = [s / finest for s in spac]
        stride = [2 if r <= 2 and size >= 2 * min_size and size % 2 == 0 else 1 for r, size in zip(ratio, sizes)]
        if all(s == 1 for s in stride):
            break
        kernels.append([3 if r <= 2 else 1 for r in ratio])
        strides.append(stride)
        sizes = [size / st for size, st in zip(sizes, stride)]
        spac = [sp * st for sp, st in zip(spac, stride)]
    finest = min(spac)
    kernels.append([3 if s / finest <= 2 else 1 for s in spac])
    return kernels, strides


def _filters(base: int, levels: int, spatial_dims: int) -> list[int]:
    cap = _MAX_FILTERS[spatial_dims]
    return [min(base * 2**i, cap) for i in range(levels)]


def build_segmentation_network(
    name: str = "dynunet",
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    patch_size: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    plan: dict[str, Any] | None = None,
    base_filters: int | None = None,
    dropout: float = 0.0,
    min_size: int = 4,
    max_levels: int = 5,
    num_res_units: int = 2,
    norm: str = "instance",
) -> nn.Module:
    """Build a MONAI segmentation network sized for a patch.

    Args:
        name: ``"unet"`` (MONAI residual UNet), ``"segresnet"`` or ``"dynunet"`` (nnU-Net-like).
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: number of classes including background (softmax logits).
        patch_size: training patch / sliding-window size; default ``plan["spatial_size"]``, else 32 per axis (3D)
            or 64 (2D).
        spacing: voxel spacing of the preprocessed images (DynUNet kernels/strides); default
            ``plan["target_spacing"]``, else isotropic.
        plan: a preprocessing plan (:func:`medmonai.data.fingerprint.plan_from_fingerprint`) giving the defaults.
        base_filters: feature maps of the first level (doubled per level, capped at 320 (3D) / 512 (2D));
            default 32 for DynUNet (nnU-Net), 16 for UNet and 8 for SegResNet (their MONAI defaults).
        dropout: dropout probability (UNet/DynUNet in every block; SegResNet after the initial convolution).
            SegResNet normalises with group norm (``gcd(8, base_filters)`` groups).
        min_size: smallest deepest-feature-map size (voxels) along a pooled axis.
        max_levels: maximum number of down-samplings.
        num_res_units: residual units per UNet block.
        norm: normalisation of UNet/DynUNet (``"instance"``, ``"batch"``).

    Returns:
        The network (``torch.nn.Module``); its ``patch_divisor`` attribute is the factor every input size must be a
        multiple of.

    Raises:
        ValueError: for an unknown name, a bad dimensionality or a patch too small for one down-sampling.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in SEGMENTATION_NETWORKS:
        raise ValueError(f"unknown segmentation network {name!r}; choose from {SEGMENTATION_NETWORKS}")
    sd = int(spatial_dims)
    if sd not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    plan = dict(plan or {})
    if patch_size is None:
        patch_size = plan.get("spatial_size") or plan.get("patch_size") or ([32] * 3 if sd == 3 else [64] * 2)
    patch = _ints(patch_size, sd, "patch_size")
    if spacing is None:
        spacing = plan.get("target_spacing")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    dropout = float(dropout)
    if int(out_channels) < 2:
        raise ValueError(f"out_channels must be >= 2 (background + classes), got {out_channels}")

    if key == "dynunet":
        kernels, strides = dynunet_topology(patch, spacing, min_size=min_size, max_levels=max_levels)
        if len(strides) < 2:
            raise ValueError(f"patch size {patch} is too small for one down-sampling (min_size {min_size})")
        filters = _filters(int(base_filters or 32), len(strides), sd)
        net: nn.Module = DynUNet(
            spatial_dims=sd,
            in_channels=int(in_channels),
            out_channels=int(out_channels),
            kernel_size=kernels,
            strides=strides,
            upsample_kernel_size=strides[1:],
            filters=filters,
            dropout=dropout or None,
            norm_name=(norm.upper(), {"affine": True}) if norm.lower() == "instance" else norm.upper(),
            res_block=False,
        )
        divisor = [1] * sd
        for st in strides:
            divisor = [d * s for d, s in zip(divisor, st)]
        net.patch_divisor = divisor  # type: ignore[assignment]
        net.kernels, net.strides_plan = kernels, strides  # type: ignore[assignment]
        return net

    levels = n_downsamplings(patch, min_size=min_size, max_levels=max_levels)
    if levels < 1:
        raise ValueError(f"patch size {patch} is too small for one down-sampling (min_size {min_size})")
    if key == "unet":
        net = UNet(
            spatial_dims=sd,
            in_channels=int(in_channels),
            out_channels=int(out_channels),
            channels=_filters(int(base_filters or 16), levels + 1, sd),
            strides=[2] * levels,
            num_res_units=int(num_res_units),
            norm=norm.upper(),
            dropout=dropout,
        )
    else:
        levels = min(levels, 4)
        blocks_down = (1, 2, 2, 4, 4)[: levels + 1]
        init = int(base_filters or 8)
        net = SegResNet(
            spatial_dims=sd,
            init_filters=init,
            norm=("GROUP", {"num_groups": math.gcd(8, init)}),
            in_channels=int(in_channels),
            out_channels=int(out_channels),
            dropout_prob=dropout or None,
            blocks_down=blocks_down,
            blocks_up=(1,) * levels,
        )
    net.patch_divisor = [2**levels] * sd  # type: ignore[assignment]
    return net
