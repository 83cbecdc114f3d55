"""Deterministic synthetic lesion phantoms: the embedded default data of medmonai.

Every object is defined in PHYSICAL world space (mm, DICOM LPS patient coordinates) and sampled on each
subject's own voxel grid through its affine, so resampling two subjects to a common spacing gives consistent
objects. A data set has ``n_subjects`` subjects (patients); each subject has one class (patient-level
diagnosis) and several images (different lesions of the same patient) that share the subject's voxel spacing,
orientation, intensity scale (CT-like Hounsfield units stored as int16 with RescaleSlope/Intercept, MR-like
arbitrary units, or 8-bit), noise level and background texture statistics.

Classes (by position in ``PhantomConfig.classes``):

* class 0 ("benign"): smooth round/ovoid lesion, sharp margin, homogeneous interior;
* class 1 ("malignant"): irregular, lobulated, spiculated lesion with a blurred, ill-defined margin and a
  heterogeneous interior, on average somewhat larger;
* class 2 (optional, e.g. "cyst"): round lesion with a bright thin rim and a dark fluid centre.

The appearance of each lesion is driven by a continuous "severity" (and, with three classes, a "cystic"
score) drawn from overlapping class-dependent distributions (with a subject-level random effect), so the
classes overlap: ``difficulty`` (0..1) controls how much. Lesion size, position, elongation, contrast and the
noise level vary independently of the class. With the default config (``difficulty=0.5``) a simple baseline is
far from 100 % accuracy: see ``docs/benchmarks.md`` (``python benchmarks/phantom_baseline.py``).

The lesion shape (and so the mask) is an exact function of world coordinates. The background texture and the
lesion's interior heterogeneity are Gaussian random fields with correlation lengths in mm (the same physical
scale on every grid; each image has its own realisation).

Geometry conventions (shared with the DICOM reader and the loaders): arrays are ``arr[i, j, k]`` (2D:
``arr[i, j]``) with a 4x4 RAS ``affine`` (nibabel convention). In DICOM, ``i`` is the column index (direction
``ImageOrientationPatient[0:3]``, step ``PixelSpacing[1]``), ``j`` the row index (``IOP[3:6]``, step
``PixelSpacing[0]``) and ``k`` the slice index along ``cross(IOP[0:3], IOP[3:6])``, so
``arr[:, :, k] == pixel_array_of_slice_k.T`` and ``affine_ras = diag(-1, -1, 1, 1) @ affine_lps``.
2D images lie in the axial plane z = 0; the third affine column is the plane normal times a nominal 1 mm
(DICOM SliceThickness). Spacings and positions are multiples of 1/128 mm so that axis-aligned affines are exact
in every format (float32 NIfTI headers, DICOM decimal strings).

Files written by :func:`generate_phantom_dataset` (``out_dir``)::

    nifti/{case_id}.nii.gz, nifti/{case_id}_seg.nii.gz      # stored integers + scl_slope/scl_inter
    dicom/{subject}/{case_id}/{SOPInstanceUID}.dcm          # 3D: one file per slice (names do not give order)
    dicom/{subject}/{case_id}.dcm                           # 2D: one single-frame file per image
    dicom_masks/{subject}/{case_id}_seg.nii.gz              # mask of the DICOM image (same RAS geometry)
    png/{case_id}.png, png/{case_id}_seg.png                # 2D only, pixel rows = j (array saved as arr.T)
    datalist_{fmt}.json, datalist.json, phantom_truth.json

Example::

    from medmonai.data.phantoms import PhantomConfig, generate_phantom_dataset

    paths = generate_phantom_dataset("phantom3d", PhantomConfig(spatial_dims=3))
    print(paths["datalist"])
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds
from scipy.special import erf, expit
from tqdm.auto import tqdm

from medmonai.data.datalist import make_datalist, write_datalist
from medmonai.utils import PathLike, atomic_write, atomic_write_json

__all__ = [
    "INTENSITY_SCALES",
    "ORIENTATIONS_3D",
    "ORIENTATIONS_2D",
    "FORMATS",
    "PhantomConfig",
    "PhantomCase",
    "class_counts",
    "generate_cases",
    "dicom_datasets",
    "png_pixels",
    "write_case_nifti",
    "write_case_dicom",
    "write_case_png",
    "generate_phantom_dataset",
]

#: intensity scales a subject can get: CT-like HU, MR-like arbitrary units, plain 8-bit.
INTENSITY_SCALES: tuple[str, ...] = ("CT", "MR", "8bit")
#: 3D orientations: name -> LPS direction cosines of (i = DICOM row direction, j = column direction).
ORIENTATIONS_3D: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}
_LPS_LETTERS: dict[str, tuple[float, float, float]] = {
    "L": (1.0, 0.0, 0.0),
    "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0),
    "A": (0.0, -1.0, 0.0),
}
#: 2D orientations (flips/transpositions in the axial plane): "XY" = the patient direction of increasing i
#: then of increasing j ("LP" is the standard radiological axial view).
ORIENTATIONS_2D: tuple[str, ...] = ("LP", "RP", "LA", "RA", "PL", "PR", "AL", "AR")
#: file formats :func:`generate_phantom_dataset` can write.
FORMATS: tuple[str, ...] = ("nifti", "dicom", "png")

_DICOM_MODALITY = {"CT": "CT", "MR": "MR", "8bit": "OT"}
_SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "8bit": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
}
_STORED_DTYPE = {"CT": np.dtype("<i2"), "MR": np.dtype("<u2"), "8bit": np.dtype("u1")}
_MM_GRID = 128  # geometry (spacing, positions) is quantised to 1/128 mm, see _grid_mm
_SLICE_THICKNESS_2D = 1.0  # mm, nominal thickness of a 2D image (third affine column)

# appearance model (canonical tissue units "t": background tissue ~ 0, lesion contrast ~ +1)
_FLUID_T = -0.8  # cyst fluid (darker than tissue)


def _as_range(value: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"PhantomConfig.{name} must be a (min, max) pair of numbers, got {value!r}") from e
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"PhantomConfig.{name} must satisfy min <= max (finite), got {value!r}")
    return lo, hi


@dataclass
class PhantomConfig:
    """All knobs of the phantom generator (``None`` fields get a default that depends on ``spatial_dims``).

    Attributes:
        spatial_dims: 2 or 3.
        n_subjects: number of subjects (patients); at least the number of classes.
        images_per_subject: images (lesions) per subject: an int, or an inclusive (min, max) range drawn per
            subject.
        classes: 2 or 3 class names; class 0 = smooth round (benign), 1 = irregular/spiculated (malignant),
            2 = cyst (bright rim, dark fluid centre).
        class_ratio: relative class frequencies of the subjects (normalised), e.g. ``(0.75, 0.25)``;
            ``None`` = balanced. Subjects are assigned deterministically to match it (every class gets >= 1).
        difficulty: 0 (classes well separated) .. 1 (class appearance distributions almost identical).
        fov_mm: field of view (mm) along each axis; default 48 (3D) / 64 (2D). Grid size per axis is
            ``round(fov_mm / spacing)``.
        inplane_spacing_mm: (min, max) in-plane pixel spacing, drawn per subject; default (0.75, 1.5) (3D),
            (0.7, 1.0) (2D).
        slice_spacing_mm: (min, max) slice spacing = slice thickness for 3D, drawn per subject.
        orientations: orientation names drawn per subject: 3D ``axial``/``coronal``/``sagittal``; 2D the
            flip/transpose codes of :data:`ORIENTATIONS_2D`. Default: all.
        oblique_max_deg: 3D only: maximum random tilt (degrees) of the slice plane; 0 = exactly axis-aligned.
        intensity_scales: intensity scales drawn per subject, from :data:`INTENSITY_SCALES`.
        ct_rescale_slopes: RescaleSlope values drawn per CT subject (intercept is -1024).
        noise_range: (min, max) noise standard deviation drawn per subject, relative to the typical lesion
            contrast (1.0 = noise as strong as the lesion).
        lesion_radius_frac: (min, max) lesion radius as a fraction of ``fov_mm``.
        body: draw a body outline (elliptic cylinder along the patient axis, cutting the FOV corners) with air
            outside it. Off by default: the FOV is then a lesion-centred crop inside tissue (with air in the image,
            per-image z-scoring is dominated by the air/tissue edge).
        test_fraction: fraction of subjects (class-stratified) put in a held-out ``test`` split; 0 = none.
        seed: random seed; everything (arrays, files, DICOM UIDs) is a deterministic function of the config.
        name: data set name in the datalist (default ``phantom2d``/``phantom3d``).
    """

    spatial_dims: int = 3
    n_subjects: int = 24
    images_per_subject: int | tuple[int, int] = (1, 3)
    classes: tuple[str, ...] = ("benign", "malignant")
    class_ratio: tuple[float, ...] | None = None
    difficulty: float = 0.5
    fov_mm: float | None = None
    inplane_spacing_mm: tuple[float, float] | None = None
    slice_spacing_mm: tuple[float, float] = (1.0, 3.0)
    orientations: tuple[str, ...] | None = None
    oblique_max_deg: float = 0.0
    intensity_scales: tuple[str, ...] = INTENSITY_SCALES
    ct_rescale_slopes: tuple[float, ...] = (1.0, 0.5)
    noise_range: tuple[float, float] = (0.05, 0.3)
    lesion_radius_frac: tuple[float, float] = (0.1, 0.2)
    body: bool = False
    test_fraction: float = 0.0
    seed: int = 0
    name: str = ""

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3) or isinstance(self.spatial_dims, bool):
            raise ValueError(f"PhantomConfig.spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        d3 = self.spatial_dims == 3
        if self.fov_mm is None:
            self.fov_mm = 48.0 if d3 else 64.0
        if self.inplane_spacing_mm is None:
            self.inplane_spacing_mm = (0.75, 1.5) if d3 else (0.7, 1.0)
        if self.orientations is None:
            self.orientations = tuple(ORIENTATIONS_3D) if d3 else ORIENTATIONS_2D
        if not self.name:
            self.name = f"phantom{self.spatial_dims}d"
        # normalise sequences (e.g. after a JSON round trip)
        self.classes = tuple(str(c) for c in self.classes)
        self.orientations = tuple(str(o) for o in self.orientations)
        self.intensity_scales = tuple(str(m) for m in self.intensity_scales)
        self.ct_rescale_slopes = tuple(float(s) for s in self.ct_rescale_slopes)
        if self.class_ratio is not None:
            self.class_ratio = tuple(float(r) for r in self.class_ratio)
        if isinstance(self.images_per_subject, list):
            self.images_per_subject = tuple(self.images_per_subject)  # type: ignore[assignment]
        for name in ("inplane_spacing_mm", "slice_spacing_mm", "noise_range", "lesion_radius_frac"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        self.validate()

    @classmethod
    def small(cls, spatial_dims: int = 3, **overrides: Any) -> PhantomConfig:
        """A tiny, fast preset for tests: 6 subjects, 1-2 images each, small grids (3D 16-32 voxels per axis).

        Args:
            spatial_dims: 2 or 3.
            overrides: any other field.

        Returns:
            The config.
        """
        base: dict[str, Any] = {"spatial_dims": spatial_dims, "n_subjects": 6, "images_per_subject": (1, 2)}
        if spatial_dims == 3:
            base.update(fov_mm=32.0, inplane_spacing_mm=(1.0, 2.0), slice_spacing_mm=(2.0, 4.0))
        else:
            base.update(fov_mm=48.0, inplane_spacing_mm=(0.75, 1.5))
        base.update(overrides)
        return cls(**base)

    def validate(self) -> None:
        """Check every field; raise ``ValueError`` naming the field and the problem."""
        d3 = self.spatial_dims == 3
        if len(self.classes) not in (2, 3) or len(set(self.classes)) != len(self.classes) or not all(self.classes):
            raise ValueError(f"PhantomConfig.classes must be 2 or 3 distinct non-empty names, got {self.classes!r}")
        if isinstance(self.n_subjects, bool) or not isinstance(self.n_subjects, int | np.integer):
            raise ValueError(f"PhantomConfig.n_subjects must be an int, got {self.n_subjects!r}")
        if self.n_subjects < len(self.classes):
            raise ValueError(
                f"PhantomConfig.n_subjects={self.n_subjects} must be >= the number of classes ({len(self.classes)})"
            )
        lo_hi = self.images_range
        if lo_hi[0] < 1 or lo_hi[0] > lo_hi[1]:
            raise ValueError(
                f"PhantomConfig.images_per_subject must be an int >= 1 or a (min, max) range with 1 <= min <= max, "
                f"got {self.images_per_subject!r}"
            )
        if self.class_ratio is not None:
            r = self.class_ratio
            if len(r) != len(self.classes) or not all(math.isfinite(x) and x > 0 for x in r):
                raise ValueError(
                    f"PhantomConfig.class_ratio must have one positive value per class ({len(self.classes)}), got {r!r}"
                )
        if not (isinstance(self.difficulty, int | float) and 0.0 <= self.difficulty <= 1.0):
            raise ValueError(f"PhantomConfig.difficulty must be in [0, 1], got {self.difficulty!r}")
        if not (isinstance(self.fov_mm, int | float) and math.isfinite(self.fov_mm) and self.fov_mm > 0):
            raise ValueError(f"PhantomConfig.fov_mm must be a positive number, got {self.fov_mm!r}")
        ranges = [("inplane_spacing_mm", self.inplane_spacing_mm)]
        if d3:
            ranges.append(("slice_spacing_mm", self.slice_spacing_mm))
        for name, value in ranges:
            lo, hi = _as_range(value, name)
            if lo <= 0:
                raise ValueError(f"PhantomConfig.{name} must be positive, got {value!r}")
            if self.fov_mm / hi < 4:
                raise ValueError(
                    f"PhantomConfig.{name}={value!r} is too coarse for fov_mm={self.fov_mm}: "
                    "fewer than 4 voxels per axis"
                )
            if self.fov_mm / lo > 512:
                raise ValueError(f"PhantomConfig.{name}={value!r} gives more than 512 voxels per axis")
        allowed = tuple(ORIENTATIONS_3D) if d3 else ORIENTATIONS_2D
        bad = [o for o in self.orientations if o not in allowed]
        if not self.orientations or bad:
            raise ValueError(
                f"PhantomConfig.orientations must be a non-empty subset of {allowed} for {self.spatial_dims}D, "
                f"got {self.orientations!r}"
            )
        if not (isinstance(self.oblique_max_deg, int | float) and 0 <= self.oblique_max_deg <= 45):
            raise ValueError(f"PhantomConfig.oblique_max_deg must be in [0, 45], got {self.oblique_max_deg!r}")
        if self.oblique_max_deg and not d3:
            raise ValueError("PhantomConfig.oblique_max_deg is only supported for spatial_dims=3")
        bad = [m for m in self.intensity_scales if m not in INTENSITY_SCALES]
        if not self.intensity_scales or bad:
            raise ValueError(
                f"PhantomConfig.intensity_scales must be a non-empty subset of {INTENSITY_SCALES}, "
                f"got {self.intensity_scales!r}"
            )
        if not self.ct_rescale_slopes or not all(0 < s <= 16 for s in self.ct_rescale_slopes):
            raise ValueError(
                f"PhantomConfig.ct_rescale_slopes must be positive values <= 16, got {self.ct_rescale_slopes!r}"
            )
        lo, hi = _as_range(self.noise_range, "noise_range")
        if lo < 0:
            raise ValueError(f"PhantomConfig.noise_range must be >= 0, got {self.noise_range!r}")
        lo, hi = _as_range(self.lesion_radius_frac, "lesion_radius_frac")
        if lo <= 0 or hi > 0.3:
            raise ValueError(f"PhantomConfig.lesion_radius_frac must be in (0, 0.3], got {self.lesion_radius_frac!r}")
        if not (isinstance(self.test_fraction, int | float) and 0.0 <= self.test_fraction < 1.0):
            raise ValueError(f"PhantomConfig.test_fraction must be in [0, 1), got {self.test_fraction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise ValueError(f"PhantomConfig.seed must be a non-negative int, got {self.seed!r}")

    @property
    def images_range(self) -> tuple[int, int]:
        """Inclusive (min, max) number of images per subject."""
        ips = self.images_per_subject
        if isinstance(ips, bool):
            raise ValueError(f"PhantomConfig.images_per_subject must be an int or a (min, max) pair, got {ips!r}")
        if isinstance(ips, int | np.integer):
            return int(ips), int(ips)
        try:
            lo, hi = ips
            if isinstance(lo, bool) or isinstance(hi, bool) or int(lo) != lo or int(hi) != hi:
                raise TypeError
            return int(lo), int(hi)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"PhantomConfig.images_per_subject must be an int or a (min, max) pair of ints, got {ips!r}"
            ) from e

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-serialisable dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhantomConfig:
        """Build a config from :meth:`to_dict` output (unknown keys raise ``ValueError``)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown PhantomConfig field(s) {unknown}; known: {sorted(names)}")
        return cls(**data)

    def fingerprint(self) -> str:
        """Short stable hash of the config (used in DICOM UIDs so that different data sets never share UIDs)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class PhantomCase:
    """One generated image with its ground truth (all arrays in MONAI/nibabel ``arr[i, j(, k)]`` order).

    Attributes:
        subject: subject (patient) id, e.g. ``sub-003``.
        case_id: image id, e.g. ``sub-003_img-01`` (unique in the data set).
        label: class index.
        class_name: class name.
        image: float32 physical values (HU for CT), exactly ``stored * rescale_slope + rescale_intercept``.
        stored: the integer array written to the files (int16 CT, uint16 MR, uint8 8-bit).
        mask: uint8 segmentation, 1 = lesion, 0 = background.
        affine: 4x4 voxel -> RAS world (mm) matrix.
        spacing: voxel spacing (mm) per array axis (column norms of ``affine[:3, :3]``).
        intensity: intensity scale, one of :data:`INTENSITY_SCALES`.
        modality: DICOM Modality: ``CT``, ``MR`` or ``OT`` (8-bit).
        rescale_slope: DICOM RescaleSlope / NIfTI scl_slope.
        rescale_intercept: DICOM RescaleIntercept / NIfTI scl_inter.
        orientation: orientation name (3D: axial/coronal/sagittal; 2D: a code of :data:`ORIENTATIONS_2D`).
        oblique_deg: tilt of the slice plane away from ``orientation`` (degrees, 3D only).
        noise_sigma: noise standard deviation of the subject (relative to the typical lesion contrast).
        window_center: display window centre (physical units), also written to DICOM.
        window_width: display window width.
        split: ``training`` or ``test``.
        subject_index: subject number.
        image_index: image number within the subject.
        study_uid: StudyInstanceUID (one per subject).
        series_uid: SeriesInstanceUID (one per image).
        frame_of_reference_uid: FrameOfReferenceUID (one per subject).
        sop_instance_uids: SOPInstanceUID of each slice (``k`` order; one for 2D).
        series_number: DICOM SeriesNumber.
        study_date: DICOM StudyDate (YYYYMMDD).
        lesion: lesion ground truth (severity, cystic score, radius, centre in LPS mm, spikes, margin blur...).
    """

    subject: str
    case_id: str
    label: int
    class_name: str
    image: np.ndarray
    stored: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]
    intensity: str
    modality: str
    rescale_slope: float
    rescale_intercept: float
    orientation: str
    oblique_deg: float
    noise_sigma: float
    window_center: float
    window_width: float
    split: str
    subject_index: int
    image_index: int
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: tuple[str, ...]
    series_number: int
    study_date: str
    lesion: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return self.image.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape ``(I, J[, K])``."""
        return tuple(int(s) for s in self.image.shape)

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 voxel -> LPS (DICOM patient) world matrix, ``diag(-1, -1, 1, 1) @ affine``."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine

    @property
    def image_orientation_patient(self) -> list[float]:
        """DICOM ImageOrientationPatient: direction cosines of increasing ``i`` then of increasing ``j``."""
        a = self.affine_lps
        row = a[:3, 0] / np.linalg.norm(a[:3, 0])
        col = a[:3, 1] / np.linalg.norm(a[:3, 1])
        return [float(v) for v in (*row, *col)]

    @property
    def pixel_spacing(self) -> list[float]:
        """DICOM PixelSpacing ``[row spacing (j step), column spacing (i step)]``."""
        return [float(self.spacing[1]), float(self.spacing[0])]

    @property
    def slice_thickness(self) -> float:
        """Slice thickness = spacing between slices (3D), nominal 1 mm for 2D."""
        return float(self.spacing[2]) if self.spatial_dims == 3 else _SLICE_THICKNESS_2D

    def image_position_patient(self, k: int = 0) -> list[float]:
        """DICOM ImagePositionPatient of slice ``k``: ``affine_lps @ [0, 0, k, 1]``."""
        return [float(v) for v in (self.affine_lps @ np.array([0.0, 0.0, float(k), 1.0]))[:3]]

    def truth(self) -> dict[str, Any]:
        """Ground truth of this case as a JSON-serialisable dict (no arrays except the 4x4 affine)."""
        return {
            "case_id": self.case_id,
            "subject": self.subject,
            "label": self.label,
            "class_name": self.class_name,
            "split": self.split,
            "intensity": self.intensity,
            "modality": self.modality,
            "shape": list(self.shape),
            "spacing": [float(s) for s in self.spacing],
            "orientation": self.orientation,
            "oblique_deg": self.oblique_deg,
            "rescale_slope": self.rescale_slope,
            "rescale_intercept": self.rescale_intercept,
            "stored_dtype": str(self.stored.dtype),
            "noise_sigma": self.noise_sigma,
            "affine": self.affine.tolist(),
            "mask_voxels": int(self.mask.sum()),
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "lesion": self.lesion,
        }


