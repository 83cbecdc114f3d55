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
    ``normal = cross(iop[:3], iop[3:])``.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid = generate_uid(), generate_uid()
    files = []
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientID = "P1"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.Modality = modality
        ds.InstanceNumber = k + 1
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin, float) + k * float(spacing[2]) * normal]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing (j), column spacing (i)
        ds.SliceThickness = float(spacing[2])
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        pixels = np.ascontiguousarray(volume[:, :, k].T.astype(np.int16))
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = pixels.tobytes()
        f = folder / f"slice{(7 * k) % volume.shape[2]:03d}_{k}.dcm"
        ds.save_as(f, enforce_file_format=True)
        files.append(f)
    return files
