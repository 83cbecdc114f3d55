"""Segmentation preprocessing from a plan, and patch sampling balanced over label classes.

:func:`build_segmentation_preprocessing` is :func:`medmonai.transforms.preprocessing.build_preprocessing` with the
label as its mask (nearest-neighbour resampling, grid check against the image) plus a crop to the image's non-zero
region (nnU-Net's first step, MONAI ``CropForegroundd``) before re-orientation, no fixed output size (patches are
sampled instead), and an integer label. Every geometric step is invertible, so ``monai.transforms.Invertd`` maps a
prediction back onto the original image grid (see :mod:`medmonai.engines.segmentation_inference`).

:func:`segmentation_train_transforms` appends MONAI ``SpatialPadd`` + ``RandCropByLabelClassesd`` (patches centred
on each label class in turn, background included: with the default equal ratios 1/C of the patches are centred on
background and the rest on the structures) and an augmentation level of
:func:`medmonai.transforms.augmentation.augmentation_preset` (default ``nnunet``, nnU-Net's augmentation).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.transforms import (
    AsDiscreted,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    RandCropByLabelClassesd,
    SpatialPadd,
)

from medmonai.transforms.augmentation import augmentation_preset
from medmonai.transforms.preprocessing import CheckGeometryd, PlanarAffined, build_preprocessing

__all__ = [
    "nonzero",
    "anisotropic_axis",
    "build_segmentation_preprocessing",
    "segmentation_train_transforms",
    "segmentation_postprocessing",
]


def nonzero(x: torch.Tensor) -> torch.Tensor:
    """``x != 0``: the foreground of ``CropForegroundd`` (nnU-Net crops to the non-zero region).

    A module-level function, unlike a lambda, can be pickled by DataLoader workers.
    """
    return x != 0


def anisotropic_axis(plan: Mapping[str, Any] | None) -> int | None:
    """The coarse axis of an anisotropic 3D plan (``plan["anisotropic"]``: the largest target spacing), else None."""
    if not plan or not plan.get("anisotropic") or not plan.get("target_spacing"):
        return None
    spacing = [float(s) for s in plan["target_spacing"]]
    return int(max(range(len(spacing)), key=lambda a: spacing[a])) if len(spacing) == 3 else None


def build_segmentation_preprocessing(
    plan: Mapping[str, Any] | str | os.PathLike | None = None,
    image_key: str = "image",
    label_key: str = "label",
    crop_foreground: bool = True,
    margin: int = 0,
    **overrides: Any,
) -> Compose:
    """The deterministic preprocessing of a segmentation bundle: load → crop to non-zero → orient → space → normalize.

    Args:
        plan: the preprocessing plan (dict or fingerprint JSON; see :func:`~medmonai.data.fingerprint.ensure_plan`).
        image_key: image key (required in every data dict).
        label_key: label (segmentation) key; optional in a data dict (inference has none).
        crop_foreground: crop image and label to the bounding box of the image's non-zero voxels (a no-op for
            images without a zero background).
        margin: voxels kept around that box.
        overrides: further :func:`~medmonai.transforms.preprocessing.build_preprocessing` arguments
            (``target_spacing``, ``normalization``, ``orientation``...).

    Returns:
        A ``Compose``; the label comes out as ``uint8`` on the image's grid, the image as float32.
    """
    kwargs: dict[str, Any] = {"size_mode": None, "mask_dtype": torch.uint8}
    kwargs.update(overrides)
    base = build_preprocessing([image_key], mask_key=label_key, plan=plan, **kwargs)
    xforms = list(base.transforms)
    if crop_foreground:
        # right after loading and the geometry fixes/checks, on the stored grid (before any resampling)
        pos = max(
            i for i, t in enumerate(xforms) if isinstance(t, EnsureChannelFirstd | PlanarAffined | CheckGeometryd)
        )
        crop = CropForegroundd(
            [image_key, label_key],
            source_key=image_key,
            select_fn=nonzero,
            margin=margin,
            allow_smaller=True,
            allow_missing_keys=True,
        )
        xforms.insert(pos + 1, crop)
    return Compose(xforms)


def segmentation_train_transforms(
    preprocessing: Compose,
    patch_size: Sequence[int],
    num_classes: int,
    num_samples: int = 2,
    ratios: Sequence[float] | None = None,
    augmentation: Sequence[Any] | str = "nnunet",
    image_key: str = "image",
    label_key: str = "label",
    spatial_dims: int | None = None,
) -> Compose:
    """Training chain: preprocessing → pad to the patch → class-balanced patch sampling → augmentation.

    Args:
        preprocessing: the deterministic chain (:func:`build_segmentation_preprocessing`); cached by a
            ``CacheDataset`` up to the first random transform.
        patch_size: patch size (voxels after resampling).
        num_classes: classes including background.
        num_samples: patches per image and epoch.
        ratios: sampling weight per class (index 0 = background); default equal (1/C of the patches per class).
        augmentation: a level of :func:`~medmonai.transforms.augmentation.augmentation_preset` (``nnunet``,
            ``none``, ``light``, ...; mirroring of every axis for ``nnunet``) or a list of transforms.
        image_key: image key.
        label_key: label key.
        spatial_dims: 2 or 3 (default: the patch size length).

    Returns:
        A ``Compose``.
    """
    patch = [int(s) for s in patch_size]
    sd = int(spatial_dims or len(patch))
    if ratios is not None and len(ratios) != num_classes:
        raise ValueError(f"ratios has {len(ratios)} values for {num_classes} classes")
    if isinstance(augmentation, str):
        augmentation = augmentation_preset(augmentation, sd, keys=image_key, label_keys=label_key)
    return Compose(
        [
            *preprocessing.flatten().transforms,
            SpatialPadd([image_key, label_key], spatial_size=patch),
            RandCropByLabelClassesd(
                [image_key, label_key],
                label_key=label_key,
                spatial_size=patch,
                ratios=list(ratios) if ratios is not None else None,
                num_classes=int(num_classes),
                num_samples=int(num_samples),
                warn=False,
            ),
            *augmentation,
        ]
    )


def segmentation_postprocessing(num_classes: int, pred_key: str = "pred", label_key: str = "label") -> Compose:
    """Validation post-processing: arg-max of the logits and one-hot prediction and label (for MONAI's MeanDice)."""
    return Compose(
        [
            AsDiscreted(pred_key, argmax=True, to_onehot=int(num_classes)),
            AsDiscreted(label_key, to_onehot=int(num_classes), allow_missing_keys=True),
        ]
    )
