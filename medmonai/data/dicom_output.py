"""DICOM (and NIfTI) results of the models: the classification SR, the segmentation SEG, masks in input geometry.

The one module that writes results for DICOM consumers, next to the DICOM reading code (:mod:`medmonai.data.dicom`):

* :func:`write_classification_sr` / :func:`read_classification_sr`: a *Comprehensive 3D SR* (TID 1500 measurement
  report, ``highdicom``) with one probability per class, the decision threshold or rule, the predicted class and the
  algorithm's name and version, referencing the source study, series and instances;
* :func:`write_dicom_seg`: a DICOM Segmentation (``highdicom``, BINARY, one segment per class) whose frames reference
  the source instances;
* :func:`write_nifti_mask`: a label map as NIfTI on the input's voxel grid (the input's own header for NIfTI input).

Used by ``medmonai infer``/``watch`` (:mod:`medmonai.deploy.pipeline`) and the segmentation bundle's inference
(:mod:`medmonai.engines.segmentation_inference`). Every file is written atomically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from medmonai.data.dicom import scan_dicom_files, scan_dicom_folder
from medmonai.metrics.clinical import (
    DECISION_RULE_METHODS,
    validate_decision_rule,
)
from medmonai.utils import PathLike, atomic_write

__all__ = [
    "CODING_SCHEME",
    "write_classification_sr",
    "read_classification_sr",
    "write_dicom_seg",
    "write_nifti_mask",
]

logger = logging.getLogger(__name__)

#: private coding scheme of the SR's class and threshold concepts (private schemes start with "99")
CODING_SCHEME = "99MEDMONAI"
#: concept name of the predicted class in the SR (SCT 278201002 "Classification")
_PREDICTED = ("278201002", "SCT")


# --------------------------------------------------------------------------------------------------------- SR
def _class_code(index: int, name: str) -> Any:
    return hd.sr.CodedConcept(value=f"CLASS{index}", scheme_designator=CODING_SCHEME, meaning=str(name)[:64])


def _threshold_code() -> Any:
    return hd.sr.CodedConcept(value="THRESHOLD", scheme_designator=CODING_SCHEME, meaning="Decision threshold")


def _ood_code() -> Any:
    return hd.sr.CodedConcept(value="OOD", scheme_designator=CODING_SCHEME, meaning="Out of training distribution")


def _rule_code() -> Any:
    return hd.sr.CodedConcept(value="DECISIONRULE", scheme_designator=CODING_SCHEME, meaning="Decision rule")


#: the fields of a multi-class decision rule that decide the label (the SR's machine-readable copy holds these)
_RULE_KEYS = ("method", "alpha", "class_priors", "training_prior", "factors", "chosen_on", "objective")


def _plain(value: Any) -> Any:
    """A rule field as JSON-safe Python (NumPy numbers and arrays as floats and lists)."""
    if isinstance(value, str):
        return value
    return np.asarray(value, dtype=np.float64).tolist()


def _rule_parameters(threshold: float | None, rule: Mapping[str, Any] | None) -> list[str]:
    """The algorithm parameters of the SR: the decision actually applied, in words."""
    if threshold is not None:
        return [f"decision threshold {threshold:.6g}"]
    if rule is None:
        return ["arg-max decision"]
    chosen = f" (chosen on {rule['chosen_on']})" if rule.get("chosen_on") else ""
    if rule["method"] == "argmax":
        return [f"decision rule argmax{chosen}"]
    fmt = ", ".join
    params = [
        f"decision rule prior_shift{chosen}: argmax of p * pi**alpha / pi_train, alpha {float(rule['alpha']):.6g}",
        f"class priors pi [{fmt(f'{float(v):.6g}' for v in rule['class_priors'])}]",
        f"training prior pi_train [{fmt(f'{float(v):.6g}' for v in rule['training_prior'])}]",
    ]
    if rule.get("factors") is not None:
        params.append(f"class factors [{fmt(f'{float(v):.6g}' for v in rule['factors'])}]")
    return params


def write_classification_sr(
    path: PathLike,
    source_files: Sequence[PathLike],
    classes: Sequence[str],
    probabilities: Sequence[float],
    predicted: int,
    threshold: float | None,
    model_name: str,
    model_version: str,
    series_number: int = 901,
    series_description: str | None = None,
    out_of_distribution: Sequence[str] | None = None,
    decision_rule: Mapping[str, Any] | None = None,
) -> Path:
    """Write a classification result as a DICOM Comprehensive 3D SR (TID 1500 measurement report, ``highdicom``).

    Content: one measurement group per class (finding type = the class, a private ``99MEDMONAI`` code; measurement
    DCM 122157 *Probability*, unit UCUM ``1``), and a decision group with the *Decision threshold* (binary) and the
    qualitative evaluation SCT 278201002 *Classification* = the predicted class; with a multi-class
    ``decision_rule`` the decision group also holds a TEXT item *Decision rule* (``99MEDMONAI`` code
    ``DECISIONRULE``): the rule as JSON (method, alpha, class priors, training prior, factors). Every group carries
    the algorithm identification (name, version, and as parameters the decision applied: the threshold, the
    decision rule with its alpha and priors, or "arg-max decision") and references the source instances; the source
    series is the SR's evidence (CurrentRequestedProcedureEvidenceSequence), and the SR joins the source's study.
    Completion flag COMPLETE, verification flag UNVERIFIED.

    Args:
        path: output file.
        source_files: the instances of the classified series (headers are read, pixels are not).
        classes: class names.
        probabilities: one probability per class.
        predicted: index of the predicted class.
        threshold: decision threshold (binary), or None (arg-max, or ``decision_rule``).
        model_name: algorithm name.
        model_version: algorithm version.
        series_number: SeriesNumber of the SR.
        series_description: SeriesDescription (default ``"<model_name> classification"``).
        out_of_distribution: the reasons why the input lies outside the model's training domain (processed with
            ``allow_out_of_distribution``): the decision group gets a TEXT item *Out of training distribution*
            (``99MEDMONAI`` code ``OOD``) holding them, and the SeriesDescription says so. None or empty: nothing.
        decision_rule: the multi-class decision rule that gave ``predicted`` (``{"method": "argmax"}`` or a
            ``"prior_shift"`` rule, see :func:`medmonai.metrics.clinical.apply_decision_rule`); None: none.

    Returns:
        The path.

    Raises:
        ValueError: probabilities that do not fit the classes, a rule that does not fit them, or both a threshold
            and a decision rule.
    """
    if len(probabilities) != len(classes):
        raise ValueError(f"{len(probabilities)} probabilities for {len(classes)} classes")
    rule = None
    if decision_rule is not None:
        if threshold is not None:
            raise ValueError("give a decision threshold (binary) or a multi-class decision rule, not both")
        if decision_rule.get("method") not in DECISION_RULE_METHODS:
            raise ValueError(f"not a multi-class decision rule (method in {DECISION_RULE_METHODS}): {decision_rule}")
        valid = validate_decision_rule(decision_rule, len(classes))
        rule = {k: _plain(valid[k]) for k in _RULE_KEYS if valid.get(k) is not None}
    evidence = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in source_files]
    params = _rule_parameters(threshold, rule)
    algorithm = hd.sr.AlgorithmIdentification(name=model_name[:64], version=str(model_version)[:64], parameters=params)
    sources = [hd.sr.SourceImageForMeasurementGroup(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in evidence]

    def group(label: str, finding: Any, **kwargs: Any) -> Any:
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label[:64]),
            finding_type=finding, algorithm_id=algorithm, source_images=sources, **kwargs,
        )  # fmt: skip

    groups = []
    for j, (name, p) in enumerate(zip(classes, probabilities, strict=True)):
        m = hd.sr.Measurement(name=codes.DCM.Probability, value=float(p), unit=codes.UCUM.NoUnits)
        groups.append(group(f"probability of {name}", _class_code(j, name), measurements=[m]))
    decision = [
        hd.sr.QualitativeEvaluation(name=codes.SCT.Classification, value=_class_code(predicted, classes[predicted]))
    ]
    thr = [] if threshold is None else [hd.sr.Measurement(_threshold_code(), float(threshold), codes.UCUM.NoUnits)]
    decision_group = group("decision", None, measurements=thr or None, qualitative_evaluations=decision)
    if rule is not None:
        decision_group[0].ContentSequence.append(  # the group's CONTAINER item
            hd.sr.TextContentItem(
                name=_rule_code(), value=json.dumps(rule), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
            )
        )
    if out_of_distribution:
        text = "OUT OF TRAINING DISTRIBUTION, the result is not reliable: " + "; ".join(out_of_distribution)
        decision_group[0].ContentSequence.append(  # the group's CONTAINER item
            hd.sr.TextContentItem(
                name=_ood_code(), value=text[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
            )
        )
    groups.append(decision_group)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=model_name[:64], manufacturer_name="medmonai", model_name=model_name[:64]
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=int(series_number),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medmonai",
        is_complete=True,
    )
    description = series_description or f"{model_name} classification"
    if out_of_distribution:
        description = f"{description} (OUT OF DISTRIBUTION)"
    sr.SeriesDescription = description[:64]
    sr.ManufacturerModelName = model_name[:64]
    sr.SoftwareVersions = str(model_version)[:64]
    return atomic_write(path, lambda tmp: sr.save_as(tmp, enforce_file_format=True))


def read_classification_sr(path_or_dataset: PathLike | Any) -> dict[str, Any]:
    """Read back what :func:`write_classification_sr` wrote (with ``pydicom``; checked by ``highdicom``).

    Returns:
        ``{"probabilities": {class: p}, "predicted": class, "threshold": float | None, "decision_rule": the
        multi-class rule dict or None, "parameters": the algorithm parameters (the decision in words), "algorithm":
        name, "version": version, "out_of_distribution": the out-of-distribution text or None, "StudyInstanceUID": ...,
        "referenced_series": [SeriesInstanceUID, ...], "referenced_instances": [SOPInstanceUID, ...]}``.
    """
    ds = path_or_dataset if isinstance(path_or_dataset, pydicom.Dataset) else pydicom.dcmread(str(path_or_dataset))
    hd.sr.Comprehensive3DSR.from_dataset(ds)  # raises for a malformed SR
    out: dict[str, Any] = {"probabilities": {}, "predicted": None, "threshold": None, "algorithm": None}
    out["version"], out["out_of_distribution"], out["decision_rule"], out["parameters"] = None, None, None, []
    out["StudyInstanceUID"] = str(ds.StudyInstanceUID)
    refs, inst = [], []
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in study.get("ReferencedSeriesSequence", []):
            refs.append(str(series.SeriesInstanceUID))
            inst += [str(i.ReferencedSOPInstanceUID) for i in series.get("ReferencedSOPSequence", [])]
    out["referenced_series"], out["referenced_instances"] = refs, inst

    def visit(items: Any) -> None:
        for item in items:
            if item.get("ValueType") == "CONTAINER" and _concept(item) == ("125007", "DCM"):  # measurement group
                _read_group(item.ContentSequence, out)
            elif "ContentSequence" in item:
                visit(item.ContentSequence)

    visit(ds.ContentSequence)
    return out


def _concept(item: Any) -> tuple[str, str] | None:
    if "ConceptNameCodeSequence" not in item:
        return None
    c = item.ConceptNameCodeSequence[0]
    return str(c.CodeValue), str(c.CodingSchemeDesignator)


def _read_group(items: Any, out: dict[str, Any]) -> None:
    """One TID 1501 measurement group of :func:`write_classification_sr` into ``out``."""
    finding = None
    for item in items:
        if item.get("ValueType") == "CODE" and _concept(item) == ("121071", "DCM"):  # finding type
            code = item.ConceptCodeSequence[0]
            if str(code.CodingSchemeDesignator) == CODING_SCHEME:
                finding = str(code.CodeMeaning)
    for item in items:
        concept, vtype = _concept(item), item.get("ValueType")
        if vtype == "NUM" and concept == ("122157", "DCM") and finding is not None:
            out["probabilities"][finding] = float(item.MeasuredValueSequence[0].NumericValue)
        elif vtype == "NUM" and concept == ("THRESHOLD", CODING_SCHEME):
            out["threshold"] = float(item.MeasuredValueSequence[0].NumericValue)
        elif vtype == "CODE" and concept == _PREDICTED:
            out["predicted"] = str(item.ConceptCodeSequence[0].CodeMeaning)
        elif vtype == "TEXT" and concept == ("111001", "DCM"):
            out["algorithm"] = str(item.TextValue)
        elif vtype == "TEXT" and concept == ("111003", "DCM"):
            out["version"] = str(item.TextValue)
        elif vtype == "TEXT" and concept == ("OOD", CODING_SCHEME):
            out["out_of_distribution"] = str(item.TextValue)
        elif vtype == "TEXT" and concept == ("DECISIONRULE", CODING_SCHEME):
            out["decision_rule"] = json.loads(str(item.TextValue))
        elif vtype == "TEXT" and concept == ("111002", "DCM") and str(item.TextValue) not in out["parameters"]:
            out["parameters"].append(str(item.TextValue))  # every group repeats the algorithm identification


# ------------------------------------------------------------------------------------------------- SEG, NIfTI
def write_nifti_mask(path: PathLike, label: np.ndarray, affine: np.ndarray, reference: PathLike | None = None) -> Path:
    """Write a label map as NIfTI (uint8) atomically.

    Args:
        path: output ``.nii.gz`` file.
        label: the label map on the original grid.
        affine: its 4x4 RAS affine.
        reference: the input NIfTI: its header (sform/qform, units) is reused, so the output's affine is bit-for-bit
            the input's; the label must have the input's shape.

    Returns:
        The path.

    Raises:
        ValueError: when ``label`` does not have the reference image's shape.
    """
    arr = np.asarray(label, dtype=np.uint8)
    if reference is not None:
        ref = nib.load(str(reference))
        if tuple(ref.shape[: arr.ndim]) != arr.shape or any(s != 1 for s in ref.shape[arr.ndim :]):
            raise ValueError(f"{reference}: mask shape {arr.shape} differs from the image shape {ref.shape}")
        header = ref.header.copy()
        img = nib.Nifti1Image(arr.reshape(ref.shape), ref.affine, header=header)
        img.header.set_data_dtype(np.uint8)
        img.header.set_slope_inter(1.0, 0.0)
        img.set_sform(ref.get_sform(), code=int(ref.header["sform_code"]))
        img.set_qform(ref.get_qform(), code=int(ref.header["qform_code"]))
    else:
        img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
        img.header.set_data_dtype(np.uint8)
        img.header.set_xyzt_units("mm")
        img.set_sform(np.asarray(affine, dtype=np.float64), code=1)
        img.set_qform(np.asarray(affine, dtype=np.float64), code=1)
    return atomic_write(path, lambda tmp: nib.save(img, tmp), suffix="".join(Path(path).suffixes[-2:]))


def _source_series(image: Any, series_uid: str | None) -> Any:
    """The :class:`~medmonai.data.dicom.SeriesInfo` of a DICOM input (files sorted like the loaded ``k`` axis)."""
    if isinstance(image, list | tuple):
        series, _ = scan_dicom_files([str(f) for f in image], on_error="raise")
    elif Path(str(image)).is_dir():
        series, _ = scan_dicom_folder(str(image), recursive=False, on_error="skip")
    else:
        series, _ = scan_dicom_files([str(image)], on_error="raise")
    if series_uid:
        series = [s for s in series if s.series_uid == series_uid]
    if len(series) != 1:
        wanted = f"series {series_uid}" if series_uid else "one DICOM series"
        raise ValueError(f"{image}: expected {wanted}, found {len(series)} series")
    return series[0]


def write_dicom_seg(
    path: PathLike,
    label: np.ndarray,
    source: Any,
    class_names: Sequence[str],
    affine: np.ndarray | None = None,
    series_uid: str | None = None,
    segment_codes: Mapping[str, tuple[Any, Any]] | None = None,
    model_name: str = "medmonai segmentation",
    model_version: str = "0",
    series_description: str = "medmonai segmentation",
    series_number: int = 900,
) -> Path:
    """Write a label map on a DICOM series' grid as a DICOM Segmentation (highdicom, BINARY, one segment per class).

    The frames reference the source instances (``SourceImageSequence`` per frame and ``ReferencedSeriesSequence``)
    and carry their positions; empty frames are omitted.

    Args:
        path: output file (``.dcm``).
        label: label map ``[i, j, k]`` (``[i, j]`` for a single image) on the loaded grid of the series
            (:class:`~medmonai.data.dicom.DicomSeriesReader` conventions: ``i`` = column, ``j`` = row, ``k`` =
            slices in position order).
        source: the series: its folder, its files, or a single file.
        class_names: class names (index 0 = background, not a segment).
        affine: the label map's RAS affine, checked against the series geometry when given.
        series_uid: SeriesInstanceUID to pick in a folder holding several series.
        segment_codes: per class name, ``(category, type)`` codes (pydicom ``Code``); default Tissue / Anatomical
            Structure.
        model_name: algorithm name (``AlgorithmIdentificationSequence``) and ManufacturerModelName.
        model_version: algorithm/software version.
        series_description: SeriesDescription of the SEG.
        series_number: SeriesNumber of the SEG.

    Returns:
        The path.

    Raises:
        ValueError: when the label map does not fit the series (shape or geometry), naming the series.
    """
    series = _source_series(source, series_uid)
    arr = np.asarray(label)
    if tuple(arr.shape) != tuple(series.loaded_shape):
        raise ValueError(
            f"{series.folder}: mask shape {arr.shape} does not fit series {series.series_uid} ({series.loaded_shape})"
        )
    if affine is not None and not np.allclose(np.asarray(affine, dtype=float), series.affine, atol=1e-3):
        raise ValueError(f"{series.folder}: mask affine differs from the geometry of series {series.series_uid}")
    datasets = [pydicom.dcmread(f) for f in series.files]
    frames = arr.T[None] if arr.ndim == 2 else np.ascontiguousarray(np.transpose(arr, (2, 1, 0)))  # (k, row, col)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name[:64], family=codes.cid7162.ArtificialIntelligence, version=str(model_version)[:64]
    )
    descriptions = []
    for c, name in enumerate(class_names[1:], start=1):
        category, prop = (segment_codes or {}).get(name, (codes.SCT.Tissue, codes.SCT.AnatomicalStructure))
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=c,
                segment_label=str(name)[:64],
                segmented_property_category=category,
                segmented_property_type=prop,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    n_classes = len(class_names)
    if frames.max(initial=0) >= n_classes:
        raise ValueError(f"label values up to {int(frames.max())} but only {n_classes} class names")
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=frames.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(series_number),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medmonai",
        manufacturer_model_name=model_name[:64],
        software_versions=str(model_version)[:64],
        device_serial_number="0",
        series_description=series_description[:64],
    )
    return atomic_write(path, lambda tmp: seg.save_as(tmp))
