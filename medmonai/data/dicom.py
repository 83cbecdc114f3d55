"""DICOM series discovery, validation and loading as a MONAI image reader.

Geometry follows the project conventions (see ``medmonai.data.datalist``): arrays are ``arr[i, j, k]`` with
``i`` = DICOM column index (direction ``ImageOrientationPatient[0:3]``, step ``PixelSpacing[1]``), ``j`` = row
index (direction ``ImageOrientationPatient[3:6]``, step ``PixelSpacing[0]``) and ``k`` = slice index, slices
sorted by ascending projection of ``ImagePositionPatient`` on the slice normal (never by ``InstanceNumber`` or
file name). The 4x4 ``affine`` maps voxel indices to RAS world millimetres (nibabel/MONAI convention), which is
what MONAI's ``PydicomReader(swap_ij=True, affine_lps_to_ras=True)`` gives for a well-ordered series.

Headers are read without pixel data; every series is validated (consistent orientation, pixel spacing and
matrix size, no duplicate or missing slices, uniform slice spacing) before any pixel is decoded, so a broken
series raises a :class:`DicomError` naming the files and the problem instead of loading a silently wrong volume.

Example::

    from monai.transforms import LoadImage
    from medmonai.data.dicom import DicomSeriesReader, scan_dicom_folder

    series, problems = scan_dicom_folder("/data/dicom", on_error="skip")
    img = LoadImage(image_only=True)(series[0].folder, reader=DicomSeriesReader())

Pass the reader at *call* time (or use :class:`medmonai.transforms.io.LoadMedicalImaged`): MONAI's
``LoadImage(reader=...)`` constructor form swallows the reader's error and falls back to MONAI's default readers,
which would load a broken series without complaint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
import SimpleITK as sitk
from monai.data import ImageReader
from monai.data.utils import affine_to_spacing
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from tqdm.auto import tqdm

from medmonai.data.datalist import Problem, path_problem
from medmonai.utils import PathLike

__all__ = [
    "list_folder_files",
    "DICOM_SUFFIXES",
    "SKIPPED",
    "DicomError",
    "SeriesInfo",
    "DicomSeriesReader",
    "scan_dicom_folder",
    "scan_dicom_files",
    "is_dicom_file",
    "is_error",
]

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
"""File suffixes treated as DICOM without looking at the content."""

SKIPPED = "skipped"
"""``Problem.key`` of files that are left out by design (DICOMDIR, non-image objects, non-DICOM names)."""

# relative tolerances of the series checks
GAP_FACTOR = 1.5  # a step larger than this times the median step is a missing slice
SPACING_TOLERANCE = 0.1  # steps deviating more than this fraction from the median: inconsistent spacing
_ORIENTATION_ATOL = 1e-4
_PIXEL_SPACING_RTOL = 1e-4

# DICOM objects without pixel data that are skipped (reported, not errors)
_NON_IMAGE_MODALITIES = {"SR", "PR", "KO", "DOC", "RTSTRUCT", "RTPLAN", "RTRECORD", "REG", "FID", "AU", "ECG"}
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


class DicomError(ValueError):
    """A DICOM file or series is unusable; the message names the file(s) and the reason.

    Attributes:
        path: the offending file or folder (a string), or a list of them.
    """

    def __init__(self, message: str, path: str | list[str] | None = None) -> None:
        super().__init__(message)
        self.path = path


def is_error(problem: Problem) -> bool:
    """Return True for a real problem, False for a file skipped by design (``problem.key == SKIPPED``)."""
    return problem.key != SKIPPED


def _fmt_files(files: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(str(f) for f in files[:limit])
    return shown + (f" (and {len(files) - limit} more)" if len(files) > limit else "")


@dataclass(eq=False)
class SeriesInfo:
    """Header information and validated geometry of one DICOM series.

    Attributes:
        series_uid: SeriesInstanceUID.
        study_uid: StudyInstanceUID ("" when absent).
        patient_id: PatientID ("" when absent); identifying, never written to metadata.
        modality: Modality ("" when absent).
        files: the slice files, sorted by ascending position along the slice normal.
        n_slices: number of slices (files).
        rows: Rows (number of pixel rows, the ``j`` size).
        cols: Columns (the ``i`` size).
        pixel_spacing: DICOM PixelSpacing ``(row spacing, column spacing)`` in mm (``j`` step, ``i`` step).
        slice_spacing: distance between consecutive slices in mm (norm of the third affine column); for a single
            slice its SliceThickness (or SpacingBetweenSlices, or 1.0).
        orientation: ImageOrientationPatient (6 floats).
        positions: ImagePositionPatient of each slice, in ``files`` order.
        spatial_shape: ``(cols, rows, n_slices)``; a single-slice series loads as a 2D ``(cols, rows)`` image.
        affine: 4x4 voxel-to-RAS matrix.
        folder: the folder holding the files (their common parent).
        samples_per_pixel: 1 (grey) or 3 (RGB).
        series_description: SeriesDescription ("" when absent).
        has_geometry: False for a single 2D image without ImagePositionPatient/ImageOrientationPatient (e.g. a
            radiograph); its affine then only carries the pixel spacing.
    """

    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    files: list[str]
    n_slices: int
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    orientation: tuple[float, ...]
    positions: list[tuple[float, float, float]]
    spatial_shape: tuple[int, int, int]
    affine: np.ndarray
    folder: str
    samples_per_pixel: int = 1
    series_description: str = ""
    has_geometry: bool = True

    @property
    def loaded_shape(self) -> tuple[int, ...]:
        """Spatial shape of the array the reader returns: ``(cols, rows, n)``, or ``(cols, rows)`` for one slice."""
        return (self.cols, self.rows) if self.n_slices == 1 else tuple(self.spatial_shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel spacing in the order of the loaded array's axes (column norms of the affine)."""
        r = len(self.loaded_shape)
        return tuple(float(s) for s in affine_to_spacing(self.affine, r=r))

    def to_entry_metadata(self) -> dict[str, Any]:
        """Return JSON-safe, non-identifying metadata for a datalist entry.

        Keys: ``StudyInstanceUID``, ``SeriesInstanceUID``, ``Modality``, ``n_slices``, ``spacing`` and ``shape``
        (both in loaded-array axis order). Patient name and id are never included.
        """
        return {
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
            "Modality": self.modality,
            "n_slices": int(self.n_slices),
            "spacing": [round(s, 6) for s in self.spacing],
            "shape": [int(s) for s in self.loaded_shape],
        }


