"""The DICOM SEG writer (:mod:`medmonai.data.dicom_output`): frames reference the right source instances."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest

from medmonai.data.dicom_output import write_dicom_seg
from tests._seg_dicom import frames_by_source


def test_dicom_seg_frames_reference_the_right_instances_at_the_right_positions(dicom_case, tmp_path):
    case, series_dir = dicom_case
    path = write_dicom_seg(tmp_path / "truth.dcm", case.mask, series_dir, ["background", "lesion"], case.affine)
    seg = hd.seg.segread(path)
    assert seg.SeriesInstanceUID != case.series_uid and seg.StudyInstanceUID == case.study_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == case.series_uid
    assert seg.FrameOfReferenceUID == case.frame_of_reference_uid
    _, frames = frames_by_source(path)
    k_of = {uid: k for k, uid in enumerate(case.sop_instance_uids)}
    non_empty = {k for k in range(case.shape[2]) if case.mask[:, :, k].any()}
    assert {k_of[sop] for sop, _ in frames} == non_empty  # empty frames omitted
    for (sop, segment), (pixels, ipp) in frames.items():
        k = k_of[sop]
        assert segment == 1
        np.testing.assert_allclose(ipp, case.image_position_patient(k), atol=1e-3)
        np.testing.assert_array_equal(pixels, case.mask[:, :, k].T)  # rows = j, columns = i
    with pytest.raises(ValueError, match="does not fit"):
        write_dicom_seg(tmp_path / "bad.dcm", case.mask[:-1], series_dir, ["background", "lesion"])
