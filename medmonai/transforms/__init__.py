"""Preprocessing transforms: loading, orientation, spacing, intensity normalization presets, denoising.

Modules:
    io: per-file-type reader dispatch (:class:`LoadMedicalImaged`).
    intensity: normalization presets (CT windows, z-score, percentile, scale255) and denoising.
    preprocessing: :func:`build_preprocessing`, the plan-driven MONAI transform chain.
    augmentation: :func:`augmentation_preset`, classical 2D/3D augmentation at named strength levels.
    compose: :class:`UntrackedCompose`, a training chain whose random part runs without MONAI metadata tracking.
    segmentation: segmentation preprocessing (foreground crop, label), class-balanced patches, augmentation presets.
    registration: optional rigid/affine registration to a reference image (:class:`RegisterToReferenced`).
"""

from __future__ import annotations

from medmonai.transforms.augmentation import augmentation_preset
from medmonai.transforms.compose import UntrackedCompose
from medmonai.transforms.intensity import CT_WINDOWS, denoise_transform, intensity_preset, normalization_transform
from medmonai.transforms.io import LoadMedicalImaged, MedicalImageReader, load_image_transforms
from medmonai.transforms.preprocessing import build_preprocessing, load_plan
from medmonai.transforms.registration import RegisterToReference, RegisterToReferenced, add_subject_reference
from medmonai.transforms.segmentation import build_segmentation_preprocessing, segmentation_train_transforms

__all__ = [
    "CT_WINDOWS",
    "LoadMedicalImaged",
    "MedicalImageReader",
    "RegisterToReference",
    "RegisterToReferenced",
    "UntrackedCompose",
    "add_subject_reference",
    "augmentation_preset",
    "build_preprocessing",
    "build_segmentation_preprocessing",
    "denoise_transform",
    "intensity_preset",
    "load_image_transforms",
    "load_plan",
    "normalization_transform",
    "segmentation_train_transforms",
]
