"""Image loading for every file type medmonai handles, as MONAI ``LoadImaged`` transforms.

The loading transforms and the reader they use live in :mod:`medmonai.data.reader` (the data layer needs them too:
pre-flight check, content hashes, domain statistics, fingerprint); this module re-exports them under their usual
names: :class:`LoadMedicalImaged` always calls :class:`MedicalImageReader` (the explicit per-type dispatcher: NIfTI,
2D images, NumPy, DICOM series) as MONAI's *runtime* reader, so its errors (which name the file) propagate unchanged
and no other reader is ever tried; :func:`load_image_transforms` is the loading chain for images and masks.
"""

from __future__ import annotations

from medmonai.data.reader import (
    DICOM_SUFFIXES,
    MAX_IMAGE_VOXELS,
    NIFTI_SUFFIXES,
    NUMPY_SUFFIXES,
    PIL_SUFFIXES,
    LoadMedicalImaged,
    MedicalImageReader,
    load_image_transforms,
    reader_name_for,
)

__all__ = [
    "NIFTI_SUFFIXES",
    "PIL_SUFFIXES",
    "NUMPY_SUFFIXES",
    "DICOM_SUFFIXES",
    "MAX_IMAGE_VOXELS",
    "MedicalImageReader",
    "LoadMedicalImaged",
    "load_image_transforms",
    "reader_name_for",
]
