"""A DICOM-series segmentation case and a reader of DICOM SEG frames, shared by the SEG writer and inference tests."""

from __future__ import annotations

import pydicom

from medmonai.data.phantoms import PhantomConfig, generate_cases, write_case_dicom


def write_oblique_series_case(root):
    """A coronal, 15°-oblique phantom written as a DICOM series (one file per slice) under ``root``: (case, folder)."""
    config = PhantomConfig.small(3, n_subjects=2, orientations=("coronal",), oblique_max_deg=15.0, seed=1)
    case = next(iter(generate_cases(config)))
    series_dir, _ = write_case_dicom(case, root)
    return case, series_dir


def frames_by_source(seg_path):
    """The frames of a DICOM SEG by (referenced SOP instance UID, segment number): (pixels, image position)."""
    ds = pydicom.dcmread(seg_path)
    frames = ds.pixel_array if ds.pixel_array.ndim == 3 else ds.pixel_array[None]
    out = {}
    for f, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        sop = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ident = group if "SegmentIdentificationSequence" in group else ds.SharedFunctionalGroupsSequence[0]
        segment = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        ipp = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        out[(sop, segment)] = (frames[f], ipp)
    return ds, out
