"""Preprocessing transforms: loading, orientation, spacing, intensity normalization presets, denoising.

Modules:
    io: per-file-type reader dispatch (:class:`LoadMedicalImaged`).
    intensity: normalization presets (CT windows, z-score, percentile, scale255) and denoising.
    preprocessing: :func:`build_preprocessing`, the plan-driven MONAI transform chain.
"""

from __future__ import annotations

from medmonai.transforms.intensity import CT_WINDOWS, denoise_transform, intensity_preset, normalization_transform
from medmonai.transforms.io import LoadMedicalImaged, MedicalImageReader, load_image_transforms
from medmonai.transforms.preprocessing import build_preprocessing, load_plan

__all__ = [
    "CT_WINDOWS",
    "LoadMedicalImaged",
    "MedicalImageReader",
    "build_preprocessing",
    "denoise_transform",
    "intensity_preset",
    "load_image_transforms",
    "load_plan",
    "normalization_transform",
]