# ----------------------------------------------------------------------------------------------------------------
# planning: class assignment, splits, subject-level parameters
# ----------------------------------------------------------------------------------------------------------------


def class_counts(n_subjects: int, ratio: Sequence[float] | None, n_classes: int) -> list[int]:
    """Number of subjects per class matching ``ratio`` (largest remainder), every class getting at least one.

    Args:
        n_subjects: total number of subjects (>= ``n_classes``).
        ratio: relative class frequencies, or None for balanced.
        n_classes: number of classes.

    Returns:
        Counts per class summing to ``n_subjects``.
    """
    if n_subjects < n_classes:
        raise ValueError(f"need at least {n_classes} subjects for {n_classes} classes, got {n_subjects}")
    r = np.ones(n_classes) if ratio is None else np.asarray(ratio, dtype=float)
    r = r / r.sum()
    # one subject per class first, the rest by largest remainder of the remaining target
    target = r * n_subjects
    counts = np.ones(n_classes, dtype=int)
    extra = np.clip(target - 1, 0, None)
    rest = n_subjects - n_classes
    if extra.sum() > 0:
        extra = extra / extra.sum() * rest
    base = np.floor(extra).astype(int)
    remainder = extra - base
    missing = rest - int(base.sum())
    order = sorted(range(n_classes), key=lambda c: (-remainder[c], c))
    for c in order[:missing]:
        base[c] += 1
    return [int(x) for x in counts + base]


