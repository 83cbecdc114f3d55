"""Shared, cached test material for the clinical inference and PACS tests: tiny trained bundles, study copies."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pydicom
from monai.bundle import run

from tests._bundles import bundle_dir, run_args

__all__ = [
    "bundle_dir",
    "checksums",
    "copy_study",
    "copy_tree",
    "subject_dirs",
    "trained_classifier",
    "trained_segmenter",
]

REPO = Path(__file__).resolve().parents[2]
CLS_PHANTOM = {"n_subjects": 12, "images_per_subject": [1, 3], "test_fraction": 0.25, "seed": 0}
SEG_PHANTOM = {"n_subjects": 8, "images_per_subject": [1, 2], "test_fraction": 0.25, "seed": 0, "fov_mm": 40.0}
SEG_FAST = {"base_filters": 4, "num_samples": 1, "val_interval": 1, "val_fraction": 0.34}
# a patient name and id that must never show up in logs or result tables
PATIENT_NAME = "Zyzzogeton^Quillon"
PATIENT_ID = "QX-7731-ZZ"

_CACHE: dict[str, Path] = {}


def _run(name: str, root: Path, *extra: str, **overrides: object) -> None:
    run(**run_args(name, root, *extra, **overrides))


def trained_classifier(factory) -> Path:
    """classification_2d trained 1 epoch on 12 phantom subjects, evaluated (threshold chosen on validation)."""
    if "cls" not in _CACHE:
        root = factory.mktemp("clinical_cls")
        common = {"phantom": CLS_PHANTOM, "batch_size": 8, "spatial_size": [32, 32]}
        _run("classification_2d", root, max_epochs=1, image_log_interval=100, **common)
        _run("classification_2d", root, "evaluate", n_boot=20, **common)
        _CACHE["cls"] = root
    return _CACHE["cls"]


def trained_segmenter(factory) -> Path:
    """segmentation_2d trained 1 epoch on 8 phantom subjects (tiny DynUNet)."""
    if "seg" not in _CACHE:
        root = factory.mktemp("clinical_seg")
        _run("segmentation_2d", root, phantom=SEG_PHANTOM, max_epochs=1, **SEG_FAST)
        _CACHE["seg"] = root
    return _CACHE["seg"]


def subject_dirs(root: Path, dims: int = 2) -> list[Path]:
    """The phantom DICOM study folders (one per subject), the ones with the most series first."""
    subjects = sorted((root / "data" / f"phantoms_{dims}d" / "dicom").iterdir())
    return sorted(subjects, key=lambda p: -len(list(p.glob("*.dcm"))))


def copy_study(src: Path, dst: Path, patient_name: str = PATIENT_NAME, patient_id: str = PATIENT_ID) -> Path:
    """Copy a study folder, giving it another patient name and id; files are named by SOPInstanceUID."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.rglob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.save_as(dst / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return dst


def checksums(folder: Path) -> dict[str, tuple[str, float]]:
    """SHA-256 and modification time of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
