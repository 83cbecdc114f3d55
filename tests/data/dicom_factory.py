"""Tiny synthetic DICOM writer for tests: slices with exact, known geometry (pydicom only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def _ds(values: Sequence[float]) -> list[DSfloat]:
    """Decimal strings of at most 16 characters (as DICOM requires), as precise as possible."""
    return [DSfloat(float(v), auto_format=True) for v in values]


def write_slice(
    path: str | Path,
    pixels: np.ndarray,
    *,
    series_uid: str,
    study_uid: str = "1.2.3.4",
    patient_id: str = "PAT-1",
    position: Sequence[float] | None = (0.0, 0.0, 0.0),
    orientation: Sequence[float] | None = AXIAL,
    pixel_spacing: Sequence[float] | None = (1.0, 1.0),
    slope: float | None = None,
    intercept: float | None = None,
    instance_number: int = 1,
    thickness: float | None = 1.0,
    modality: str = "MR",
    with_pixels: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write one single-frame DICOM file; ``pixels`` is ``[row, col]`` (int16) or ``[row, col, 3]`` (uint8 RGB)."""
    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Test^Patient"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.SeriesDescription = "synthetic"
    ds.InstanceNumber = instance_number
    if position is not None:
        ds.ImagePositionPatient = _ds(position)
    if orientation is not None:
        ds.ImageOrientationPatient = _ds(orientation)
    if pixel_spacing is not None:
        ds.PixelSpacing = _ds(pixel_spacing)
    if thickness is not None:
        ds.SliceThickness = float(thickness)
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    if pixels.ndim == 3:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        data = pixels.astype(np.uint8)
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        data = pixels.astype(np.int16)
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    if with_pixels:
        ds.PixelData = data.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class SyntheticSeries:
    """What :func:`write_series` wrote: files in slice (k) order, and the geometry used."""

    folder: Path
    files: list[Path]  # files[k] holds volume[:, :, k]
    series_uid: str
    volume: np.ndarray  # [i, j, k] stored values
    physical: np.ndarray  # [i, j, k] stored * slope + intercept (per slice)
    positions: list[np.ndarray] = field(default_factory=list)
    orientation: tuple[float, ...] = AXIAL
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)


def write_series(
    folder: str | Path,
    shape: tuple[int, int, int] = (5, 4, 6),
    spacing: tuple[float, float, float] = (0.5, 0.8, 2.0),
    orientation: Sequence[float] = AXIAL,
    origin: Sequence[float] = (-10.0, 20.0, 5.0),
    slopes: Sequence[float] | float | None = None,
    intercepts: Sequence[float] | float | None = None,
    series_uid: str | None = None,
    patient_id: str = "PAT-1",
    study_uid: str = "1.2.3.4",
    names: Sequence[str] | None = None,
    shuffle_names: bool = True,
    reverse_instance_numbers: bool = False,
    seed: int = 0,
    positions: Sequence[Sequence[float]] | None = None,
) -> SyntheticSeries:
    """Write a series of ``shape[2]`` slices; slice k at ``origin + k * spacing[2] * normal``.

    ``volume[i, j, k]`` is stored at pixel (row j, column i) of slice k. With ``shuffle_names`` the file names
    are a random permutation of ``im0000.dcm``... (so name order != position order); InstanceNumber follows k,
    or runs backwards with ``reverse_instance_numbers``.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    ni, nj, nk = shape
    volume = rng.integers(-1000, 3000, size=shape).astype(np.int16)
    series_uid = series_uid or generate_uid()
    iop = np.asarray(orientation, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    if names is None:
        perm = rng.permutation(nk) if shuffle_names else np.arange(nk)
        names = [f"im{int(p):04d}.dcm" for p in perm]
    slopes_l = [slopes] * nk if slopes is None or np.isscalar(slopes) else list(slopes)
    inter_l = [intercepts] * nk if intercepts is None or np.isscalar(intercepts) else list(intercepts)
    files, pos_l = [], []
    physical = np.zeros(shape, dtype=np.float64)
    for k in range(nk):
        pos = np.asarray(positions[k], float) if positions is not None else np.asarray(origin) + k * spacing[2] * normal
        pos_l.append(pos)
        f = write_slice(
            folder / names[k],
            volume[:, :, k].T,
            series_uid=series_uid,
            study_uid=study_uid,
            patient_id=patient_id,
            position=pos,
            orientation=iop,
            pixel_spacing=(spacing[1], spacing[0]),
            slope=slopes_l[k],
            intercept=inter_l[k],
            instance_number=(nk - k) if reverse_instance_numbers else (k + 1),
            thickness=spacing[2],
        )
        files.append(f)
        physical[:, :, k] = volume[:, :, k] * (slopes_l[k] if slopes_l[k] is not None else 1.0) + (
            inter_l[k] if inter_l[k] is not None else 0.0
        )
    return SyntheticSeries(folder, files, series_uid, volume, physical, pos_l, tuple(iop), tuple(spacing))
