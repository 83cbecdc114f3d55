"""Small writers of synthetic test images with exact, known geometry (NIfTI, PNG, DICOM series)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=float)), str(path))
    return path


def write_png(path: Path, pixels: np.ndarray) -> Path:
    """``pixels`` is [row, col] (grey) or [row, col, 3] (RGB), like PIL/Image.fromarray."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels)).save(path)
    return path


def write_dicom_series(
    folder: Path,
    volume: np.ndarray,
    spacing: Sequence[float] = (0.7, 0.8, 2.5),
    origin: Sequence[float] = (-20.0, 30.0, 10.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    iop: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
) -> list[Path]:
    """Write ``volume[i, j, k]`` (stored integers) as a DICOM series (default axial, IOP 1,0,0,0,1,0; LPS).

    Slice k holds ``volume[:, :, k].T`` ([row, col]) at ``origin + k * spacing[2] * normal`` (LPS), with
    ``normal = cross(iop[:3], iop[3:])``; file names do not follow the slice order. Built on
    :func:`tests.data.dicom_factory.write_slice`.
    """
    from pydicom.uid import generate_uid

    from tests.data.dicom_factory import write_slice

    folder = Path(folder)
    series_uid, study_uid = generate_uid(), generate_uid()
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    files = []
    for k in range(volume.shape[2]):
        f = write_slice(
            folder / f"slice{(7 * k) % volume.shape[2]:03d}_{k}.dcm",
            np.ascontiguousarray(volume[:, :, k].T),
            series_uid=series_uid,
            study_uid=study_uid,
            patient_id="P1",
            position=np.asarray(origin, float) + k * float(spacing[2]) * normal,
            orientation=iop,
            pixel_spacing=(float(spacing[1]), float(spacing[0])),  # row spacing (j), column spacing (i)
            slope=slope,
            intercept=intercept,
            instance_number=k + 1,
            thickness=float(spacing[2]),
            modality=modality,
        )
        files.append(f)
    return files


def error_chain(exc: BaseException) -> str:
    """Messages of an exception and its causes (MONAI's Compose wraps errors in "applying transform ...")."""
    out = []
    while exc is not None:
        out.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__
    return " <- ".join(out)