@dataclass
class _Subject:
    index: int
    sid: str
    label: int
    split: str
    n_images: int
    spacing: tuple[float, ...]
    orientation: str
    direction: np.ndarray  # 3x3 LPS, columns = i, j, k directions
    oblique_deg: float
    intensity: str
    slope: float
    intercept: float
    gain: float
    noise: float
    severity_logit: float
    cystic_logit: float
    texture_std: float
    texture_sigmas_mm: tuple[float, float]  # correlation lengths of the fine and coarse texture
    texture_weights: tuple[float, float]
    body_axes: tuple[float, float]
    study_date: str


def _grid_mm(value: Any) -> Any:
    """Round mm values to a multiple of 1/128 mm.

    Such values are exact in float32 (NIfTI headers) and in DICOM DS strings, so axis-aligned affines are
    reproduced exactly by every file format.
    """
    if np.ndim(value) == 0:
        return float(np.round(float(value) * _MM_GRID) / _MM_GRID)
    return np.round(np.asarray(value, dtype=float) * _MM_GRID) / _MM_GRID


def _rng(seed: int, *keys: int) -> np.random.Generator:
    # the non-zero terminator avoids numpy's SeedSequence trailing-zero equivalence ([1, 0] == [1])
    return np.random.default_rng([int(seed), *(int(k) for k in keys), 0x5EED])