# ------------------------------------------------------------------------------------------------ file checks


def _has_dicm_magic(path: PathLike) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_file(path: PathLike) -> bool:
    """Return True for a file with a DICOM suffix (``.dcm``, ``.dicom``, ``.ima``) or the ``DICM`` magic."""
    p = Path(path)
    if not p.is_file():
        return False
    return p.suffix.lower() in DICOM_SUFFIXES or _has_dicm_magic(p)


def _looks_like_dicom_name(path: Path) -> bool:
    """A name that could be a DICOM file: DICOM suffix, no suffix, or a numeric suffix (UID-style names)."""
    suffix = path.suffix.lower()
    return suffix in DICOM_SUFFIXES or suffix == "" or suffix[1:].isdigit()


@dataclass
class _Header:
    path: str
    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    rows: int
    cols: int
    samples: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: np.ndarray | None
    thickness: float | None
    description: str
    rescale: tuple[float, float]


def _floats(ds: Any, keyword: str, n: int, path: str) -> np.ndarray | None:
    """Read a multi-valued numeric tag; None when absent; DicomError when malformed."""
    if keyword not in ds or ds[keyword].value in (None, "", b""):
        return None
    value = ds[keyword].value
    try:
        arr = np.asarray([float(v) for v in (value if isinstance(value, Sequence) else [value])], dtype=float)
    except (TypeError, ValueError) as e:
        raise DicomError(f"{path}: malformed {keyword} {value!r} ({e})", path) from e
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise DicomError(f"{path}: malformed {keyword} {list(value)!r} (expected {n} finite numbers)", path)
    return arr


def _expected_pixel_bytes(ds: Any) -> int | None:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    n = rows * cols * samples * frames
    return (n + 7) // 8 if bits == 1 else n * (bits // 8)


def _pixel_data_problem(ds: Any, file_size: int) -> str | None:
    """Why the native ``PixelData`` of a dataset is shorter than its header says, or None when it is complete.

    Handles both forms pydicom gives: a raw element whose read was deferred (``dcmread(defer_size=...)``: its
    declared ``length`` and offset ``value_tell`` in the file) and a converted ``DataElement`` (the bytes read). Not
    checked: encapsulated (compressed) pixel data and deflated files (their byte counts say nothing about the image).
    """
    if "PixelData" not in ds:
        return None
    try:
        raw = ds.get_item("PixelData", keep_deferred=True)
    except TypeError:  # pragma: no cover - pydicom < 3 has no keep_deferred
        raw = ds.get_item("PixelData")
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    if syntax == "1.2.840.10008.1.2.1.99" or getattr(raw, "is_undefined_length", False):
        return None
    length = getattr(raw, "length", None)
    if length == 0xFFFFFFFF:  # encapsulated
        return None
    expected = _expected_pixel_bytes(ds)
    value = getattr(raw, "value", None)
    if isinstance(value, bytes | bytearray):  # read (converted element, or a raw element read in full)
        present = len(value)
        declared = length if isinstance(length, int) else present
    elif isinstance(length, int):  # deferred: the file must hold `length` bytes after the value's offset
        tell = getattr(raw, "value_tell", None)
        present = length if tell is None else max(0, min(length, file_size - tell))
        declared = length
    else:
        return None
    need = max(declared, expected) if expected is not None else declared
    if present < need:
        return f"corrupt or truncated DICOM file: pixel data has {present} bytes, expected {need}"
    return None


