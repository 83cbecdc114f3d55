"""Clinical inference: a DICOM study in, standard DICOM results out (SEG for masks, SR for classifications).

``medmonai infer BUNDLE STUDY_DIR --out OUT`` (:func:`infer_dicom`) runs a **trained** bundle (loaded by
:func:`medmonai.deploy.models.load_clinical_model`) on the DICOM series of a study folder:

* **classification** bundles (the checkpoint ``runs/checkpoints/model.pt``, another checkpoint, or a TorchScript
  model such as the cross-validation fold ensemble ``runs/cv/ensemble/model.ts``) write, per series, a DICOM
  *Comprehensive 3D SR* (:func:`medmonai.data.dicom_output.write_classification_sr`) holding one probability per
  class, the decision threshold (binary) or the multi-class decision rule, the predicted class and the algorithm's
  name and version, referencing the source study, series and instances; plus ``results.json`` / ``results.csv``
  keyed by StudyInstanceUID / SeriesInstanceUID;
* **segmentation** bundles write, per series, a DICOM SEG (:func:`medmonai.data.dicom_output.write_dicom_seg`) whose
  frames reference the source instances, the mask as NIfTI in the series geometry, and the same ``results.json`` /
  ``results.csv`` with volumes per class.

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

:func:`watch_folder` and :func:`watch_pacs` process new studies arriving in a folder or in a PACS (DIMSE or
DICOMweb), each once: one watch loop for every source, one per-study step and one state file of processed
StudyInstanceUIDs.

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
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch

from medmonai.data.dicom import SeriesInfo, is_error, list_folder_files, scan_dicom_files
from medmonai.data.dicom_output import (
    write_classification_sr,
    write_dicom_seg,
    write_nifti_mask,
)
from medmonai.data.domain import screen_inputs
from medmonai.deploy.models import ClinicalModel
from medmonai.engines.evaluation import predict_probabilities
from medmonai.engines.segmentation_inference import SegmentationPredictor
from medmonai.metrics.clinical import (
    apply_decision_rule,
)
from medmonai.utils import PathLike, atomic_write_json, atomic_write_text, read_json, safe_output_path

__all__ = [
    "discover_series",
    "select_series",
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


def _watch_loop(
    poll: Callable[[dict[str, list[str]]], None], once: bool, max_polls: int | None, interval_s: float
) -> dict[str, Any]:
    """The one watch loop of every source (folder, DIMSE, DICOMweb): ``poll`` fills a summary; sleep; repeat.

    Returns:
        The last poll's summary ``{"processed", "failed", "already_done", "waiting"}``.
    """
    polls = 0
    while True:
        summary: dict[str, list[str]] = {"processed": [], "failed": [], "already_done": [], "waiting": []}
        poll(summary)
        polls += 1
        if once or (max_polls is not None and polls >= max_polls):
            return summary
        time.sleep(interval_s)


def _already_done(state: Mapping[str, Any], study_uid: str, retry_failed: bool) -> bool:
    """Whether the state file holds the study as finished (a failed one counts unless ``retry_failed``)."""
    done = state["studies"].get(study_uid)
    return bool(done and (done.get("status") == "done" or not retry_failed))


def _finish(
    state: dict[str, Any], state_path: Path, study_uid: str, entry: dict[str, Any], summary: dict[str, list[str]]
) -> None:
    """Record a processed study in the state file and the poll's summary."""
    _record(state, state_path, study_uid, entry)
    summary["processed" if entry["status"] == "done" else "failed"].append(study_uid)


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
    warned: set[str] = set()

    def poll(summary: dict[str, list[str]]) -> None:
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
                if _already_done(state, study_uid, retry_failed):
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
                _finish(state, state_path, study_uid, entry, summary)

    return _watch_loop(poll, once, max_polls, interval_s)


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
        client: a :class:`medmonai.deploy.pacs.PacsClient` (retrieval by C-MOVE when it has a ``move_port``), or a
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

    def store(result: dict[str, Any], folder: Path) -> dict[str, Any]:
        if not store_results:
            return {}
        return {"stored": client.store(result_files(result, folder))}

    def poll(summary: dict[str, list[str]]) -> None:
        for study in client.find_studies(**dict(query or {})):
            uid = study["StudyInstanceUID"]
            if _already_done(state, uid, retry_failed):
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
                _finish(state, state_path, str(uid), {"status": "failed", "error": str(e)}, summary)
                continue
            work = study_out / "input"
            logger.info(f"study {uid}: retrieving {len(series)} image series")
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
            _finish(state, state_path, uid, entry, summary)

    return _watch_loop(poll, once, max_polls, interval_s)