def _random_unit(rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    if dims == 2:
        v[:, 2] = 0.0
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * (k @ k)


def _class_separation(difficulty: float) -> float:
    """Half distance between class means of the severity logit."""
    return 0.3 + 2.7 * (1.0 - difficulty)


def _plan_subjects(config: PhantomConfig) -> list[_Subject]:
    n, nc, dims = config.n_subjects, len(config.classes), config.spatial_dims
    counts = class_counts(n, config.class_ratio, nc)
    labels = np.repeat(np.arange(nc), counts)
    labels = labels[_rng(config.seed, 0).permutation(n)]
    split = ["training"] * n
    if config.test_fraction > 0:
        rng_split = _rng(config.seed, 3)
        for c in range(nc):
            members = np.flatnonzero(labels == c)
            n_test = min(int(round(config.test_fraction * len(members))), len(members) - 1)
            for s in rng_split.permutation(members)[:n_test]:
                split[int(s)] = "test"
    sep = _class_separation(config.difficulty)
    lo_img, hi_img = config.images_range
    subjects = []
    for s in range(n):
        rng = _rng(config.seed, 1, s)
        label = int(labels[s])
        ip = _grid_mm(rng.uniform(*config.inplane_spacing_mm))
        if dims == 3:
            spacing: tuple[float, ...] = (ip, ip, _grid_mm(rng.uniform(*config.slice_spacing_mm)))
        else:
            spacing = (ip, ip)
        orientation = str(config.orientations[int(rng.integers(len(config.orientations)))])
        oblique = 0.0
        if dims == 3:
            row, col = (np.array(v) for v in ORIENTATIONS_3D[orientation])
            direction = np.stack([row, col, np.cross(row, col)], axis=1)
            if config.oblique_max_deg > 0:
                oblique = round(float(rng.uniform(-config.oblique_max_deg, config.oblique_max_deg)), 3)
                axis = _random_unit(rng, 1, 3)[0]
                direction = _rotation(axis, math.radians(oblique)) @ direction
        else:
            row, col = (np.array(_LPS_LETTERS[c]) for c in orientation)
            direction = np.stack([row, col, np.cross(row, col)], axis=1)
        intensity = str(config.intensity_scales[int(rng.integers(len(config.intensity_scales)))])
        slope, intercept, gain = 1.0, 0.0, 1.0
        if intensity == "CT":
            slope = float(config.ct_rescale_slopes[int(rng.integers(len(config.ct_rescale_slopes)))])
            intercept = -1024.0
        elif intensity == "MR":
            gain = round(float(np.exp(rng.uniform(np.log(150.0), np.log(2500.0)))), 1)
        noise = float(rng.uniform(*config.noise_range))
        # class-dependent, overlapping appearance distributions with a subject-level random effect
        mu = {0: -sep, 1: sep, 2: -sep}[label]
        severity_logit = float(rng.normal(mu, 0.6))
        cystic_logit = float(rng.normal(sep if label == 2 else -sep, 0.6)) if nc == 3 else -np.inf
        # background texture statistics (shared by the subject's images; each image has its own realisation)
        texture_std = float(rng.uniform(0.15, 0.35))
        tex_sigmas = (float(rng.uniform(0.8, 1.6)), float(rng.uniform(3.0, 6.0)))
        w_fine = float(rng.uniform(0.3, 0.7))
        tex_weights = (w_fine, 1.0 - w_fine)
        body_axes = (float(rng.uniform(0.5, 0.65)) * config.fov_mm, float(rng.uniform(0.5, 0.65)) * config.fov_mm)
        day = datetime.date(2020, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 1500)))
        n_images = int(rng.integers(lo_img, hi_img + 1))
        subjects.append(
            _Subject(
                index=s,
                sid=f"sub-{s:03d}",
                label=label,
                split=split[s],
                n_images=n_images,
                spacing=spacing,
                orientation=orientation,
                direction=direction,
                oblique_deg=oblique,
                intensity=intensity,
                slope=slope,
                intercept=intercept,
                gain=gain,
                noise=noise,
                severity_logit=severity_logit,
                cystic_logit=cystic_logit,
                texture_std=texture_std,
                texture_sigmas_mm=tex_sigmas,
                texture_weights=tex_weights,
                body_axes=body_axes,
                study_date=day.strftime("%Y%m%d"),
            )
        )
    return subjects


