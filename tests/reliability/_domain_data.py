"""Single-image DICOM studies for the input-domain and path-traversal attack tests (issue 21 items 1 and 8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.uid import generate_uid

from medmonai.data.datalist import load_datalist
from tests.data.dicom_factory import write_slice

#: the DICOM copy's intensity scale in issue 21
OTHER_SCALE = (1264.0, 5132.0)
#: the patient/study attributes an SR copies from its evidence
_STUDY = {
    "PatientBirthDate": "", "PatientSex": "O", "StudyDate": "20240101", "StudyTime": "120000",
    "ReferringPhysicianName": "", "StudyID": "1", "AccessionNumber": "", "SeriesNumber": 1,
}  # fmt: skip


def phantom_datalist(root: Path) -> Path:
    """The PNG datalist the tiny clinical classifier was trained on (``tests.deploy._clinical_data``)."""
    return root / "data" / "phantoms_2d" / "datalist.json"


def case_pixels(root: Path) -> np.ndarray:
    """The 8-bit pixels ``[row, col]`` of the first test case's PNG (the classifier's training domain)."""
    entry = load_datalist(phantom_datalist(root), "test")[0]
    return np.asarray(Image.open(entry["image"]), dtype=np.int16)


def other_scale(pixels: np.ndarray) -> np.ndarray:
    """The same image mapped linearly onto :data:`OTHER_SCALE`."""
    lo, hi = float(pixels.min()), float(pixels.max())
    return np.rint(OTHER_SCALE[0] + (pixels - lo) / (hi - lo) * (OTHER_SCALE[1] - OTHER_SCALE[0])).astype(np.int16)


def write_study(
    folder: Path, pixels: np.ndarray, series_uid: str | None = None, study_uid: str | None = None
) -> tuple[Path, str]:
    """A study folder holding one single-image series (Modality OT); returns ``(folder, SeriesInstanceUID)``."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or generate_uid()
    extra = {**_STUDY, "FrameOfReferenceUID": generate_uid()}
    write_slice(
        folder / "image.dcm", pixels.astype(np.int16), series_uid=uid, study_uid=study_uid or generate_uid(),
        modality="OT", extra=extra,
    )  # fmt: skip
    return folder, uid
