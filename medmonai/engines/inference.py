"""Inference on new data: a datalist, a folder of images, or a folder of DICOM series -> CSV + JSON predictions."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from medmonai.data.datalist import load_datalist
from medmonai.data.dicom import is_dicom_file, is_error, scan_dicom_folder
from medmonai.data.domain import load_training_domain, screen_inputs
from medmonai.engines.evaluation import load_weights, predict_probabilities
from medmonai.metrics.clinical import apply_decision_rule, decision_rule_from_report
from medmonai.utils import PathLike, atomic_write_json, atomic_write_text

__all__ = ["collect_inputs", "predict_to_files"]

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz")


def collect_inputs(source: PathLike, key: str = "all") -> list[dict[str, Any]]:
    """Entries to predict from a datalist JSON, a folder of DICOM files (one entry per series) or of images.

    DICOM entries get ``case_id`` = SeriesInstanceUID and carry Study/Series UIDs (never patient names or ids);
    image entries get ``case_id`` = the path relative to the folder. Bad DICOM files are skipped and logged.

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: if nothing to predict is found.
    """
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"{src}: input does not exist")
    if src.is_file() and src.suffix == ".json":
        entries = load_datalist(src, key)
    elif src.is_dir():
        files = [p for p in sorted(src.rglob("*")) if p.is_file() and not p.name.startswith(".")]
        if any(is_dicom_file(p) for p in files[:50]):
            series, problems = scan_dicom_folder(src, on_error="skip", progress=False)
            for p in problems:
                if is_error(p):
                    logger.warning(f"skipped: {p}")
            entries = [
                {"image": list(map(str, s.files)), "case_id": s.series_uid, **s.to_entry_metadata()} for s in series
            ]
        else:
            entries = [
                {"image": str(p), "case_id": p.relative_to(src).as_posix()}
                for p in files
                if p.name.lower().endswith(_IMAGE_SUFFIXES)
            ]
    else:
        entries = [{"image": str(src), "case_id": src.name}]
    if not entries:
        raise ValueError(f"{src}: no images or DICOM series found to predict")
    return entries


def predict_to_files(
    network: torch.nn.Module,
    transform: Callable,
    source: PathLike,
    out_dir: PathLike,
    classes: Sequence[str],
    checkpoint: PathLike | None = None,
    input_key: str = "all",
    eval_report: PathLike | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    model_info: dict[str, Any] | None = None,
    training_domain: PathLike | Mapping[str, Any] | None = None,
    allow_out_of_distribution: bool = False,
) -> dict[str, Any]:
    """Predict every input and write ``predictions.csv`` and ``predictions.json`` (atomically) into ``out_dir``.

    For binary problems the decision uses the threshold chosen on validation data, read from the evaluation
    report (``eval_report``) when it exists; otherwise 0.5, and the output says so. With three or more classes it
    uses the report's multi-class decision rule (chosen on validation data) when it exists; otherwise the argmax.

    Every input is first checked against the model's training domain (``training_domain``, the
    ``training_domain.json`` written in training; :mod:`medmonai.data.domain`): inputs outside it are refused
    (:class:`~medmonai.data.domain.OutOfDistributionError`, naming each input and the statistic out of range)
    before anything is written, or with ``allow_out_of_distribution`` predicted and marked (``out_of_distribution``
    and ``out_of_distribution_reasons`` per row). Without a record the inputs are not checked (a warning says so).

    Returns:
        The JSON content.
    """
    if checkpoint is not None:
        load_weights(network, checkpoint)
    network = network.to(device)
    entries = collect_inputs(source, input_key)
    record = training_domain if isinstance(training_domain, Mapping) else load_training_domain(training_domain)
    ood = screen_inputs(
        record, entries, transform, allow_out_of_distribution,
        names=[str(e.get("case_id", e["image"])) for e in entries], what="input",
        record_file=None if isinstance(training_domain, Mapping) or training_domain is None else str(training_domain),
    )  # fmt: skip
    _, probs, ids = predict_probabilities(network, entries, transform, device, batch_size)
    threshold, thr_source = None, "argmax"
    rule: dict[str, Any] | None = None
    if len(classes) > 2 and eval_report and Path(eval_report).is_file():
        rule = decision_rule_from_report(json.loads(Path(eval_report).read_text(encoding="utf-8")))
        if rule is not None:
            thr_source = f"decision rule '{rule['method']}' chosen on validation data ({eval_report})"
    if len(classes) == 2:
        # the report's rule names its positive class (not always index 1): the one decision rule of
        # medmonai.metrics.clinical, with the threshold chosen on validation data
        rule = {"threshold": 0.5, "positive_class": 1}
        threshold, thr_source = 0.5, "default 0.5 (no evaluation report with a validation-chosen threshold)"
        if eval_report and Path(eval_report).is_file():
            recorded = decision_rule_from_report(json.loads(Path(eval_report).read_text(encoding="utf-8")))
            if recorded is not None and recorded.get("threshold") is not None:
                rule, threshold = recorded, float(recorded["threshold"])
                thr_source = f"chosen on validation data ({eval_report})"
    preds = apply_decision_rule(probs, rule)
    meta_keys = ("StudyInstanceUID", "SeriesInstanceUID")
    rows = []
    for i, e in enumerate(entries):
        row: dict[str, Any] = {"case_id": ids[i]}
        row.update({k: e[k] for k in meta_keys if k in e})
        row.update({f"prob_{c}": float(probs[i, j]) for j, c in enumerate(classes)})
        row["predicted"] = classes[int(preds[i])]
        row["out_of_distribution"] = bool(ood[i])
        row["out_of_distribution_reasons"] = "; ".join(ood[i])
        rows.append(row)
    out = Path(out_dir)
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "predictions.csv", buf.getvalue())
    result = {
        "model": dict(model_info or {}),
        "classes": list(classes),
        "threshold": threshold,
        "threshold_source": thr_source,
        "decision_rule": rule if len(classes) > 2 else None,
        "n_cases": len(rows),
        "input_check": {
            "checked": record is not None,
            "allow_out_of_distribution": bool(allow_out_of_distribution),
            "n_out_of_distribution": sum(bool(p) for p in ood),
        },
        "predictions": rows,
    }
    atomic_write_json(out / "predictions.json", result)
    logger.info(f"wrote {len(rows)} predictions to {out}")
    return result
