"""The pre-move module paths ``medmonai.apps.clinical`` / ``medmonai.apps.pacs`` give the objects of their new homes."""

from __future__ import annotations

import pytest

import medmonai.apps.clinical as old_clinical
import medmonai.apps.pacs as old_pacs
from medmonai.data import dicom_output
from medmonai.deploy import models, pacs, pipeline


def test_old_clinical_names_are_the_new_objects():
    assert old_clinical.load_clinical_model is models.load_clinical_model
    assert old_clinical.ClinicalModel is models.ClinicalModel
    assert old_clinical.infer_dicom is pipeline.infer_dicom and old_clinical.watch_pacs is pipeline.watch_pacs
    assert old_clinical.write_classification_sr is dicom_output.write_classification_sr
    assert old_clinical._AsLogits is models._AsLogits  # private names too
    assert old_clinical.CODING_SCHEME == dicom_output.CODING_SCHEME
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        old_clinical.nothing_here  # noqa: B018


def test_old_pacs_names_are_the_new_objects():
    assert old_pacs.PacsClient is pacs.PacsClient and old_pacs.OrthancServer is pacs.OrthancServer
    assert old_pacs._to_dict is pacs._to_dict
    assert sorted(old_pacs.__all__) == sorted(pacs.__all__)
