"""Clinical inference: a DICOM study in, standard DICOM results out (SEG for masks, SR for classifications).

``medmonai infer BUNDLE STUDY_DIR --out OUT`` (:func:`infer_dicom`) runs a **trained** bundle on the DICOM series
of a study folder:

* **classification** bundles (the checkpoint ``runs/checkpoints/model.pt``, another checkpoint, or a TorchScript
  model such as the cross-validation fold ensemble ``runs/cv/ensemble/model.ts``) write, per series, a DICOM
  *Comprehensive 3D SR* (TID 1500 measurement report, built with ``highdicom``) holding one probability per class,
  the decision threshold (binary) or the multi-class decision rule, the predicted class and the algorithm's name
  and version, referencing the source study, series and instances; plus ``results.json`` / ``results.csv`` keyed
  by StudyInstanceUID / SeriesInstanceUID;
* **segmentation** bundles write, per series, a DICOM SEG (``highdicom``, via
  :func:`medmonai.engines.segmentation_inference.write_dicom_seg`) whose frames reference the source instances,
  the mask as NIfTI in the series geometry, and the same ``results.json`` / ``results.csv`` with volumes per class.

Guarantees:

* input files are only read, never written;
* every output is written atomically (a temporary file renamed into place), the result tables last;
* results and logs identify series by their UIDs only: no PatientName, PatientID, birth date or file path. (The
  DICOM SR/SEG objects themselves carry the source's patient module, as DICOM requires; error messages name the
  offending files.)

**Series rule.** A study folder may hold several series. Derived objects (SEG, SR, presentation states...) are
ignored. Of the image series, those whose dimensionality fits the bundle are candidates: a 2D bundle takes
single-image series, a 3D bundle series with at least ``min_slices`` slices; ``modalities`` restricts the
Modality. Then ``series="all"`` (default) processes every candidate, ``series="largest"`` the one with the most
voxels; ``series_uids`` names the series explicitly (an unknown UID is an error that lists the series found).

:func:`watch_folder` and :func:`watch_pacs` process new studies arriving in a folder or in a PACS (Orthanc), each
once, remembering the processed StudyInstanceUIDs in a state file.

**Training domain.** Every series is checked against the training-domain record written when the model was trained
(``runs/training_domain.json``, :mod:`medmonai.data.domain`); a series outside it is refused, or, with
``allow_out_of_distribution``, processed and marked out of distribution in the SR and the result tables.

**Output names.** Names built from DICOM tags (Study/SeriesInstanceUID) go through
:func:`medmonai.utils.safe_output_path`: sanitised, and checked to stay inside the output folder.

**Trust.** The bundle configs are MONAI configs: their ``$`` expressions run Python code, and a TorchScript model
is code too. Only run bundles and models you trust.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import torch
from monai.bundle import ConfigParser
from pydicom.sr.codedict import codes

from medmonai.bundles import resolve_bundle
from medmonai.data.dicom import SeriesInfo, is_error, list_folder_files, scan_dicom_files
from medmonai.data.domain import RECORD_FILE, load_training_domain, screen_inputs
from medmonai.engines.evaluation import load_weights, predict_probabilities
from medmonai.engines.segmentation_inference import SegmentationPredictor, write_dicom_seg, write_nifti_mask
from medmonai.metrics.clinical import (
    DECISION_RULE_METHODS,
    apply_decision_rule,
    decision_rule_from_report,
    validate_decision_rule,
)
from medmonai.utils import PathLike, atomic_write, atomic_write_json, atomic_write_text, read_json, safe_output_path

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

logger = logging.getLogger(__name__)

#: default state file name of the watch modes (in the output folder)
STATE_FILE = "watch_state.json"

#: Modality values of derived / non-image objects that are never inputs (our own outputs among them)
_DERIVED_MODALITIES = frozenset({"SEG", "SR", "PR", "KO", "DOC", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "REG"})

#: private coding scheme of the SR's class and threshold concepts (private schemes start with "99")
CODING_SCHEME = "99MEDMONAI"
#: concept name of the predicted class in the SR (SCT 278201002 "Classification")
_PREDICTED = ("278201002", "SCT")


# ------------------------------------------------------------------------------------------------------- model
class _AsLogits(torch.nn.Module):
    """Wrap a model whose output may be class probabilities (a fold ensemble) so that softmax gives them back.

    Probabilities (non-negative, summing to 1 over dim 1) are returned as their logarithm, for which softmax is
    the identity; logits pass unchanged.
    """

    def __init__(self, model: torch.nn.Module, output: str = "auto") -> None:
        super().__init__()
        if output not in ("auto", "logits", "probabilities"):
            raise ValueError(f"output must be 'auto', 'logits' or 'probabilities', got {output!r}")
        self.model = model
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x).float()
        probs = self.output == "probabilities"
        if self.output == "auto":
            probs = bool((y >= 0).all()) and bool(torch.allclose(y.sum(1), torch.ones_like(y.sum(1)), atol=1e-4))
        return torch.log(y.clamp_min(1e-12)) if probs else y


@dataclass
class ClinicalModel:
    """A trained bundle ready for inference (see :func:`load_clinical_model`).

    Attributes:
        task: ``classification`` or ``segmentation``.
        name: model name (the bundle's ``metadata.json`` ``name``, else its ``bundle_name``, e.g.
            ``classification_2d``, else the bundle folder name).
        version: the bundle version (``metadata.json``).
        network_name: the bundle's ``network_name``.
        spatial_dims: 2 or 3.
        classes: class names (segmentation: index 0 is the background).
        network: the network (returns logits; probability outputs are wrapped).
        preprocessing: the bundle's deterministic preprocessing.
        weights: the checkpoint or TorchScript file.
        threshold: binary classification: decision threshold on the probability of ``positive_class``.
        threshold_source: where the threshold comes from.
        positive_class: binary classification: the class the threshold applies to (the report's, default 1).
        device: compute device.
        options: segmentation settings (``roi_size``, ``sw_batch_size``, ``overlap``, ``tta_flip_axes``).
        decision_rule: classification with three or more classes: the decision rule chosen on validation data
            (``report.json`` / ``cv_report.json``), applied by :func:`medmonai.metrics.clinical.apply_decision_rule`;
            ``None``: argmax.
        domain: the training-domain record (:mod:`medmonai.data.domain`) inputs are checked against; None for a
            model trained before records were written (inputs not checked, with a warning).
        domain_file: where the record was read from (or looked for).
        runtime: ``torch``, or ``onnx`` for a network run by ONNX Runtime (:mod:`medmonai.deploy.onnx`).
        parser: the bundle's config parser (for the ONNX export's sample inputs and planned shapes).
    """

    task: str
    name: str
    version: str
    network_name: str
    spatial_dims: int
    classes: list[str]
    network: torch.nn.Module
    preprocessing: Callable
    weights: str
    threshold: float | None = None
    threshold_source: str = ""
    positive_class: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    options: dict[str, Any] = field(default_factory=dict)
    decision_rule: dict[str, Any] | None = None
    domain: dict[str, Any] | None = None
    domain_file: str | None = None
    runtime: str = "torch"
    parser: Any = field(default=None, repr=False, compare=False)

    def info(self) -> dict[str, Any]:
        """JSON-safe description for the result files."""
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "network": self.network_name,
            "weights": self.weights,
            "spatial_dims": self.spatial_dims,
            "runtime": self.runtime,
        }


def _threshold_from_report(path: Path) -> tuple[float, int] | None:
    """``(threshold, positive class)`` of an evaluation ``report.json`` or ``cv_report.json``, if it has one.

    Read with :func:`~medmonai.metrics.clinical.decision_rule_from_report`, the one reader of recorded rules.
    """
    if not path.is_file():
        return None
    rule = decision_rule_from_report(read_json(path, "report"))
    if rule is None or "threshold" not in rule:
        return None
    return float(rule["threshold"]), int(rule["positive_class"])


def _use_recorded_spatial_dims(
    parser: Any, cached: Mapping[str, Any], fp_file: Path, overrides: Mapping[str, Any]
) -> None:
    """Set ``spatial_dims`` to the trained run's (one bundle serves 2D and 3D); refuse a contradicting override.

    Raises:
        ValueError: when ``overrides`` give a ``spatial_dims`` other than the one the run was planned with.
    """
    recorded = (cached.get("plan") or {}).get("spatial_dims")
    if recorded is None:
        return
    given = overrides.get("spatial_dims")
    if given is not None and int(given) != int(recorded):
        raise ValueError(
            f"{fp_file}: the run was trained in {int(recorded)}D but spatial_dims={given} was given; "
            f"drop the override or pass spatial_dims={int(recorded)}"
        )
    parser["spatial_dims"] = int(recorded)


def _use_recorded_plan(parser: Any, fp_file: Path, overrides: Mapping[str, Any]) -> None:
    """Make the parser use the training run's cached plan, never re-planning or writing into the run.

    The datalist recorded in the fingerprint file (or the one given in ``overrides``, when the data moved) becomes
    ``datalist_file``; when it differs from the recorded one, the plan is read through a temporary copy of the
    fingerprint file that names it, so ``ensure_plan`` finds its cache and the run's file is left untouched.
    """
    cached = read_json(fp_file, "fingerprint file")
    _use_recorded_spatial_dims(parser, cached, fp_file, overrides)
    recorded = cached.get("datalist")
    given = overrides.get("datalist_file") or overrides.get("datalist")
    datalist = str(given) if given else recorded
    if not datalist:
        return
    if not Path(datalist).is_file():
        where = "given" if given else f"the training datalist recorded in {fp_file}"
        raise FileNotFoundError(f"{datalist}: {where} is missing (it gives the class names); pass --set datalist=FILE")
    parser["datalist_file"] = datalist
    if datalist == recorded:
        return
    with tempfile.TemporaryDirectory(prefix="medmonai_plan_") as tmp:
        copy = Path(tmp) / "fingerprint.json"
        atomic_write_json(copy, {**cached, "datalist": datalist})
        parser["fingerprint_file"] = str(copy)
        parser.get_parsed_content("plan")  # resolved (and cached by the parser) while the copy exists


def load_clinical_model(
    bundle: PathLike,
    bundle_root: PathLike = ".",
    model: PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    model_output: str = "auto",
    threshold: float | None = None,
    runtime: str = "torch",
    onnx_model: PathLike | None = None,
) -> ClinicalModel:
    """Load a trained classification or segmentation bundle for inference.

    The bundle's own configs are parsed (``train.yaml`` + ``inference.yaml``; with ``crossval.yaml`` as well when
    ``model`` is a fold ensemble ``<cv_dir>/ensemble/model.ts`` beside a ``cv_report.json``), so preprocessing,
    network and class names are exactly those of training. The preprocessing plan is read from the training
    run's cached fingerprint, and the datalist recorded in it gives the class names: nothing is re-planned or
    regenerated.

    Args:
        bundle: the bundle folder (``bundles/classification``, ``bundles/segmentation``).
        bundle_root: the ``bundle_root`` the bundle was trained with (holds ``runs/``).
        model: weights: a checkpoint (``.pt``, default: the bundle's ``runs/checkpoints/model.pt``) or a
            TorchScript file (``.ts``, ``.jit`` or ``.zip``: a ``ckpt_export`` network or the cross-validation fold
            ensemble).
        overrides: further config overrides (those used in training, e.g. ``{"network_name": "resnet18"}``).
        device: compute device (default: the bundle's ``device``).
        model_output: for TorchScript models: ``logits``, ``probabilities`` or ``auto`` (detected per batch).
        threshold: binary classification: decision threshold on the second class's probability; default: the
            one chosen on out-of-fold predictions (``cv_report.json`` beside a fold ensemble), else the one of
            the run's evaluation report (chosen on validation data), else 0.5.
        runtime: ``torch`` (default) or ``onnx``: the forward pass runs in ONNX Runtime on the CPU
            (:func:`medmonai.deploy.onnx.use_onnx_runtime`; needs the ``onnx`` extra).
        onnx_model: ``runtime="onnx"``: the exported ``.onnx`` file of this checkpoint (``medmonai export``);
            default: exported on the fly into a temporary folder, checked against the checkpoint.

    Returns:
        The :class:`ClinicalModel`.

    Raises:
        FileNotFoundError: for a missing bundle, an untrained ``bundle_root`` (no fingerprint / checkpoint) or a
            missing model file, naming the file.
        ValueError: for a bundle that is neither classification nor segmentation.
    """
    threshold_override = threshold
    folder, implied = resolve_bundle(bundle)
    overrides = {**implied, **(overrides or {})}
    cfg = folder / "configs"
    train, infer = cfg / "train.yaml", cfg / "inference.yaml"
    for f in (train, infer):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: not found; is {bundle} a medmonai bundle with an inference config?")
    model_path = Path(model) if model is not None else None
    if model_path is not None and not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: model file does not exist")
    torchscript = model_path is not None and model_path.suffix.lower() in (".ts", ".jit", ".zip")
    cv_report = model_path.parent.parent / "cv_report.json" if torchscript and model_path is not None else None
    files = [str(train)]
    if cv_report is not None and cv_report.is_file() and (cfg / "crossval.yaml").is_file():
        files.append(str(cfg / "crossval.yaml"))
    else:
        cv_report = None
    files.append(str(infer))
    parser = ConfigParser()
    parser.read_config(files)
    meta: dict[str, Any] = {}
    if (cfg / "metadata.json").is_file():
        parser.read_meta(str(cfg / "metadata.json"))
        meta = read_json(cfg / "metadata.json", "bundle metadata")
    parser["bundle_root"] = str(bundle_root)
    for key, value in (overrides or {}).items():
        parser[key] = value
    fp_file = Path(parser.get_parsed_content("fingerprint_file"))
    if not fp_file.is_file():
        raise FileNotFoundError(
            f"{fp_file}: no preprocessing plan; the bundle has not been trained with bundle_root {bundle_root} "
            "(train it first, or pass the bundle_root and the overrides used in training)"
        )
    _use_recorded_plan(parser, fp_file, overrides or {})
    task = "segmentation" if parser.get("label_names") is not None else "classification"
    if task == "classification" and parser.get("classes") is None:
        raise ValueError(f"{bundle}: neither a classification (classes) nor a segmentation (label_names) bundle")
    classes = [str(c) for c in parser.get_parsed_content("label_names" if task == "segmentation" else "classes")]
    dev = torch.device(device) if device is not None else torch.device(parser.get_parsed_content("device"))
    preprocessing = parser.get_parsed_content("preprocessing")
    if torchscript:
        assert model_path is not None
        net: torch.nn.Module = _AsLogits(torch.jit.load(str(model_path), map_location=dev), model_output)
        weights = str(model_path)
    else:
        weights = str(model_path) if model_path is not None else str(parser.get_parsed_content("checkpoint"))
        if not Path(weights).is_file():
            raise FileNotFoundError(f"{weights}: checkpoint does not exist; train the bundle first or pass --model")
        net = parser.get_parsed_content("network_def", instantiate=True)
        try:
            load_weights(net, weights)
        except RuntimeError as e:  # state-dict mismatch: other network settings in training
            raise ValueError(
                f"{weights}: the checkpoint does not fit the network built from {bundle}'s config; pass the "
                f"overrides used in training (--set KEY=VALUE, e.g. network_name, base_filters): "
                f"{str(e).splitlines()[0]}"
            ) from e
    net = net.to(dev).eval()
    threshold, thr_source, positive_class = None, "argmax", 1
    if task == "classification" and len(classes) == 2:
        threshold, thr_source = 0.5, "default 0.5 (no report with a threshold chosen on validation data)"
        # the fold ensemble: the threshold chosen on the out-of-fold predictions; a checkpoint (or its TorchScript
        # export) of the run under bundle_root: the one its evaluation chose on validation data
        src = cv_report if cv_report is not None else Path(parser.get_parsed_content("eval_report"))
        recorded = _threshold_from_report(src)
        if recorded is not None:  # a threshold given by the user applies to the same (the report's) positive class
            threshold, positive_class = recorded
            thr_source = (
                "chosen on out-of-fold predictions (cv_report.json)"
                if src == cv_report
                else "chosen on validation data (evaluation report)"
            )
        if threshold_override is not None:
            threshold, thr_source = float(threshold_override), "given by the user"
    decision_rule = None
    if task == "classification" and len(classes) > 2:
        src = cv_report if cv_report is not None else Path(parser.get_parsed_content("eval_report"))
        if src.is_file():
            decision_rule = decision_rule_from_report(read_json(src, "report"))
        if decision_rule is not None:
            thr_source = f"decision rule '{decision_rule['method']}' chosen on validation data ({src.name})"
    domain, domain_file = _find_domain_record(model_path if torchscript else None, parser)
    options: dict[str, Any] = {}
    if task == "segmentation":
        options = {
            "roi_size": [int(s) for s in parser.get_parsed_content("roi_size")],
            "sw_batch_size": int(parser.get_parsed_content("sw_batch_size")),
            "overlap": float(parser.get_parsed_content("infer_overlap")),
            "tta_flip_axes": [int(a) for a in parser.get_parsed_content("tta_flip_axes")],
        }
    clinical = ClinicalModel(
        task=task,
        name=str(
            meta.get("name")
            or (parser.get_parsed_content("bundle_name") if parser.get("bundle_name") else folder.resolve().name)
        ),
        version=str(meta.get("version", "0")),
        network_name=str(parser.get_parsed_content("network_name")),
        spatial_dims=int(parser.get_parsed_content("spatial_dims")),
        classes=classes,
        network=net,
        preprocessing=preprocessing,
        weights=weights,
        threshold=threshold,
        threshold_source=thr_source,
        positive_class=positive_class,
        device=dev,
        options=options,
        decision_rule=decision_rule,
        domain=domain,
        domain_file=domain_file,
        parser=parser,
    )
    if runtime not in ("torch", "onnx"):
        raise ValueError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
    if runtime == "onnx":
        from medmonai.deploy.onnx import use_onnx_runtime  # deploy.onnx builds on this module

        clinical = use_onnx_runtime(clinical, onnx_model)
    elif onnx_model is not None:
        raise ValueError(f"{onnx_model}: an ONNX model needs runtime 'onnx' (--runtime onnx)")
    return clinical


def _find_domain_record(model_path: Path | None, parser: Any) -> tuple[dict[str, Any] | None, str]:
    """The training-domain record of the model and its file.

    Looked for beside a TorchScript model (and in its parent, the cross-validation folder of a fold ensemble), then
    in the training run's ``output_dir``.
    """
    places = [model_path.parent, model_path.parent.parent] if model_path is not None else []
    places.append(Path(parser.get_parsed_content("output_dir")))
    for folder in places:
        record = load_training_domain(folder / RECORD_FILE)
        if record is not None:
            return record, str(folder / RECORD_FILE)
    return None, str(places[-1] / RECORD_FILE)


# ------------------------------------------------------------------------------------------------------ series
def _modality(path: Path) -> str | None:
    """The Modality of a DICOM file (header only); None when it is not readable as DICOM."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
    except Exception:  # noqa: BLE001 - anything unreadable is left to the series scan, which reports it
        return None
    return str(ds.get("Modality", "") or "").upper()


def discover_series(source: PathLike | Sequence[PathLike]) -> tuple[list[Any], dict[str, Any]]:
    """Find the valid DICOM image series in a folder (recursively) or a list of files.

    Derived objects (SEG, SR, presentation states, RT objects...) are left out before the scan, so results
    stored back into a study never disturb a later run. Bad files and series are skipped and counted.

    Returns:
        ``(series, report)``: the :class:`~medmonai.data.dicom.SeriesInfo` list and
        ``{"n_files", "n_derived", "problems": [(file, reason), ...]}``.

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: when it holds no files, no DICOM file, or no valid image series (listing the problems).
    """
    if isinstance(source, str | os.PathLike):
        src = Path(source)
        if not src.exists():
            raise FileNotFoundError(f"{src}: input does not exist")
        files = list_folder_files(src, recursive=True) if src.is_dir() else [src]
        where = str(src)
    else:
        files = [Path(f) for f in source]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: file does not exist")
        where = f"{len(files)} given file(s)"
    if not files:
        raise ValueError(f"{where}: no files found")
    kept, derived, unreadable = [], 0, 0
    for f in files:
        modality = _modality(f)
        if modality in _DERIVED_MODALITIES:
            derived += 1
            continue
        unreadable += modality is None
        kept.append(f)
    series, problems = scan_dicom_files(kept, on_error="skip") if kept else ([], [])
    errors = [(p.file, p.reason) for p in problems if is_error(p)]
    report = {"n_files": len(files), "n_derived": derived, "problems": errors}
    if not series:
        if derived == 0 and unreadable == len(files):
            raise ValueError(f"{where}: no DICOM files found ({len(files)} file(s), none readable as DICOM)")
        lines = "".join(f"\n  {f}: {r}" for f, r in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        what = f"{derived} derived object(s) (SEG/SR...) only" if not errors else f"{len(errors)} problem(s):"
        raise ValueError(f"{where}: no usable DICOM image series; {what}{lines}{more}")
    if errors:
        logger.warning(f"{len(errors)} DICOM file(s) or series not usable and skipped (run with -v to list them)")
        for f, r in errors:
            logger.debug(f"skipped {f}: {r}")
    return series, report


def _describe(s: Any) -> str:
    return f"{s.series_uid} ({s.modality or '?'}, {s.n_slices} image(s))"


def select_series(
    series: Sequence[Any],
    spatial_dims: int,
    rule: str = "all",
    series_uids: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    min_slices: int = 2,
) -> tuple[list[Any], list[dict[str, str]]]:
    """Choose the series to process (see the module docstring for the rule).

    Args:
        series: the candidate series (:class:`~medmonai.data.dicom.SeriesInfo`).
        spatial_dims: the bundle's dimensionality (2: single-image series; 3: volumes).
        rule: ``all`` or ``largest``.
        series_uids: explicit SeriesInstanceUIDs (then ``rule`` is not used).
        modalities: allowed Modality values (e.g. ``["CT"]``); None: any.
        min_slices: 3D bundles: the fewest slices a series needs (localizers have fewer).

    Returns:
        ``(chosen, skipped)``, ``skipped`` being ``[{"SeriesInstanceUID", "reason"}]``.

    Raises:
        ValueError: for an unknown rule, an unknown UID, or when no series fits (listing the series found).
    """
    if rule not in ("all", "largest"):
        raise ValueError(f"series rule must be 'all' or 'largest', got {rule!r}")
    found = "; ".join(_describe(s) for s in series) or "none"
    if series_uids:
        by_uid = {s.series_uid: s for s in series}
        unknown = [u for u in series_uids if u not in by_uid]
        if unknown:
            raise ValueError(f"series {', '.join(unknown)} not found among the usable series: {found}")
        chosen = [by_uid[u] for u in dict.fromkeys(series_uids)]
        for s in chosen:
            if (s.n_slices == 1) != (spatial_dims == 2):
                raise ValueError(f"series {_describe(s)} does not fit a {spatial_dims}D bundle")
        skipped = [{"SeriesInstanceUID": s.series_uid, "reason": "not requested"} for s in series if s not in chosen]
        return chosen, skipped
    allowed = {m.upper() for m in modalities} if modalities else None
    chosen, skipped = [], []
    for s in series:
        reason = None
        if allowed is not None and s.modality.upper() not in allowed:
            reason = f"modality {s.modality or '?'} not in {sorted(allowed)}"
        elif spatial_dims == 2 and s.n_slices != 1:
            reason = f"{s.n_slices} slices: not a single image for a 2D bundle"
        elif spatial_dims == 3 and s.n_slices < max(2, min_slices):
            reason = f"{s.n_slices} slice(s): fewer than {max(2, min_slices)} for a 3D bundle"
        elif s.samples_per_pixel != 1:
            reason = "colour image (the bundles take one grey channel)"
        if reason:
            skipped.append({"SeriesInstanceUID": s.series_uid, "reason": reason})
        else:
            chosen.append(s)
    if not chosen:
        raise ValueError(f"no series fits a {spatial_dims}D bundle (series found: {found})")
    if rule == "largest" and len(chosen) > 1:
        best = max(chosen, key=lambda s: (int(np.prod(s.loaded_shape)), s.series_uid))
        skipped += [{"SeriesInstanceUID": s.series_uid, "reason": "not the largest"} for s in chosen if s is not best]
        chosen = [best]
    return chosen, skipped


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


# ---------------------------------------------------------------------------------------------------- inference
def _quiet_libraries() -> None:
    """Keep highdicom's INFO chatter (one line per copied module) out of the logs unless configured otherwise."""
    log = logging.getLogger("highdicom")
    if log.level == logging.NOTSET:
        log.setLevel(logging.WARNING)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _series_record(s: Any) -> dict[str, Any]:
    return {
        "StudyInstanceUID": s.study_uid,
        "SeriesInstanceUID": s.series_uid,
        "Modality": s.modality,
        "n_instances": int(s.n_slices),
    }


def _mark(rec: dict[str, Any], problems: Sequence[str]) -> None:
    rec["out_of_distribution"] = bool(problems)
    rec["out_of_distribution_reasons"] = list(problems)


def _rule_text(rule: Mapping[str, Any]) -> str:
    """A multi-class decision rule in one line (result tables): ``"argmax"`` or ``"prior_shift alpha=0.5"``."""
    return "argmax" if rule["method"] == "argmax" else f"prior_shift alpha={float(rule['alpha']):.6g}"


def _classify(
    model: ClinicalModel, chosen: Sequence[Any], out: Path, batch_size: int, ood: Sequence[Sequence[str]]
) -> list[dict[str, Any]]:
    entries = [{"image": [str(f) for f in s.files], "case_id": s.series_uid} for s in chosen]
    _, probs, _ = predict_probabilities(model.network, entries, model.preprocessing, model.device, batch_size)
    records = []
    for s, p, problems in zip(chosen, probs, ood, strict=True):
        rule = model.decision_rule if model.threshold is None else model.threshold
        pred = int(apply_decision_rule(p, rule, positive_class=model.positive_class))
        sr = write_classification_sr(
            safe_output_path(out, s.series_uid, "_sr.dcm", "SeriesInstanceUID"), s.files, model.classes,
            [float(v) for v in p], pred, model.threshold, model.name, model.version,
            out_of_distribution=problems, decision_rule=model.decision_rule,
        )  # fmt: skip
        rec = _series_record(s)
        rec["probabilities"] = {c: float(v) for c, v in zip(model.classes, p, strict=True)}
        rec["predicted"] = model.classes[pred]
        rec["threshold"] = model.threshold
        if model.decision_rule is not None:
            rec["decision_rule"] = _rule_text(model.decision_rule)
        rec["outputs"] = {"sr": sr.name}
        _mark(rec, problems)
        records.append(rec)
        probs_text = ", ".join(f"{c} {v:.3f}" for c, v in rec["probabilities"].items())
        logger.info(f"series {s.series_uid}: {rec['predicted']} ({probs_text}) -> {sr.name}")
    return records


def _segment(
    model: ClinicalModel, chosen: Sequence[Any], out: Path, nifti: bool, ood: Sequence[Sequence[str]]
) -> list[dict[str, Any]]:
    o = model.options
    predictor = SegmentationPredictor(
        model.network, model.preprocessing, o["roi_size"], len(model.classes), o["sw_batch_size"], o["overlap"],
        device=model.device, tta_flip_axes=o["tta_flip_axes"],
    )  # fmt: skip
    records = []
    for s, problems in zip(chosen, ood, strict=True):
        files = [str(f) for f in s.files]
        result = predictor.predict(files)
        label = result["label"]
        description = f"{model.name} segmentation" + (" (OUT OF DISTRIBUTION)" if problems else "")
        seg = write_dicom_seg(
            safe_output_path(out, s.series_uid, "_seg.dcm", "SeriesInstanceUID"), label, files, model.classes,
            affine=result["affine"], series_uid=s.series_uid, model_name=model.name, model_version=model.version,
            series_description=description,
        )  # fmt: skip
        rec = _series_record(s)
        rec["outputs"] = {"seg": seg.name}
        if nifti:
            nii = safe_output_path(out, s.series_uid, "_seg.nii.gz", "SeriesInstanceUID")
            rec["outputs"]["nifti"] = write_nifti_mask(nii, label, result["affine"]).name
        _mark(rec, problems)
        voxel = float(np.prod(result["spacing"]))
        rec["volume_mm3"] = {c: float((label == k).sum() * voxel) for k, c in enumerate(model.classes) if k > 0}
        records.append(rec)
        vols = ", ".join(f"{c} {v:.0f} mm3" for c, v in rec["volume_mm3"].items())
        logger.info(f"series {s.series_uid}: segmented ({vols}) -> {seg.name}")
    return records


def _csv_text(model: ClinicalModel, records: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for r in records:
        row: dict[str, Any] = {k: r[k] for k in ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "n_instances")}
        if model.task == "classification":
            row.update({f"prob_{c}": f"{p:.6f}" for c, p in r["probabilities"].items()})
            row["threshold"] = "" if r["threshold"] is None else f"{r['threshold']:.6g}"
            if "decision_rule" in r:
                row["decision_rule"] = r["decision_rule"]
            row["predicted"] = r["predicted"]
        else:
            row.update({f"volume_mm3_{c}": f"{v:.3f}" for c, v in r["volume_mm3"].items()})
        row["out_of_distribution"] = str(bool(r.get("out_of_distribution"))).lower()
        row["out_of_distribution_reasons"] = "; ".join(r.get("out_of_distribution_reasons") or [])
        row["model_name"], row["model_version"] = model.name, model.version
        row.update({f"output_{k}": v for k, v in r["outputs"].items()})
        rows.append(row)
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def infer_dicom(
    model: ClinicalModel,
    source: PathLike | Sequence[Any],
    out_dir: PathLike,
    series: str = "all",
    series_uids: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    min_slices: int = 2,
    nifti: bool = True,
    batch_size: int = 8,
    allow_out_of_distribution: bool = False,
) -> dict[str, Any]:
    """Run a loaded bundle on the DICOM series of a study and write the standard results into ``out_dir``.

    Every chosen series is first checked against the model's training domain (:mod:`medmonai.data.domain`):
    a series outside it (another channel count, dimensionality or modality, intensities clearly outside the
    training ones) is refused before anything is written, with a message naming the series and the statistic
    out of range; with ``allow_out_of_distribution`` it is processed and marked (``out_of_distribution`` and the
    reasons in ``results.json`` / ``results.csv``, a TEXT item in the SR). A model without a training-domain record
    (trained before records were written) is run with a warning that the inputs are not checked.

    Output file names are built from the SeriesInstanceUID through :func:`medmonai.utils.safe_output_path`: a UID
    that is not a plain name (``../x``, ``/tmp/x``) is sanitised and never leaves ``out_dir``.

    Outputs (each written atomically; the tables last):

    * classification: ``{SeriesInstanceUID}_sr.dcm`` (:func:`write_classification_sr`) per series;
    * segmentation: ``{SeriesInstanceUID}_seg.dcm`` (DICOM SEG) and ``{SeriesInstanceUID}_seg.nii.gz``;
    * ``results.json`` (model name/version/weights, classes, threshold and its source, the series rule, one
      record per series keyed by StudyInstanceUID/SeriesInstanceUID, the series left out and why) and
      ``results.csv`` (one row per series).

    Args:
        model: from :func:`load_clinical_model`.
        source: a study folder (searched recursively), DICOM files, or already scanned
            :class:`~medmonai.data.dicom.SeriesInfo` objects.
        out_dir: output folder (created).
        series: ``all`` or ``largest`` (see :func:`select_series`).
        series_uids: process exactly these series.
        modalities: allowed modalities.
        min_slices: fewest slices of a 3D series.
        nifti: segmentation: also write the mask as NIfTI.
        batch_size: classification batch size.
        allow_out_of_distribution: process (and mark) series outside the training domain instead of refusing them.

    Returns:
        The ``results.json`` content.

    Raises:
        FileNotFoundError: missing input.
        ValueError: no DICOM, no usable series, no series fitting the bundle, unknown series UID.
        medmonai.data.domain.OutOfDistributionError: (a ``ValueError``) a series outside the training domain.
    """
    _quiet_libraries()
    t0 = time.perf_counter()
    items = list(source) if isinstance(source, list | tuple) else None
    if items and all(isinstance(s, SeriesInfo) for s in items):
        found, scan = items, {"n_files": sum(len(s.files) for s in items), "n_derived": 0, "problems": []}
    else:
        found, scan = discover_series(source if items is None else [Path(str(f)) for f in items])
    chosen, skipped = select_series(found, model.spatial_dims, series, series_uids, modalities, min_slices)
    ood = screen_inputs(
        model.domain, [[str(f) for f in s.files] for s in chosen], model.preprocessing, allow_out_of_distribution,
        names=[s.series_uid for s in chosen], what="series", record_file=model.domain_file,
    )  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger.info(
        f"{len(chosen)} of {len(found)} series to process with {model.name} {model.version} ({model.task}, "
        f"rule '{'explicit UIDs' if series_uids else series}')"
    )
    with torch.no_grad():
        if model.task == "classification":
            records = _classify(model, chosen, out, batch_size, ood)
        else:
            records = _segment(model, chosen, out, nifti, ood)
    result: dict[str, Any] = {
        "created": _now(),
        "model": model.info(),
        "classes": list(model.classes),
        "n_series": len(records),
        "series_rule": {"rule": series, "series_uids": list(series_uids or []), "modalities": list(modalities or [])},
        "results": records,
        "skipped_series": skipped,
        "input": {
            "n_files": scan["n_files"],
            "n_derived_ignored": scan["n_derived"],
            "n_problems": len(scan["problems"]),
        },
        "input_check": {
            "training_domain": model.domain_file if model.domain is not None else None,
            "checked": model.domain is not None,
            "allow_out_of_distribution": bool(allow_out_of_distribution),
            "n_out_of_distribution": sum(bool(p) for p in ood),
        },
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if model.task == "classification":
        result["threshold"] = model.threshold
        result["threshold_source"] = model.threshold_source
        result["decision_rule"] = model.decision_rule
    atomic_write_text(out / "results.csv", _csv_text(model, records))
    atomic_write_json(out / "results.json", result)
    logger.info(f"wrote results for {len(records)} series to {out}")
    return result


def result_files(result: Mapping[str, Any], out_dir: PathLike) -> list[Path]:
    """The DICOM objects (SR/SEG) listed in a ``results.json`` content, as paths under ``out_dir``."""
    files = []
    for r in result.get("results", []):
        files += [Path(out_dir) / name for k, name in r.get("outputs", {}).items() if k in ("sr", "seg")]
    return files


# -------------------------------------------------------------------------------------------------------- watch
def _load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"version": 1, "studies": {}, "pending": {}}
    state = read_json(path, "watch state file")
    if not isinstance(state, dict) or not isinstance(state.get("studies"), dict):
        raise ValueError(f"{path}: not a medmonai watch state file")
    state.setdefault("pending", {})
    return state


def _record(state: dict[str, Any], path: Path, study_uid: str, entry: Mapping[str, Any]) -> None:
    state["studies"][study_uid] = {"time": _now(), **entry}
    state["pending"].pop(study_uid, None)
    atomic_write_json(path, state)


def _process_study(
    model: ClinicalModel,
    series: Sequence[Any],
    out: Path,
    infer_kwargs: Mapping[str, Any],
    after: Callable[[dict[str, Any], Path], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    try:
        result = infer_dicom(model, list(series), out, **infer_kwargs)
        entry: dict[str, Any] = {"status": "done", "n_series": result["n_series"], "outputs": str(out)}
        if after is not None:
            entry.update(after(result, out))
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
        logger.error(f"study failed: {e}")
        entry = {"status": "failed", "error": str(e)}
    return entry


def watch_folder(
    model: ClinicalModel,
    inbox: PathLike,
    out_dir: PathLike,
    state_file: PathLike | None = None,
    min_age_s: float = 30.0,
    interval_s: float = 10.0,
    once: bool = False,
    retry_failed: bool = False,
    max_polls: int | None = None,
    **infer_kwargs: Any,
) -> dict[str, Any]:
    """Process each new study arriving in ``inbox`` once; results go to ``out_dir/{StudyInstanceUID}/``.

    Every poll looks at the sub-folders of ``inbox`` (and at its loose files, as one group); a group whose newest
    file changed less than ``min_age_s`` seconds ago is still arriving and waits for a later poll. The other
    groups are scanned into series, grouped by StudyInstanceUID, and every study not yet in the state file is
    processed with :func:`infer_dicom` and recorded there (``done`` or ``failed`` with the error; failed studies
    are retried only with ``retry_failed``). Input files are never moved or changed. The output folder name is the
    StudyInstanceUID made a safe name (:func:`medmonai.utils.safe_output_path`): a UID such as ``../x`` or
    ``/tmp/x`` never leads outside ``out_dir``. A study with a series outside the model's training domain fails
    (the error says which statistic is out of range) unless ``allow_out_of_distribution=True`` is passed on.

    Args:
        model: from :func:`load_clinical_model`.
        inbox: the folder to watch.
        out_dir: output root.
        state_file: JSON state (default ``out_dir/watch_state.json``).
        min_age_s: quiet time before a folder counts as complete.
        interval_s: seconds between polls.
        once: one poll, then return (for cron jobs and tests).
        retry_failed: process failed studies again.
        max_polls: stop after this many polls (None: run until interrupted, unless ``once``).
        infer_kwargs: :func:`infer_dicom` options (``series``, ``modalities``...).

    Returns:
        The last poll's summary ``{"processed": [...], "failed": [...], "already_done": [...], "waiting": [...]}``.
    """
    root = Path(inbox)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: inbox folder does not exist")
    out = Path(out_dir)
    state_path = Path(state_file) if state_file is not None else out / STATE_FILE
    state = _load_state(state_path)
    polls = 0
    warned: set[str] = set()
    while True:
        summary: dict[str, list[str]] = {"processed": [], "failed": [], "already_done": [], "waiting": []}
        groups = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        loose = list_folder_files(root, recursive=False)
        now = time.time()
        for group in groups + ([root] if loose else []):
            name = group.name if group != root else "."
            try:
                files = loose if group == root else list_folder_files(group, recursive=True)
                newest = max((f.stat().st_mtime for f in files), default=None)
            except OSError:  # a file renamed or removed while we look: the folder is still changing
                newest = now
            if newest is None:
                continue
            if now - newest < min_age_s:
                summary["waiting"].append(name)
                continue
            try:
                found, _ = discover_series(files)
            except (ValueError, OSError) as e:
                if name not in warned:  # once per folder and process, not at every poll
                    logger.warning(f"inbox folder {name}: nothing to process ({str(e).splitlines()[0]})")
                    warned.add(name)
                continue
            by_study: dict[str, list[Any]] = {}
            for s in found:
                by_study.setdefault(s.study_uid or s.series_uid, []).append(s)
            for study_uid, series in by_study.items():
                done = state["studies"].get(study_uid)
                if done and (done.get("status") == "done" or not retry_failed):
                    summary["already_done"].append(study_uid)
                    continue
                logger.info(f"study {study_uid}: {len(series)} series")
                try:
                    study_out = safe_output_path(out, study_uid, what="StudyInstanceUID")
                except ValueError as e:
                    logger.error(f"study failed: {e}")
                    entry = {"status": "failed", "error": str(e)}
                else:
                    entry = _process_study(model, series, study_out, infer_kwargs)
                _record(state, state_path, study_uid, entry)
                summary["processed" if entry["status"] == "done" else "failed"].append(study_uid)
        polls += 1
        if once or (max_polls is not None and polls >= max_polls):
            return summary
        time.sleep(interval_s)


def watch_pacs(
    model: ClinicalModel,
    client: Any,
    out_dir: PathLike,
    state_file: PathLike | None = None,
    store_results: bool = True,
    stable_polls: int = 1,
    interval_s: float = 30.0,
    once: bool = False,
    retry_failed: bool = False,
    max_polls: int | None = None,
    query: Mapping[str, str] | None = None,
    keep_inputs: bool = False,
    **infer_kwargs: Any,
) -> dict[str, Any]:
    """Process each new study of a PACS (C-FIND, then C-GET or C-MOVE) once; store the SR/SEG results back (C-STORE).

    A study is processed when its number of instances has not changed for ``stable_polls`` polls (0: at once),
    so that a study still being sent is not taken half. Only its image series are retrieved (derived objects
    such as earlier results are not), into ``out_dir/{StudyInstanceUID}/input`` (deleted after the run unless
    ``keep_inputs``); the results go to ``out_dir/{StudyInstanceUID}/`` and, with ``store_results``, back into the
    PACS, where they join the same study. Processed StudyInstanceUIDs are remembered in the state file.

    Args:
        model: from :func:`load_clinical_model`.
        client: a :class:`medmonai.apps.pacs.PacsClient` (retrieval by C-MOVE when it has a ``move_port``), or a
            :class:`medmonai.deploy.dicomweb.DicomWebClient` (QIDO-RS, WADO-RS, results stored with STOW-RS).
        out_dir: output root.
        state_file: JSON state (default ``out_dir/watch_state.json``).
        store_results: store the SR/SEG objects back (C-STORE, or STOW-RS for DICOMweb).
        stable_polls: polls with an unchanged instance count before a study is processed.
        interval_s: seconds between polls.
        once: one poll, then return.
        retry_failed: process failed studies again.
        max_polls: stop after this many polls.
        query: C-FIND matching keys for the studies (e.g. ``{"StudyDate": "20240101-"}``).
        keep_inputs: keep the retrieved files.
        infer_kwargs: :func:`infer_dicom` options.

    Returns:
        The last poll's summary ``{"processed", "failed", "already_done", "waiting"}``.
    """
    out = Path(out_dir)
    state_path = Path(state_file) if state_file is not None else out / STATE_FILE
    state = _load_state(state_path)
    polls = 0
    while True:
        summary: dict[str, list[str]] = {"processed": [], "failed": [], "already_done": [], "waiting": []}
        for study in client.find_studies(**dict(query or {})):
            uid = study["StudyInstanceUID"]
            done = state["studies"].get(uid)
            if done and (done.get("status") == "done" or not retry_failed):
                summary["already_done"].append(uid)
                continue
            count = int(study.get("NumberOfStudyRelatedInstances") or 0)
            seen = state["pending"].get(uid)
            stable = int(seen["stable"]) + 1 if seen and seen.get("count") == count else 0
            if stable < stable_polls:
                state["pending"][uid] = {"count": count, "stable": stable}
                atomic_write_json(state_path, state)
                summary["waiting"].append(uid)
                continue
            series = [
                s["SeriesInstanceUID"]
                for s in client.find_series(uid)
                if str(s.get("Modality") or "").upper() not in _DERIVED_MODALITIES
            ]
            try:
                study_out = safe_output_path(out, uid, what="StudyInstanceUID")
            except ValueError as e:
                logger.error(f"study {uid!r} failed: {e}")
                _record(state, state_path, str(uid), {"status": "failed", "error": str(e)})
                summary["failed"].append(str(uid))
                continue
            work = study_out / "input"
            logger.info(f"study {uid}: retrieving {len(series)} image series")

            def store(result: dict[str, Any], folder: Path) -> dict[str, Any]:
                if not store_results:
                    return {}
                return {"stored": client.store(result_files(result, folder))}

            try:
                if not series:
                    raise ValueError(f"study {uid}: no image series in the PACS")
                files = client.retrieve(uid, work, series_uids=series)  # C-MOVE with a move_port, else C-GET
                entry = _process_study(model, files, study_out, infer_kwargs, after=store)
            except (ValueError, RuntimeError, OSError) as e:
                logger.error(f"study {uid} failed: {e}")
                entry = {"status": "failed", "error": str(e)}
            finally:
                if not keep_inputs:
                    shutil.rmtree(work, ignore_errors=True)
            _record(state, state_path, uid, entry)
            summary["processed" if entry["status"] == "done" else "failed"].append(uid)
        polls += 1
        if once or (max_polls is not None and polls >= max_polls):
            return summary
        time.sleep(interval_s)