def _read_header(path: str) -> tuple[_Header | None, tuple[str, bool] | None]:
    """Read and check one file's header. Returns (header, None) or (None, (reason, is_error))."""
    p = Path(path)
    kind = path_problem(p)  # before opening: a FIFO would block, a device never end
    if kind is not None and not kind.startswith("file is empty"):
        return None, (kind, True)
    size = p.stat().st_size
    if size == 0:
        return None, ("empty file (0 bytes)", True)
    try:
        # defer_size: large values (the pixel data) are not read, but their length and offset are recorded
        ds = pydicom.dcmread(path, defer_size=1024)
    except InvalidDicomError:
        if not _looks_like_dicom_name(p):
            return None, (f"not a DICOM file (ignored, suffix {p.suffix!r})", False)
        ds = None
        try:
            ds = pydicom.dcmread(path, defer_size=1024, force=True)
        except Exception:  # noqa: BLE001 - any failure means "not DICOM"
            ds = None
        if ds is None or not any(k in ds for k in ("SOPClassUID", "SeriesInstanceUID", "Rows")):
            return None, ("not a DICOM file (no 'DICM' marker and not parseable as DICOM)", True)
    except Exception as e:  # noqa: BLE001 - pydicom raises many types for corrupt files
        return None, (f"corrupt or truncated DICOM file ({type(e).__name__}: {e})", True)

    sop_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    if p.name.upper() == "DICOMDIR" or sop_class == _DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return None, ("DICOMDIR (no image)", False)
    modality = str(ds.get("Modality", "") or "")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if modality.upper() in _NON_IMAGE_MODALITIES:
            return None, (f"DICOM {modality} object without pixel data (no image)", False)
        return None, ("DICOM file without pixel data (not an image object, or the file is truncated)", True)
    frames = ds.get("NumberOfFrames", 1)
    try:
        frames = int(frames or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1:
        return None, (
            f"multi-frame DICOM file (NumberOfFrames={frames}) is not supported; "
            "convert it to single-frame files or read it with SimpleITK/ITKReader",
            True,
        )
    missing = [k for k in ("Rows", "Columns", "SeriesInstanceUID") if k not in ds or ds[k].value in (None, "")]
    if missing:
        return None, (f"missing essential tag(s) {', '.join(missing)}", True)
    truncated = _pixel_data_problem(ds, size)
    if truncated is not None:
        return None, (truncated, True)
    try:
        position = _floats(ds, "ImagePositionPatient", 3, path)
        orientation = _floats(ds, "ImageOrientationPatient", 6, path)
        spacing = _floats(ds, "PixelSpacing", 2, path)
        if spacing is None:
            spacing = _floats(ds, "ImagerPixelSpacing", 2, path)
        thickness = _floats(ds, "SliceThickness", 1, path)
        if thickness is None:
            thickness = _floats(ds, "SpacingBetweenSlices", 1, path)
        slope = _floats(ds, "RescaleSlope", 1, path)
        intercept = _floats(ds, "RescaleIntercept", 1, path)
    except DicomError as e:
        return None, (str(e).split(": ", 1)[-1], True)
    if orientation is not None:
        r, c = orientation[:3], orientation[3:]
        if abs(np.linalg.norm(r) - 1) > 1e-2 or abs(np.linalg.norm(c) - 1) > 1e-2 or abs(np.dot(r, c)) > 1e-2:
            reason = f"invalid ImageOrientationPatient {orientation.tolist()} (not two unit orthogonal vectors)"
            return None, (reason, True)
    if spacing is not None and np.any(spacing <= 0):
        return None, (f"invalid PixelSpacing {spacing.tolist()} (must be positive)", True)
    header = _Header(
        path=path,
        series_uid=str(ds.SeriesInstanceUID),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        patient_id=str(ds.get("PatientID", "") or ""),
        modality=modality,
        rows=int(ds.Rows),
        cols=int(ds.Columns),
        samples=int(ds.get("SamplesPerPixel", 1) or 1),
        position=position,
        orientation=orientation,
        pixel_spacing=spacing,
        thickness=float(thickness[0]) if thickness is not None and thickness[0] > 0 else None,
        description=str(ds.get("SeriesDescription", "") or ""),
        rescale=(float(slope[0]) if slope is not None else 1.0, float(intercept[0]) if intercept is not None else 0.0),
    )
    return header, None


# ---------------------------------------------------------------------------------------------- series checks


_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _lps_affine(iop: np.ndarray, ps: np.ndarray, slice_step: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Affine from voxel ``[i, j, k]`` to LPS mm.

    Columns: IOP row direction * PixelSpacing[1], IOP column direction * PixelSpacing[0], the slice step vector,
    and the first slice's ImagePositionPatient.
    """
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = iop[:3] * ps[1], iop[3:] * ps[0]
    lps[:3, 2], lps[:3, 3] = slice_step, origin
    return lps


def _series_info(
    uid: str,
    first: _Header,
    files: list[str],
    ps: np.ndarray,
    iop: np.ndarray,
    positions: Sequence[np.ndarray],
    lps: np.ndarray,
    slice_spacing: float,
    folder: str,
    has_geometry: bool,
) -> SeriesInfo:
    """The :class:`SeriesInfo` of a validated series of ``len(files)`` slices (``first``: its first header)."""
    return SeriesInfo(
        series_uid=uid,
        study_uid=first.study_uid,
        patient_id=first.patient_id,
        modality=first.modality,
        files=files,
        n_slices=len(files),
        rows=first.rows,
        cols=first.cols,
        pixel_spacing=(float(ps[0]), float(ps[1])),
        slice_spacing=float(slice_spacing),
        orientation=tuple(float(v) for v in iop),
        positions=[tuple(float(v) for v in p) for p in positions],
        spatial_shape=(first.cols, first.rows, len(files)),
        affine=_LPS_TO_RAS @ lps,
        folder=folder,
        samples_per_pixel=first.samples,
        series_description=first.description,
        has_geometry=has_geometry,
    )


def _build_series(uid: str, headers: list[_Header]) -> SeriesInfo:
    """Validate the headers of one series, sort the slices and compute the geometry; DicomError on problems."""
    first = headers[0]
    files = [h.path for h in headers]
    where = f"series {uid}"

    if len(headers) == 1:
        h = first
        ps = h.pixel_spacing if h.pixel_spacing is not None else np.ones(2)
        has_geometry = h.position is not None and h.orientation is not None
        iop = h.orientation if h.orientation is not None else np.array([1.0, 0, 0, 0, 1, 0])
        ipp = h.position if h.position is not None else np.zeros(3)
        thickness = h.thickness or 1.0
        lps = _lps_affine(iop, ps, np.cross(iop[:3], iop[3:]) * thickness, ipp)
        return _series_info(uid, h, files, ps, iop, [ipp], lps, thickness, str(Path(h.path).parent), has_geometry)

    # essential geometry of a multi-slice series
    for tag, attr in (
        ("ImagePositionPatient", "position"),
        ("ImageOrientationPatient", "orientation"),
        ("PixelSpacing", "pixel_spacing"),
    ):
        bad = [h.path for h in headers if getattr(h, attr) is None]
        if bad:
            raise DicomError(f"{where}: missing essential geometry tag {tag} in {_fmt_files(bad)}", bad)
    # consistency inside the series
    for h in headers[1:]:
        if (h.rows, h.cols) != (first.rows, first.cols):
            raise DicomError(
                f"{where}: inconsistent Rows/Columns: {h.path} is {h.rows}x{h.cols} but {first.path} is "
                f"{first.rows}x{first.cols}",
                [first.path, h.path],
            )
        if h.samples != first.samples:
            raise DicomError(
                f"{where}: inconsistent SamplesPerPixel: {h.path} has {h.samples}, {first.path} has {first.samples}",
                [first.path, h.path],
            )
        if not np.allclose(h.orientation, first.orientation, atol=_ORIENTATION_ATOL):
            raise DicomError(
                f"{where}: inconsistent ImageOrientationPatient: {h.path} has {h.orientation.tolist()} but "
                f"{first.path} has {first.orientation.tolist()}",
                [first.path, h.path],
            )
        if not np.allclose(h.pixel_spacing, first.pixel_spacing, rtol=_PIXEL_SPACING_RTOL, atol=0):
            raise DicomError(
                f"{where}: inconsistent PixelSpacing: {h.path} has {h.pixel_spacing.tolist()} but "
                f"{first.path} has {first.pixel_spacing.tolist()}",
                [first.path, h.path],
            )

    iop = first.orientation
    normal = np.cross(iop[:3], iop[3:])
    proj = np.array([float(np.dot(h.position, normal)) for h in headers])
    order = np.argsort(proj, kind="stable")
    headers = [headers[i] for i in order]
    proj = proj[order]
    files = [h.path for h in headers]
    steps = np.diff(proj)
    ps = first.pixel_spacing

    dup_tol = 1e-3 + 1e-2 * float(np.median(steps[steps > 1e-3])) if np.any(steps > 1e-3) else 1e-3
    for i, s in enumerate(steps):
        if s <= dup_tol:
            raise DicomError(
                f"{where}: duplicate slice position: {files[i]} and {files[i + 1]} are both at "
                f"{proj[i]:.4f} mm along the slice normal (ImagePositionPatient {headers[i].position.tolist()} and "
                f"{headers[i + 1].position.tolist()})",
                [files[i], files[i + 1]],
            )
    median = float(np.median(steps))
    ref = median
    if not np.any(steps > GAP_FACTOR * median):
        # few slices: the median may itself include a gap (steps 2, 4 -> median 3); accept the smallest step as
        # the reference when every step is close to a whole multiple of it
        multiples = steps / steps.min()
        if np.all(np.abs(multiples - np.round(multiples)) <= SPACING_TOLERANCE * np.round(multiples)):
            ref = float(np.median(steps[np.round(multiples) == 1]))
    for i, s in enumerate(steps):
        if s > GAP_FACTOR * ref:
            n_missing = max(1, round(s / ref) - 1)
            raise DicomError(
                f"{where}: missing slice(s) between {files[i]} and {files[i + 1]}: they are {s:.4g} mm apart, "
                f"expected {ref:.4g} mm (about {n_missing} slice(s) missing)",
                [files[i], files[i + 1]],
            )
    dev = np.abs(steps - median) / median
    if np.any(dev > SPACING_TOLERANCE):
        i = int(np.argmax(dev))
        raise DicomError(
            f"{where}: inconsistent slice spacing: steps vary from {steps.min():.4g} to {steps.max():.4g} mm "
            f"(median {median:.4g} mm); e.g. {files[i]} -> {files[i + 1]} is {steps[i]:.4g} mm",
            [files[i], files[i + 1]],
        )
    # slices must lie on a straight line (no in-plane shift between slices)
    pos = np.stack([h.position for h in headers])
    t = (proj - proj[0]) / (proj[-1] - proj[0])
    line = pos[0] + t[:, None] * (pos[-1] - pos[0])
    shift = np.linalg.norm(pos - line, axis=1)
    tol = max(0.01, 0.25 * float(np.min(ps)))
    if np.any(shift > tol):
        i = int(np.argmax(shift))
        raise DicomError(
            f"{where}: slice positions are not on a straight line: {files[i]} is shifted by {shift[i]:.4g} mm "
            f"from the line through {files[0]} and {files[-1]}",
            [files[i]],
        )

    n = len(headers)
    lps = _lps_affine(iop, ps, (pos[-1] - pos[0]) / (n - 1), pos[0])
    folders = {str(Path(f).parent) for f in files}
    folder = folders.pop() if len(folders) == 1 else os.path.commonpath(files)
    positions = [h.position for h in headers]
    return _series_info(uid, first, files, ps, iop, positions, lps, np.linalg.norm(lps[:3, 2]), folder, True)


def list_folder_files(folder: Path, recursive: bool) -> list[Path]:
    """Files of ``folder`` (sorted; recursively if asked), without hidden files and ``Thumbs.db``."""
    if recursive:
        out = []
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            out.extend(Path(root) / n for n in sorted(names))
    else:
        out = sorted(p for p in folder.iterdir() if p.is_file())
    # hidden files (.DS_Store, macOS "._" resource forks) are ignored silently
    return [p for p in out if not p.name.startswith(".") and p.name != "Thumbs.db"]


def scan_dicom_files(
    files: Sequence[PathLike],
    on_error: Literal["raise", "skip"] = "raise",
    progress: bool = False,
) -> tuple[list[SeriesInfo], list[Problem]]:
    """Read the headers of the given files, group them by SeriesInstanceUID and validate each series.

    Args:
        files: the files to scan.
        on_error: ``"raise"``: the first bad file or series raises :class:`DicomError`; ``"skip"``: bad files and
            series are left out and reported as problems.
        progress: show a tqdm progress bar.

    Returns:
        ``(series, problems)``: the valid series (sorted by folder, then SeriesInstanceUID) and the problems. Files
        left out by design (DICOMDIR, non-image objects, non-DICOM names) are reported with ``key == SKIPPED``
        in both modes.

    Raises:
        DicomError: with ``on_error="raise"``, for the first bad file or series.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    problems: list[Problem] = []
    groups: dict[str, list[_Header]] = {}
    iterator: Any = [str(f) for f in files]
    if progress:
        iterator = tqdm(iterator, desc="reading DICOM headers", unit="file")
    for path in iterator:
        try:
            header, issue = _read_header(path)
        except OSError as e:
            header, issue = None, (f"cannot read file ({e})", True)
        if issue is not None:
            reason, error = issue
            if error and on_error == "raise":
                raise DicomError(f"{path}: {reason}", path)
            problems.append(Problem(-1, path, reason, "image" if error else SKIPPED))
            continue
        groups.setdefault(header.series_uid, []).append(header)
    series: list[SeriesInfo] = []
    for uid, headers in groups.items():
        try:
            series.append(_build_series(uid, headers))
        except DicomError as e:
            if on_error == "raise":
                raise
            first = e.path[0] if isinstance(e.path, list) and e.path else headers[0].path
            problems.append(Problem(-1, str(first), str(e), "image"))
    # A bad file beside a series may be one of its slices: a lost first or last slice leaves no gap to detect, so in
    # skip mode such a series is left out too rather than loaded possibly incomplete.
    bad_dirs: dict[str, str] = {}
    for p in problems:
        if p.key != SKIPPED:
            bad_dirs.setdefault(os.path.dirname(os.path.abspath(p.file)), p.file)
    kept = []
    for s in series:
        dirs = {os.path.dirname(os.path.abspath(str(f))) for f in s.files}
        suspect = next((bad_dirs[d] for d in sorted(dirs) if d in bad_dirs), None)
        if suspect is None:
            kept.append(s)
        else:
            problems.append(
                Problem(
                    -1,
                    str(s.files[0]),
                    f"series {s.series_uid}: skipped because its folder also holds a bad file ({suspect}) that may be "
                    "one of its slices",
                    "image",
                )
            )
    series = sorted(kept, key=lambda s: (s.folder, s.series_uid))
    return series, problems


def scan_dicom_folder(
    folder: PathLike,
    recursive: bool = True,
    on_error: Literal["raise", "skip"] = "raise",
    progress: bool = False,
) -> tuple[list[SeriesInfo], list[Problem]]:
    """Find and validate the DICOM series in a folder, reading headers only.

    Files are grouped by SeriesInstanceUID (a series may span sub-folders) and sorted by the projection of
    ImagePositionPatient on the slice normal. Detected problems: unreadable, empty, corrupt or truncated files,
    non-DICOM files with DICOM-like names, DICOM files without pixel data, multi-frame files (not supported),
    missing essential tags (Rows, Columns, SeriesInstanceUID; for multi-slice series ImagePositionPatient,
    ImageOrientationPatient, PixelSpacing), inconsistent ImageOrientationPatient / PixelSpacing / Rows / Columns
    inside a series, duplicate slice positions, missing slices (a step larger than 1.5x the median), non-uniform
    slice spacing (steps deviating more than 10 % from the median) and slices not on a straight line.
    Hidden files are ignored; DICOMDIR, non-image DICOM objects (SR, PR, ...) and files with non-DICOM suffixes
    that are not DICOM are reported as skipped (``key == SKIPPED``), never as errors.

    Args:
        folder: the folder to scan.
        recursive: also scan sub-folders.
        on_error: ``"raise"`` or ``"skip"`` (see :func:`scan_dicom_files`).
        progress: show a progress bar.

    Returns:
        ``(series, problems)``.

    Raises:
        DicomError: if the folder does not exist or holds no files, or (``on_error="raise"``) for the first bad
            file or series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"{folder}: DICOM folder does not exist or is not a folder", str(folder))
    files = list_folder_files(folder, recursive)
    if not files:
        raise DicomError(f"{folder}: no files found{' (searched sub-folders too)' if recursive else ''}", str(folder))
    return scan_dicom_files(files, on_error=on_error, progress=progress)


# ---------------------------------------------------------------------------------------------------- reader


def _decode_slice(path: str, samples: int) -> np.ndarray:
    """Decode one file's pixels to float32 physical values ``[row, col(, sample)]``.

    pydicom decodes native and RLE data and applies the Modality LUT; compressed transfer syntaxes pydicom has no
    decoder for (JPEG, JPEG 2000, ... without pylibjpeg/gdcm) are decoded by SimpleITK (GDCM), which applies
    the file's own RescaleSlope/Intercept.
    """
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # noqa: BLE001
        raise DicomError(f"{path}: cannot read DICOM file ({type(e).__name__}: {e})", path) from e
    truncated = _pixel_data_problem(ds, os.path.getsize(path))
    if truncated is not None:  # before any decoder (SimpleITK would only say it has no reader for the file)
        raise DicomError(f"{path}: {truncated}", path)
    try:
        arr = ds.pixel_array
    except Exception as e_pydicom:  # noqa: BLE001 - no pydicom decoder: try GDCM through SimpleITK
        try:
            img = sitk.ReadImage(path, sitk.sitkVectorFloat32 if samples > 1 else sitk.sitkFloat32)
            arr = sitk.GetArrayFromImage(img)
        except Exception as e_sitk:  # noqa: BLE001
            raise DicomError(
                f"{path}: cannot decode pixel data (transfer syntax {ds.file_meta.get('TransferSyntaxUID', '?')}): "
                f"pydicom: {e_pydicom}; SimpleITK: {e_sitk}",
                path,
            ) from e_sitk
        if arr.ndim == (4 if samples > 1 else 3) and arr.shape[0] == 1:
            arr = arr[0]
        arr = arr.astype(np.float32, copy=False)
    else:
        if samples == 1:  # RescaleSlope/RescaleIntercept or Modality LUT of this slice
            arr = apply_modality_lut(arr, ds)
        arr = np.asarray(arr).astype(np.float32, copy=False)
    expected = (int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ())
    if arr.shape != expected:
        raise DicomError(f"{path}: decoded pixel array has shape {arr.shape}, expected {expected}", path)
    return arr


def padding_metadata(path: str) -> dict[str, float]:
    """``PixelPaddingValue`` / ``PixelPaddingRangeLimit`` of a file in physical units (after the rescale), if given.

    The tags are stored values (before RescaleSlope/RescaleIntercept); the returned ones are comparable with the
    decoded pixels. Empty dict when the file has no padding value (or cannot be read).
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - the pixels were decoded already; padding is optional metadata
        return {}
    if "PixelPaddingValue" not in ds or ds.PixelPaddingValue is None:
        return {}
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    out = {"PixelPaddingValue": float(ds.PixelPaddingValue) * slope + intercept}
    if ds.get("PixelPaddingRangeLimit") is not None:
        out["PixelPaddingRangeLimit"] = float(ds.PixelPaddingRangeLimit) * slope + intercept
    return out


@dataclass
class _DicomVolume:
    """What :meth:`DicomSeriesReader.read` returns: the validated series and its decoded pixels."""

    series: SeriesInfo
    array: np.ndarray  # [i, j(, k)(, c)]


class DicomSeriesReader(ImageReader):
    """MONAI image reader for one validated DICOM series (a folder, a list of its files, or a single file).

    Slices are sorted by position along the slice normal and the series is validated (see
    :func:`scan_dicom_folder`) before pixels are decoded; problems raise :class:`DicomError`. Pixel values are
    float32 physical values (stored value * RescaleSlope + RescaleIntercept, per slice). The array is
    ``[i, j, k]`` (``[i, j]`` for a single slice/2D file, channel-last for RGB) with a RAS affine, matching
    MONAI's ``PydicomReader`` for well-ordered series.

    Use it as ``LoadImage(...)(path, reader=DicomSeriesReader())`` or through
    :class:`medmonai.transforms.io.LoadMedicalImaged`. Do not pass it to the ``LoadImage(reader=...)`` constructor:
    MONAI then swallows its errors and falls back to its default readers, which load broken series silently.

    Args:
        series_uid: read this SeriesInstanceUID when a folder holds several series.
        recursive: also search sub-folders of a folder.
        channel_dim: overrides ``original_channel_dim`` in the metadata (default: NaN for grey, -1 for RGB).
    """

    def __init__(self, series_uid: str | None = None, recursive: bool = False, channel_dim: int | None = None):
        super().__init__()
        self.series_uid = series_uid
        self.recursive = recursive
        self.channel_dim = channel_dim

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Return True for a folder, a DICOM file (suffix or ``DICM`` magic) or a list of DICOM files."""
        names = [filename] if isinstance(filename, str | os.PathLike) else list(filename)
        if not names:
            return False
        if len(names) == 1:
            p = Path(names[0])
            return p.is_dir() or p.suffix.lower() in DICOM_SUFFIXES or _has_dicm_magic(p)
        return all(Path(n).suffix.lower() in DICOM_SUFFIXES or _has_dicm_magic(n) for n in names)

    def _find_series(self, data: Sequence[PathLike] | PathLike) -> SeriesInfo:
        names = [str(data)] if isinstance(data, str | os.PathLike) else [str(d) for d in data]
        if not names:
            raise DicomError("DicomSeriesReader: no file given", None)
        dirs = [n for n in names if Path(n).is_dir()]
        if dirs and len(names) > 1:
            raise DicomError(f"DicomSeriesReader: pass one folder or a list of files, got {_fmt_files(names)}", names)
        for n in names:
            if not Path(n).exists():
                raise DicomError(f"{n}: file does not exist", n)
        if dirs:
            folder = Path(dirs[0])
            files = list_folder_files(folder, self.recursive)
            if not files:
                raise DicomError(f"{folder}: no files found in DICOM folder", str(folder))
            series, problems = scan_dicom_files(files, on_error="skip")
            # a bad file may be a slice of the wanted series: file-level errors always raise
            file_errors = [p for p in problems if is_error(p) and not p.reason.startswith("series ")]
            series_errors = [p for p in problems if is_error(p) and p.reason.startswith("series ")]
            if self.series_uid is not None:
                series_errors = [p for p in series_errors if p.reason.startswith(f"series {self.series_uid}:")]
            errors = file_errors + series_errors
            if errors:
                lines = "\n".join(f"  {p.file}: {p.reason}" for p in errors)
                raise DicomError(f"{folder}: {len(errors)} DICOM problem(s):\n{lines}", [p.file for p in errors])
            where = str(folder)
        else:
            series, problems = scan_dicom_files(names, on_error="raise")
            where = _fmt_files(names)
            if not series:
                reasons = "; ".join(f"{p.file}: {p.reason}" for p in problems)
                raise DicomError(f"{where}: no DICOM image found ({reasons})", names)
        if self.series_uid is not None:
            chosen = [s for s in series if s.series_uid == self.series_uid]
            if not chosen:
                found = ", ".join(s.series_uid for s in series) or "none"
                raise DicomError(f"{where}: series {self.series_uid} not found (series found: {found})", where)
            return chosen[0]
        if len(series) != 1:
            found = "; ".join(
                f"{s.series_uid} ({s.n_slices} file(s){', ' + s.series_description if s.series_description else ''})"
                for s in series
            )
            raise DicomError(
                f"{where}: expected exactly one DICOM series, found {len(series)}: {found or 'none'}; pass "
                "series_uid= to DicomSeriesReader or the series' file list",
                where,
            )
        return series[0]

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> _DicomVolume:
        """Validate one series and decode its pixels in position order.

        Args:
            data: a folder (holding exactly one series unless ``series_uid`` was given), the files of one
                series, or a single DICOM file.
            kwargs: ignored (MONAI reader API).

        Returns:
            An object for :meth:`get_data`.

        Raises:
            DicomError: for any problem with the files or the series.
        """
        s = self._find_series(data)
        slices = [_decode_slice(f, s.samples_per_pixel) for f in s.files]
        # [row, col(, c)] -> [i = col, j = row(, c)]
        slices = [np.swapaxes(a, 0, 1) for a in slices]
        array = slices[0] if s.n_slices == 1 else np.stack(slices, axis=2)
        return _DicomVolume(series=s, array=np.ascontiguousarray(array, dtype=np.float32))

    def get_data(self, img: _DicomVolume) -> tuple[np.ndarray, dict]:
        """Return ``(array, meta)`` with MONAI's meta keys (affine, original_affine, spatial_shape, spacing...).

        Args:
            img: the object returned by :meth:`read`.

        Returns:
            The float32 array ``[i, j, k]`` (``[i, j]`` for one slice, channel-last for RGB) and its metadata:
            ``affine``, ``original_affine`` (4x4 RAS), ``spatial_shape``, ``spacing``, ``original_channel_dim``,
            ``space`` ("RAS"), ``Modality``, ``SeriesInstanceUID``, ``StudyInstanceUID``, ``PixelPaddingValue`` and
            ``PixelPaddingRangeLimit`` (physical units, NaN when the DICOM gives none).
        """
        s = img.series
        shape = s.loaded_shape
        if self.channel_dim is not None:
            channel_dim: float | int = self.channel_dim
        else:
            channel_dim = -1 if s.samples_per_pixel > 1 else float("nan")
        meta: dict[str, Any] = {
            "affine": s.affine.copy(),
            "original_affine": s.affine.copy(),
            "spatial_shape": np.asarray(shape),
            "spacing": affine_to_spacing(s.affine, r=len(shape)),
            "original_channel_dim": channel_dim,
            "space": "RAS",
            "Modality": s.modality,
            "SeriesInstanceUID": s.series_uid,
            "StudyInstanceUID": s.study_uid,
        }
        # PixelPaddingValue(/RangeLimit) in physical units, NaN when absent (same keys for every series: collation)
        padding = padding_metadata(s.files[0]) if s.samples_per_pixel == 1 else {}
        meta["PixelPaddingValue"] = padding.get("PixelPaddingValue", float("nan"))
        meta["PixelPaddingRangeLimit"] = padding.get("PixelPaddingRangeLimit", float("nan"))
        return img.array, meta