# ----------------------------------------------------------------------------------------------------------------
# rendering one image
# ----------------------------------------------------------------------------------------------------------------


def _uid(config_fp: str, seed: int, *parts: Any) -> str:
    return str(generate_uid(entropy_srcs=["medmonai-phantom|" + "|".join([config_fp, str(seed), *map(str, parts)])]))


def _grid_affine_lps(config: PhantomConfig, subj: _Subject, centre: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    dims = config.spatial_dims
    shape = tuple(max(1, int(round(config.fov_mm / s))) for s in subj.spacing)
    sp = np.array([*subj.spacing, _SLICE_THICKNESS_2D][:3])
    m = subj.direction * sp[None, :]
    half = np.array([(n - 1) / 2.0 for n in shape] + [0.0] * (3 - dims))
    origin = _grid_mm(centre - m @ half)
    aff = np.eye(4)
    aff[:3, :3] = m
    aff[:3, 3] = origin
    return aff, shape


def _smooth_step(signed_mm: np.ndarray, blur_mm: float) -> np.ndarray:
    """0..1 edge profile (Gaussian-blurred step), 0.5 at the boundary, positive distances = inside."""
    return 0.5 * (1.0 + erf(signed_mm / (math.sqrt(2.0) * blur_mm)))


def _directions(dims: int, n: int = 4000) -> np.ndarray:
    """``n`` unit vectors spread evenly on the circle (2D, in the x-y plane) or the sphere (Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    if dims == 2:
        a = 2 * math.pi * i / n
        return np.stack([np.cos(a), np.sin(a), np.zeros(n)], axis=1)
    z = 1 - 2 * i / n
    r = np.sqrt(1 - z**2)
    phi = math.pi * (1 + 5**0.5) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: Sequence[float],
    sigmas_mm: Sequence[float],
    weights: Sequence[float],
) -> np.ndarray:
    """Gaussian random field with unit standard deviation whose correlation lengths are given in mm.

    White noise on the voxel grid filtered in Fourier space by ``sum_i w_i * Gaussian(sigma_i mm)``, so the
    texture has the same physical scale whatever the voxel spacing (periodic boundaries, invisible for noise).
    """
    white = rng.standard_normal(shape)
    freqs = [np.fft.fftfreq(n, d=s) for n, s in zip(shape[:-1], spacing[:-1])]
    freqs.append(np.fft.rfftfreq(shape[-1], d=spacing[-1]))
    k2 = sum(np.meshgrid(*[f**2 for f in freqs], indexing="ij", sparse=True))
    transfer = sum(w * np.exp(-2.0 * (math.pi * sig) ** 2 * k2) for sig, w in zip(sigmas_mm, weights))
    field = np.fft.irfftn(np.fft.rfftn(white) * transfer, s=shape, axes=tuple(range(len(shape))))
    sd = field.std()
    return field / sd if sd > 0 else field


def _render_case(config: PhantomConfig, subj: _Subject, img: int, fp: str) -> PhantomCase:
    dims = config.spatial_dims
    rng = _rng(config.seed, 2, subj.index, img)
    fov = float(config.fov_mm)

    # ---- geometry: the scan is centred on a random table position; the lesion near the FOV centre
    centre = _grid_mm(rng.uniform(-60.0, 60.0, size=3))
    if dims == 2:
        centre[2] = 0.0
    aff_lps, shape = _grid_affine_lps(config, subj, centre)
    idx = np.indices(shape, dtype=np.float64).reshape(dims, -1)
    if dims == 2:
        idx = np.concatenate([idx, np.zeros((1, idx.shape[1]))], axis=0)
    pts = (aff_lps[:3, :3] @ idx).T + aff_lps[:3, 3]  # (N, 3) LPS mm
    rel = pts - centre

    # ---- lesion parameters from the severity / cystic scores
    sev = float(expit(subj.severity_logit + rng.normal(0.0, 0.5)))
    cys = float(expit(subj.cystic_logit + rng.normal(0.0, 0.5))) if np.isfinite(subj.cystic_logit) else 0.0
    radius = fov * float(rng.uniform(*config.lesion_radius_frac)) * (0.75 + 0.6 * sev)
    rot_axis = _random_unit(rng, 1, 3)[0] if dims == 3 else np.array([0.0, 0.0, 1.0])
    rot = _rotation(rot_axis, rng.uniform(0, 2 * math.pi))
    axes = np.array([1.0, rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0) if dims == 3 else 1.0])
    # radial surface function r(u) of the direction u: lobulation + spikes, both growing with severity
    n_lobes = 4
    lob_amp = 0.22 * sev * float(rng.uniform(0.7, 1.3))
    w_dirs = _random_unit(rng, n_lobes, dims)
    lob_f = rng.uniform(1.5, 3.5, size=n_lobes)
    lob_ph = rng.uniform(0, 2 * math.pi, size=n_lobes)
    n_spikes = int(rng.poisson(14.0 * sev**2))
    spike_amp = rng.uniform(0.35, 0.9, size=n_spikes) * sev
    spike_pow = rng.uniform(25.0, 70.0, size=n_spikes)
    v_dirs = _random_unit(rng, n_spikes, dims)
    blur = (0.3 + 2.2 * sev) * float(rng.uniform(0.8, 1.2))
    rim_w = float(rng.uniform(0.5, 0.9))

    def surface(u: np.ndarray) -> np.ndarray:
        r = 1.0 + lob_amp * np.cos(math.pi * (u @ w_dirs.T) * lob_f + lob_ph).sum(axis=1) / math.sqrt(n_lobes)
        if n_spikes:
            r = r + (spike_amp * np.clip(u @ v_dirs.T, 0.0, None) ** spike_pow).sum(axis=1)
        return np.maximum(r, 0.3)

    # max of r(u) (dense direction sample + safety margin); the whole lesion stays inside the FOV's inscribed
    # circle/sphere (and so inside the body)
    r_max = 1.1 * float(surface(_directions(dims)).max()) + 0.05
    radius = min(radius, (fov / 2.0 - 2.0) / r_max)
    room = max(0.0, fov / 2.0 - 2.0 - r_max * radius)
    shift = _random_unit(rng, 1, dims)[0] * rng.uniform(0.0, min(0.08 * fov, room))
    lesion_centre = centre + shift
    local = ((pts - lesion_centre) @ rot) / (radius * axes)  # lesion frame, unit = radius
    rho = np.linalg.norm(local, axis=1)
    # evaluate the surface only near the lesion (r_max plus the margin blur and the rim)
    near = rho < r_max + (4.0 * blur + 4.0 * rim_w) / radius
    surf = surface(local[near] / np.maximum(rho[near], 1e-9)[:, None])
    signed_mm = np.full(len(rho), -1e3)  # signed distance to the surface (mm, > 0 inside), far outside
    signed_mm[near] = (surf - rho[near]) * radius
    mask = (signed_mm >= 0).astype(np.uint8)
    inside = _smooth_step(signed_mm, blur)

    # ---- intensities in canonical tissue units (tissue ~ 0, lesion contrast ~ +1)
    sp = subj.spacing
    tissue = subj.texture_std * _smooth_noise(rng, shape, sp, subj.texture_sigmas_mm, subj.texture_weights)
    tissue = tissue.reshape(-1)
    contrast = float(rng.uniform(0.6, 1.3))
    hetero = 0.05 + 0.7 * sev
    les_tex = _smooth_noise(rng, shape, sp, (float(rng.uniform(0.8, 1.4)),), (1.0,)).reshape(-1)
    solid = contrast * (1.0 + hetero * les_tex)
    interior = (1.0 - cys) * solid + cys * (_FLUID_T - tissue)  # fluid replaces the tissue texture
    t = tissue + inside * interior
    if cys > 0:
        t = t + cys * (contrast - _FLUID_T) * np.exp(-0.5 * ((signed_mm - rim_w) / rim_w) ** 2)  # bright wall

    # body outline: elliptic cylinder along the patient's S-I axis; air outside
    if config.body:
        ex = rel[:, 0] / subj.body_axes[0]
        ey = rel[:, 1] / subj.body_axes[1]
        body = _smooth_step((1.0 - np.sqrt(ex**2 + ey**2)) * min(subj.body_axes), 1.0)
    else:
        body = np.ones(len(t))

    # ---- physical values per intensity scale, noise, quantisation
    noise = subj.noise
    if subj.intensity == "CT":
        phys = body * (40.0 + 50.0 * t) + (1.0 - body) * -1000.0 + rng.normal(0, 50.0 * noise, size=t.shape)
        phys = np.clip(phys, subj.intercept, 3071.0)
    elif subj.intensity == "MR":
        bias = np.exp(((rel / fov) @ _random_unit(rng, 1, dims)[0]) * rng.uniform(0.0, 0.4))
        sig = subj.gain * bias * body * np.maximum(1.0 + 0.4 * t, 0.0)
        sd = subj.gain * 0.4 * noise
        phys = np.sqrt((sig + rng.normal(0, sd, size=t.shape)) ** 2 + rng.normal(0, sd, size=t.shape) ** 2)
    else:
        phys = body * (110.0 + 45.0 * t) + (1.0 - body) * 8.0 + rng.normal(0, 45.0 * noise, size=t.shape)
    dtype = _STORED_DTYPE[subj.intensity]
    info = np.iinfo(dtype)
    stored = np.clip(np.rint((phys - subj.intercept) / subj.slope), info.min, info.max).astype(dtype)
    stored = stored.reshape(shape)
    image = (stored.astype(np.float64) * subj.slope + subj.intercept).astype(np.float32)
    mask = mask.reshape(shape)

    in_body = image.reshape(-1)[body > 0.99] if np.any(body > 0.99) else image
    lo, hi = (float(v) for v in np.percentile(in_body, [0.5, 99.5]))
    if hi <= lo:
        hi = lo + 1.0
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff_lps
    spacing = tuple(float(np.linalg.norm(affine[:3, a])) for a in range(dims))
    case_id = f"{subj.sid}_img-{img:02d}"
    n_slices = shape[2] if dims == 3 else 1
    sop_uids = tuple(_uid(fp, config.seed, "sop", subj.index, img, k) for k in range(n_slices))
    lesion = {
        "severity": round(sev, 4),
        "cystic": round(cys, 4),
        "radius_mm": round(radius, 3),
        "centre_lps_mm": [round(float(v), 3) for v in lesion_centre],
        "n_spikes": n_spikes,
        "lobulation": round(lob_amp, 4),
        "margin_blur_mm": round(blur, 3),
        "heterogeneity": round(hetero, 4),
        "contrast": round(contrast, 4),
    }
    return PhantomCase(
        subject=subj.sid,
        case_id=case_id,
        label=subj.label,
        class_name=config.classes[subj.label],
        image=image,
        stored=stored,
        mask=mask,
        affine=affine,
        spacing=spacing,
        intensity=subj.intensity,
        modality=_DICOM_MODALITY[subj.intensity],
        rescale_slope=subj.slope,
        rescale_intercept=subj.intercept,
        orientation=subj.orientation,
        oblique_deg=subj.oblique_deg,
        noise_sigma=round(subj.noise, 4),
        window_center=round((lo + hi) / 2.0, 2),
        window_width=round(hi - lo, 2),
        split=subj.split,
        subject_index=subj.index,
        image_index=img,
        study_uid=_uid(fp, config.seed, "study", subj.index),
        series_uid=_uid(fp, config.seed, "series", subj.index, img),
        frame_of_reference_uid=_uid(fp, config.seed, "for", subj.index),
        sop_instance_uids=sop_uids,
        series_number=img + 1,
        study_date=subj.study_date,
        lesion=lesion,
    )


def generate_cases(config: PhantomConfig | None = None) -> Iterator[PhantomCase]:
    """Generate the phantom cases in memory, subject by subject (deterministic for a given config).

    Args:
        config: the generator settings; default ``PhantomConfig()`` (3D).

    Yields:
        One :class:`PhantomCase` per image.
    """
    config = config or PhantomConfig()
    config.validate()
    fp = config.fingerprint()
    for subj in _plan_subjects(config):
        for img in range(subj.n_images):
            yield _render_case(config, subj, img, fp)


# ----------------------------------------------------------------------------------------------------------------
# writers
# ----------------------------------------------------------------------------------------------------------------


def _ds(value: float) -> str:
    """A DICOM DS string (<= 16 characters) for ``value``."""
    v = float(value)
    if v == 0:
        v = 0.0  # no "-0"
    return format_number_as_ds(v)


def dicom_datasets(case: PhantomCase) -> list[Any]:
    """Build the DICOM datasets of a case in memory: one single-frame dataset per slice (``k`` order).

    Geometry follows the module conventions: slice ``k`` holds ``case.stored[:, :, k].T`` (2D: ``stored.T``)
    at ``ImagePositionPatient = affine_lps @ [0, 0, k, 1]``. The class label is NOT written to any header.

    Args:
        case: the case.

    Returns:
        ``pydicom.Dataset`` objects with file meta (Explicit VR Little Endian).
    """
    dims = case.spatial_dims
    n_slices = case.shape[2] if dims == 3 else 1
    dtype = case.stored.dtype
    bits = dtype.itemsize * 8
    sop_class = _SOP_CLASS[case.intensity]
    iop = [_ds(v) for v in case.image_orientation_patient]
    normal = np.cross(case.affine_lps[:3, 0], case.affine_lps[:3, 1])
    normal /= np.linalg.norm(normal)
    # elements common to every slice (shared, never modified afterwards), then the per-slice ones
    common = Dataset()
    common.SpecificCharacterSet = "ISO_IR 100"
    common.ImageType = ["DERIVED", "SECONDARY"]
    common.SOPClassUID = sop_class
    common.StudyDate = common.SeriesDate = common.ContentDate = case.study_date
    common.StudyTime = common.SeriesTime = common.ContentTime = "120000"
    common.AccessionNumber = ""
    common.Modality = case.modality
    if case.modality == "OT":
        common.ConversionType = "SYN"
    common.Manufacturer = "medmonai"
    common.ManufacturerModelName = "synthetic phantom"
    common.ReferringPhysicianName = ""
    common.StudyDescription = "medmonai synthetic phantom"
    common.SeriesDescription = f"phantom {case.orientation}"
    common.PatientName = f"Phantom^{case.subject}"
    common.PatientID = case.subject
    common.PatientBirthDate = ""
    common.PatientSex = "O"
    common.StudyInstanceUID = case.study_uid
    common.SeriesInstanceUID = case.series_uid
    common.StudyID = "1"
    common.SeriesNumber = case.series_number
    if case.modality == "MR":
        common.ScanningSequence = "RM"
        common.SequenceVariant = "NONE"
        common.ScanOptions = ""
        common.MRAcquisitionType = "3D" if dims == 3 else "2D"
    common.ImageOrientationPatient = iop
    common.FrameOfReferenceUID = case.frame_of_reference_uid
    common.PositionReferenceIndicator = ""
    common.SamplesPerPixel = 1
    common.PhotometricInterpretation = "MONOCHROME2"
    common.Rows = case.shape[1]
    common.Columns = case.shape[0]
    common.PixelSpacing = [_ds(v) for v in case.pixel_spacing]
    common.SliceThickness = _ds(case.slice_thickness)
    common.SpacingBetweenSlices = _ds(case.slice_thickness)
    common.BitsAllocated = bits
    common.BitsStored = bits
    common.HighBit = bits - 1
    common.PixelRepresentation = 1 if dtype.kind == "i" else 0
    common.RescaleIntercept = _ds(case.rescale_intercept)
    common.RescaleSlope = _ds(case.rescale_slope)
    common.RescaleType = "HU" if case.modality == "CT" else "US"
    common.WindowCenter = _ds(case.window_center)
    common.WindowWidth = _ds(case.window_width)
    out = []
    for k in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = case.sop_instance_uids[k]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "MEDMONAI_PHANTOM"
        ds = Dataset()
        for elem in common:
            ds.add(elem)
        ds.file_meta = meta
        ds.SOPInstanceUID = case.sop_instance_uids[k]
        ds.InstanceNumber = k + 1
        ipp = case.image_position_patient(k)
        ds.ImagePositionPatient = [_ds(v) for v in ipp]
        ds.SliceLocation = _ds(float(np.dot(normal, ipp)))
        plane = case.stored[:, :, k] if dims == 3 else case.stored
        data = np.ascontiguousarray(plane.T).astype(dtype.newbyteorder("<"), copy=False).tobytes()
        if len(data) % 2:
            data += b"\0"
        ds.add_new(0x7FE00010, "OB" if bits == 8 else "OW", data)
        out.append(ds)
    return out


def write_case_dicom(case: PhantomCase, out_dir: PathLike) -> tuple[Path, Path]:
    """Write a case as DICOM under ``out_dir/dicom/{subject}/``, plus its mask as NIfTI.

    3D: one file per slice in ``{case_id}/``, named by SOPInstanceUID (names do not encode the slice order;
    stale ``.dcm`` files of an earlier run in that folder are removed). 2D: one file ``{case_id}.dcm``.
    The mask goes to ``out_dir/dicom_masks/{subject}/{case_id}_seg.nii.gz`` (RAS affine of the DICOM geometry),
    outside the DICOM tree so that a scan of ``dicom/`` finds only DICOM files.

    Args:
        case: the case.
        out_dir: data set root folder.

    Returns:
        (image path: the series folder (3D) or the file (2D), mask path).
    """
    root = Path(out_dir) / "dicom" / case.subject
    datasets = dicom_datasets(case)

    def _save(ds: Any) -> Any:
        return lambda tmp: ds.save_as(tmp, enforce_file_format=True)

    if case.spatial_dims == 3:
        series_dir = root / case.case_id
        series_dir.mkdir(parents=True, exist_ok=True)
        names = {f"{uid}.dcm" for uid in case.sop_instance_uids}
        for old in series_dir.glob("*.dcm"):
            if old.name not in names:
                old.unlink()
        for ds in datasets:
            atomic_write(series_dir / f"{ds.SOPInstanceUID}.dcm", _save(ds))
        image_path = series_dir
    else:
        image_path = atomic_write(root / f"{case.case_id}.dcm", _save(datasets[0]))
    mask_dir = Path(out_dir) / "dicom_masks" / case.subject
    mask_path = _write_nifti(mask_dir / f"{case.case_id}_seg.nii.gz", case.mask, case.affine, 1.0, 0.0)
    return image_path, mask_path


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, slope: float, inter: float) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_slope_inter(slope, inter)  # explicit scaling: nibabel writes the integers unchanged
    return atomic_write(path, lambda tmp: nib.save(img, tmp), suffix="".join(path.suffixes[-2:]))


def write_case_nifti(case: PhantomCase, out_dir: PathLike) -> tuple[Path, Path]:
    """Write ``out_dir/nifti/{case_id}.nii.gz`` (stored integers + scl_slope/scl_inter) and ``..._seg.nii.gz``.

    ``nibabel.load(path).get_fdata()`` gives exactly ``case.image`` and the affine is ``case.affine``.

    Args:
        case: the case.
        out_dir: data set root folder.

    Returns:
        (image path, mask path).
    """
    root = Path(out_dir) / "nifti"
    scaling = (case.rescale_slope, case.rescale_intercept)
    img = _write_nifti(root / f"{case.case_id}.nii.gz", case.stored, case.affine, *scaling)
    seg = _write_nifti(root / f"{case.case_id}_seg.nii.gz", case.mask, case.affine, 1.0, 0.0)
    return img, seg


def png_pixels(case: PhantomCase) -> np.ndarray:
    """The 8-bit image written to PNG, in ``arr[i, j]`` order (8-bit data as is, else the display window)."""
    if case.spatial_dims != 2:
        raise ValueError(f"{case.case_id}: PNG is only written for 2D phantoms, this case is {case.spatial_dims}D")
    if case.intensity == "8bit":
        return case.stored.astype(np.uint8)
    lo = case.window_center - case.window_width / 2.0
    scaled = (case.image.astype(np.float64) - lo) / case.window_width * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def write_case_png(case: PhantomCase, out_dir: PathLike) -> tuple[Path, Path]:
    """Write a 2D case as ``out_dir/png/{case_id}.png`` (8-bit, pixel rows = ``j``) and ``{case_id}_seg.png`` (0/1).

    Args:
        case: a 2D case.
        out_dir: data set root folder.

    Returns:
        (image path, mask path).
    """
    pix = png_pixels(case)
    root = Path(out_dir) / "png"

    def _save(arr: np.ndarray) -> Any:
        return lambda tmp: Image.fromarray(np.ascontiguousarray(arr.T), mode=None).save(tmp, format="PNG")

    img = atomic_write(root / f"{case.case_id}.png", _save(pix))
    seg = atomic_write(root / f"{case.case_id}_seg.png", _save(case.mask.astype(np.uint8)))
    return img, seg


_WRITERS = {"nifti": write_case_nifti, "dicom": write_case_dicom, "png": write_case_png}


def generate_phantom_dataset(
    out_dir: PathLike,
    config: PhantomConfig | None = None,
    formats: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate a phantom data set on disk: image files, one datalist per format, and the ground truth.

    Re-running with the same config into the same folder rewrites byte-identical files.

    Args:
        out_dir: destination folder (created).
        config: generator settings; default ``PhantomConfig()`` (3D).
        formats: formats to write, from :data:`FORMATS`; default ``("nifti", "dicom")`` for 3D and
            ``("png", "nifti", "dicom")`` for 2D. PNG needs 2D.
        progress: show a tqdm progress bar.

    Returns:
        Paths: ``{fmt}`` -> ``datalist_{fmt}.json`` for every format, ``datalist`` -> ``datalist.json`` (same
        content as the first format's), ``truth`` -> ``phantom_truth.json``, ``root`` -> ``out_dir``.

    Raises:
        ValueError: for an unknown format or PNG with 3D data.
    """
    config = config or PhantomConfig()
    config.validate()
    dims = config.spatial_dims
    if formats is None:
        formats = ("nifti", "dicom") if dims == 3 else ("png", "nifti", "dicom")
    formats = tuple(formats)
    bad = [f for f in formats if f not in FORMATS]
    if not formats or bad:
        raise ValueError(f"unknown phantom format(s) {bad or formats!r}; choose from {FORMATS}")
    if "png" in formats and dims != 2:
        raise ValueError("the 'png' format needs a 2D phantom (PhantomConfig.spatial_dims=2)")
    if len(set(formats)) != len(formats):
        raise ValueError(f"duplicate formats in {formats!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    subjects = _plan_subjects(config)
    total = sum(s.n_images for s in subjects)
    splits: dict[str, dict[str, list[dict[str, Any]]]] = {f: {} for f in formats}
    truth_cases = []
    with tqdm(total=total, desc=f"phantom {dims}D", unit="img", disable=not progress) as bar:
        for case in generate_cases(config):
            for fmt in formats:
                image_path, mask_path = _WRITERS[fmt](case, out)
                entry: dict[str, Any] = {
                    "image": str(image_path),
                    "label": case.label,
                    "mask": str(mask_path),
                    "subject": case.subject,
                    "case_id": case.case_id,
                    "modality": case.modality,
                    "intensity": case.intensity,
                }
                if fmt == "png":  # an 8-bit rendering: no spacing in the file, values no longer HU/MR units
                    entry["spacing"] = [float(s) for s in case.spacing]
                    entry["source_modality"] = entry["modality"]
                    entry["modality"] = "8bit"
                splits[fmt].setdefault(case.split, []).append(entry)
            truth_cases.append(case.truth())
            bar.update(1)

    counts = class_counts(config.n_subjects, config.class_ratio, len(config.classes))
    description = (
        f"medmonai synthetic {dims}D lesion phantom: {config.n_subjects} subjects, {total} images, "
        f"classes {list(config.classes)} (subjects per class {counts}), difficulty {config.difficulty}, "
        f"seed {config.seed}. Generated by medmonai.data.phantoms; ground truth in phantom_truth.json."
    )
    paths: dict[str, Path] = {"root": out}
    for fmt in formats:
        ordered = {k: splits[fmt][k] for k in ("training", "test") if k in splits[fmt]}
        dl = make_datalist(
            ordered,
            classes=config.classes,
            name=config.name,
            description=description,
            tensorImageSize=f"{dims}D",
            mask_labels={"0": "background", "1": "lesion"},
            format=fmt,
            phantom_seed=config.seed,
        )
        paths[fmt] = write_datalist(out / f"datalist_{fmt}.json", dl)
        if fmt == formats[0]:
            paths["datalist"] = write_datalist(out / "datalist.json", dl)
    truth = {
        "generator": "medmonai.data.phantoms",
        "config": config.to_dict(),
        "config_fingerprint": config.fingerprint(),
        "formats": list(formats),
        "cases": truth_cases,
    }
    paths["truth"] = atomic_write_json(out / "phantom_truth.json", truth)
    return paths


def ensure_phantom_dataset(
    out_dir: PathLike,
    spatial_dims: int = 2,
    formats: Sequence[str] | None = None,
    progress: bool = True,
    **config: Any,
) -> Path:
    """Generate the phantom data set into ``out_dir`` unless the same one is already there; return its datalist.

    This is how bundles get their embedded default data: ``datalist: "$medmonai.data.phantoms.ensure_phantom_dataset(
    @dataset_dir, 2, test_fraction=0.25)"``. The data set is identified by its full config (stored in
    ``phantom_truth.json``), so a changed config regenerates it.

    Args:
        out_dir: data set folder.
        spatial_dims: 2 or 3.
        formats: file formats (default: the generator's default for ``spatial_dims``).
        progress: show a progress bar while generating.
        config: further :class:`PhantomConfig` fields (``n_subjects``, ``test_fraction``, ``seed``...).

    Returns:
        Path of ``datalist.json`` (the first format's datalist).
    """
    out = Path(out_dir)
    cfg = PhantomConfig(spatial_dims=spatial_dims, **config)
    cfg.validate()
    truth = out / "phantom_truth.json"
    datalist = out / "datalist.json"
    if truth.is_file() and datalist.is_file():
        try:
            stored = json.loads(truth.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            stored = {}
        same_formats = formats is None or stored.get("formats") == list(formats)
        if stored.get("config") == cfg.to_dict() and same_formats:
            return datalist
    written = generate_phantom_dataset(out, cfg, formats=formats, progress=progress)
    return Path(written["datalist"])
