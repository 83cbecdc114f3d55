"""Moved: the hospital-side inference lives in :mod:`medmonai.deploy` (kept here for one release).

* :mod:`medmonai.deploy.models`: :class:`ClinicalModel`, :func:`load_clinical_model`;
* :mod:`medmonai.deploy.pipeline`: :func:`infer_dicom`, :func:`discover_series`, :func:`select_series`,
  :func:`result_files`, :func:`watch_folder`, :func:`watch_pacs`, ``STATE_FILE``;
* :mod:`medmonai.data.dicom_output`: :func:`write_classification_sr`, :func:`read_classification_sr` (and the SEG
  and NIfTI writers).

Every name, private ones included, resolves to the object in its new module.
"""

from __future__ import annotations

from typing import Any

from medmonai.data import dicom_output as _dicom_output
from medmonai.data.dicom_output import read_classification_sr, write_classification_sr
from medmonai.deploy import models as _models
from medmonai.deploy import pipeline as _pipeline
from medmonai.deploy.models import ClinicalModel, load_clinical_model
from medmonai.deploy.pipeline import (
    STATE_FILE,
    discover_series,
    infer_dicom,
    result_files,
    select_series,
    watch_folder,
    watch_pacs,
)

__all__ = [
    "ClinicalModel",
    "load_clinical_model",
    "discover_series",
    "select_series",
    "write_classification_sr",
    "read_classification_sr",
    "infer_dicom",
    "result_files",
    "watch_folder",
    "watch_pacs",
    "STATE_FILE",
]


def __getattr__(name: str) -> Any:
    """Any other (private) name of the former module, from its new home."""
    for module in (_models, _pipeline, _dicom_output):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
