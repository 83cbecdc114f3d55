"""One-call evaluation report: per-case predictions CSV, ROC and confusion-matrix PNGs, and a JSON report.

:func:`write_classification_report` writes, into ``out_dir``:

* ``predictions.csv`` — one row per case: ``case_id, true_index, true_label, prob_<class>..., pred_index,
  pred_label, correct`` (``correct`` is 1/0). Probabilities are written at full precision.
* ``roc.png`` — binary: the ROC curve with its AUC (and CI) and the operating point at the threshold;
  multi-class: the one-vs-rest curves of every class.
* ``confusion_matrix.png`` — counts and row-normalised (per true class) side by side.
* ``report.json`` — the evaluated split's name (``split``), metrics with bootstrap CIs, threshold information
  (binary) or the decision rule (multi-class), class names, counts per class, the confusion matrix, the
  majority-class rate (the accuracy of always answering the commonest class) with a warning when the accuracy is
  below it, notes on undefined values and the caller's ``extra`` information (model, run, data set...).

Privacy: the outputs hold no identifier except the ``case_ids`` the caller passes (default: the row number
``0 .. N-1``). Do not pass patient names/IDs or paths containing them as case ids unless the report is meant to hold
them.

The figure titles name the evaluated split and its case count
(``ROC — test split, n=156 (42 positive 'malignant')``), so a PNG copied out of its folder still says what it shows.
:func:`summary_line` turns a classification report (or a segmentation report of
:mod:`medmonai.metrics.segmentation`) into one line of text; :func:`print_summary` prints it, e.g. at the end of a
bundle's ``evaluate.yaml``.

Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure`` rendered by Agg), so the global pyplot
state and backend of the caller are left alone; all files are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from medmonai.metrics.bootstrap import bootstrap_ci
from medmonai.metrics.clinical import (
    classification_metrics,
    majority_class_rate,
    predict_labels,
    prepare_inputs,
    resolve_threshold,
)
from medmonai.utils import PathLike, atomic_write, atomic_write_json, atomic_write_text, to_jsonable

__all__ = [
    "REPORT_FILES",
    "write_classification_report",
    "predictions_csv_text",
    "save_roc_png",
    "save_confusion_matrix_png",
    "majority_warning",
    "split_caption",
    "summary_line",
    "classification_summary_line",
    "segmentation_summary_line",
    "print_summary",
]

logger = logging.getLogger(__name__)

#: names of the files written by :func:`write_classification_report`
REPORT_FILES: dict[str, str] = {
    "predictions": "predictions.csv",
    "roc": "roc.png",
    "confusion_matrix": "confusion_matrix.png",
    "report": "report.json",
}


def predictions_csv_text(
    case_ids: Sequence[Any],
    y_true: np.ndarray,
    prob: np.ndarray,
    pred: np.ndarray,
    classes: Sequence[str],
    extra_columns: Mapping[str, Sequence[Any]] | None = None,
) -> str:
    """The per-case predictions table as CSV text (see the module docstring for the columns).

    ``extra_columns`` (name -> one value per case) are appended, e.g. the out-of-distribution marks of
    :func:`medmonai.data.domain.out_of_distribution_columns`.
    """
    extra = dict(extra_columns or {})
    for name, values in extra.items():
        if len(values) != len(case_ids):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(case_ids)} cases")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["case_id", "true_index", "true_label", *(f"prob_{c}" for c in classes), "pred_index", "pred_label", "correct"]
        + list(extra)
    )
    for i, (cid, t, p, q) in enumerate(zip(case_ids, y_true.tolist(), prob.tolist(), pred.tolist())):
        row = [cid, t, classes[t], *(repr(float(v)) for v in p), q, classes[q], int(t == q)]
        w.writerow(row + [values[i] for values in extra.values()])
    return buf.getvalue()


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save_png(fig: Any, path: PathLike) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _fmt_ci(entry: Mapping[str, Any] | None, confidence: float) -> str:
    if not entry or entry.get("ci_low") is None:
        return ""
    return f" ({100 * confidence:g}% CI {entry['ci_low']:.3f}-{entry['ci_high']:.3f})"


def save_roc_png(
    path: PathLike,
    y_true: Any,
    y_prob: Any,
    classes: Sequence[str] | None = None,
    positive_class: int = 1,
    operating_point: tuple[float, float] | None = None,
    auc_ci: Mapping[str, Mapping[str, Any]] | None = None,
    confidence: float = 0.95,
    title: str = "ROC",
) -> Path:
    """Draw ROC curve(s) to a PNG.

    Binary: the positive class's ROC, its AUC, and ``operating_point`` = ``(1 - specificity, sensitivity)`` if
    given. Multi-class: one-vs-rest curves per class. A class whose AUC is undefined (absent or alone in
    ``y_true``) is listed as such instead of drawn.

    Args:
        path: output PNG.
        y_true: ``(N,)`` class indices.
        y_prob: ``(N,)`` or ``(N, C)`` probabilities.
        classes: class names.
        positive_class: positive class of a binary problem.
        operating_point: ``(fpr, tpr)`` of the chosen threshold (binary).
        auc_ci: optional bootstrap entries (``{"auc": {...}, "auc/<class>": {...}}``) added to the legend.
        confidence: confidence level of those intervals (for the legend).
        title: figure title.

    Returns:
        The PNG path.
    """
    inp = prepare_inputs(y_true, y_prob, positive_class=positive_class, classes=classes)
    auc_ci = auc_ci or {}
    fig = _new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="chance")
    if inp.binary:
        curves = [(inp.positive_class, inp.classes[inp.positive_class], "auc")]
    else:
        curves = [(k, name, f"auc/{name}") for k, name in enumerate(inp.classes)]
    undefined = []
    for k, name, key in curves:
        labels = inp.y_true == k
        if labels.all() or not labels.any():
            undefined.append(name)
            continue
        fpr, tpr, _ = roc_curve(labels, inp.prob[:, k])
        auc = roc_auc_score(labels, inp.prob[:, k])
        label = f"AUC = {auc:.3f}{_fmt_ci(auc_ci.get(key), confidence)}"
        if not inp.binary:
            label = f"{name}: {label}"
        ax.plot(fpr, tpr, linewidth=2, label=label)
    if inp.binary and operating_point is not None and not undefined:
        ax.plot(
            [operating_point[0]],
            [operating_point[1]],
            marker="o",
            markersize=8,
            color="crimson",
            linestyle="none",
            label=f"operating point (sens {operating_point[1]:.2f}, spec {1 - operating_point[0]:.2f})",
        )
    if undefined:
        ax.text(
            0.5,
            0.45,
            "ROC undefined for " + ", ".join(f"'{u}'" for u in undefined) + "\n(y_true lacks positives or negatives)",
            ha="center",
            va="center",
            fontsize=9,
            color="crimson",
            transform=ax.transAxes,
        )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_title(title if inp.binary else f"{title} (one-vs-rest)")
    ax.legend(loc="lower right", fontsize=8)
    return _save_png(fig, path)


def save_confusion_matrix_png(path: PathLike, confusion: Any, classes: Sequence[str], title: str = "") -> Path:
    """Draw a confusion matrix (rows = true, columns = predicted) as counts and row-normalised, to a PNG.

    A true class without cases has an undefined normalised row, shown as ``n/a``.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.full_like(cm, np.nan), where=rows > 0)
    n_c = len(classes)
    size = max(3.5, 1.0 + 0.6 * n_c)
    fig = _new_figure(2 * size + 0.5, size)
    axes = fig.subplots(1, 2)
    count_max = float(cm.max()) if cm.size and cm.max() > 0 else 1.0
    for ax, mat, sub, fmt, vmax in (
        (axes[0], cm, "counts", "{:.0f}", count_max),
        (axes[1], norm, "row-normalised (per true class)", "{:.2f}", 1.0),
    ):
        ax.imshow(np.nan_to_num(mat), cmap="Blues", vmin=0, vmax=vmax)
        for i in range(n_c):
            for j in range(n_c):
                v = mat[i, j]
                text = "n/a" if np.isnan(v) else fmt.format(v)
                dark = not np.isnan(v) and v > 0.6 * vmax
                ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black", fontsize=9)
        ax.set_xticks(range(n_c), labels=list(classes), rotation=45 if n_c > 3 else 0)
        ax.set_yticks(range(n_c), labels=list(classes))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(sub, fontsize=10)
    if title:
        fig.suptitle(title)
    return _save_png(fig, path)


def split_caption(split: str, y_true: Any, classes: Sequence[str], positive_class: int | None) -> str:
    """The split and case-count part of a figure title: ``"test split, n=40 (12 positive 'malignant')"``.

    Args:
        split: split name (``"test"``, ``"validation"``, ``"cv (out-of-fold)"``...); a one-word name is followed
            by ``" split"``.
        y_true: ``(N,)`` class indices of the evaluated cases.
        classes: class names.
        positive_class: the positive class of a binary problem (``None``: multi-class, counts per class up to
            four classes).
    """
    y = np.asarray(y_true).reshape(-1)
    name = f"{split} split" if split and " " not in split.strip() else (split or "evaluated cases")
    text = f"{name}, n={y.size}"
    if positive_class is not None:
        return f"{text} ({int((y == positive_class).sum())} positive '{classes[positive_class]}')"
    if len(classes) <= 4:
        return text + " (" + ", ".join(f"{int((y == k).sum())} {c}" for k, c in enumerate(classes)) + ")"
    return f"{text}, {len(classes)} classes"


def _default_split(split: str | None, extra: Mapping[str, Any] | None) -> str:
    """The split name: ``split``, ``extra['split']``, ``"cv (out-of-fold)"`` (``extra['what']``) or ``"test"``."""
    if split:
        return str(split)
    extra = extra or {}
    if isinstance(extra.get("split"), str) and extra["split"]:
        return extra["split"]
    if "out-of-fold" in str(extra.get("what", "")):
        return "cv (out-of-fold)"
    return "test"


def _threshold_info(threshold: float | Mapping[str, Any] | None, binary: bool, value: Any) -> dict[str, Any]:
    if not binary:
        if isinstance(value, Mapping):
            return {"threshold": None, "method": value["method"], "source": "decision rule: see decision_rule"}
        return {"threshold": None, "method": "argmax"}
    if isinstance(threshold, Mapping):
        info = dict(threshold)
        info.setdefault("source", "chosen on validation data")
        return info
    if threshold is None:
        return {"threshold": value, "method": "default", "source": "default 0.5, not chosen on validation data"}
    return {"threshold": value, "method": "given", "source": "given by the caller"}


def _rule_title(thr: Any) -> str:
    if isinstance(thr, float):
        return f"threshold {thr:.3g}"
    if isinstance(thr, Mapping) and thr.get("method") == "prior_shift":
        return f"prior-shift rule (alpha {float(thr['alpha']):g})"
    return ""


def majority_warning(accuracy: float | None, majority_rate: float, majority_name: str, binary: bool) -> str | None:
    """The warning line when ``accuracy`` is below the majority-class rate (``None`` otherwise)."""
    if accuracy is None or accuracy >= majority_rate - 1e-12:
        return None
    text = (
        f"accuracy {accuracy:.3f} is below the majority-class rate {majority_rate:.3f} (always answering "
        f"'{majority_name}'): on this split the classifier is less often right than the trivial rule"
    )
    if binary:
        text += "; the threshold was chosen for sensitivity and specificity, not for accuracy"
    return text


def write_classification_report(
    out_dir: PathLike,
    y_true: Any,
    y_prob: Any,
    case_ids: Sequence[Any] | None = None,
    classes: Sequence[str] | None = None,
    threshold: float | Mapping[str, Any] | None = None,
    positive_class: int = 1,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratified: bool = True,
    extra: Mapping[str, Any] | None = None,
    extra_columns: Mapping[str, Sequence[Any]] | None = None,
    split: str | None = None,
    ordinal: bool = False,
) -> dict[str, Any]:
    """Evaluate predictions and write ``predictions.csv``, ``roc.png``, ``confusion_matrix.png``, ``report.json``.

    Args:
        out_dir: output folder (created if needed).
        y_true: ``(N,)`` class indices of the evaluated (test) cases.
        y_prob: ``(N,)`` positive-class probabilities (binary) or ``(N, C)`` class probabilities.
        case_ids: ``N`` case identifiers for the CSV (default ``0 .. N-1``). They are written verbatim: pass
            pseudonymous ids, not patient identifiers, unless the report may hold them.
        classes: class names (default ``"0", "1", ...``).
        threshold: binary threshold: the dict of :func:`medmonai.metrics.threshold.choose_threshold` (chosen on
            validation data; recorded in full), a number, or ``None`` (0.5, flagged in the notes as not chosen on
            validation data). Multi-class problems: the decision rule of
            :func:`medmonai.metrics.threshold.choose_decision_rule` (recorded in full under ``decision_rule``), or
            ``None`` (argmax, flagged in the notes as not chosen on validation data).
        positive_class: positive class of a binary problem.
        n_boot: bootstrap resamples for the confidence intervals (0 disables them).
        alpha: 1 - confidence level.
        seed: bootstrap seed.
        stratified: stratify the bootstrap by class.
        extra: JSON-serialisable information stored under ``"extra"`` (model, checkpoint, data set, run id...).
        extra_columns: more per-case columns of ``predictions.csv`` (name -> one value per case).
        split: name of the evaluated split, recorded as ``split`` and shown with the case count in the figure
            titles. Default: ``extra['split']``, else ``"cv (out-of-fold)"`` when ``extra['what']`` mentions
            out-of-fold predictions, else ``"test"``.
        ordinal: three or more classes in ordinal order (the datalist's ``"ordinal": true``, see
            :func:`medmonai.data.datalist.is_ordinal`): adds the quadratic weighted kappa ``kappa_quadratic`` with
            its CI and records ``ordinal``.

    Returns:
        The report dict (as written to ``report.json``): ``split``, ``task``, ``classes``, ``positive_class``, ``n``,
        ``n_per_class``, ``threshold``, ``decision_rule`` (multi-class), ``majority_class`` (``index``, ``name``,
        ``rate`` of the evaluated labels), ``accuracy_below_majority_rate``, ``warnings``, ``metrics`` (name ->
        ``{"value", "ci_low", "ci_high", "n_boot_valid"}``),
        ``confusion_matrix`` (``counts``, ``row_normalised``, orientation), ``counts`` (binary tp/fp/tn/fn) or
        ``per_class`` (multi-class point values), ``bootstrap`` settings, ``notes``, ``files`` and ``extra``.

    Raises:
        ValueError: on bad inputs, a wrong number of case ids, or ``extra`` that is not JSON-serialisable.
    """
    out_dir = Path(out_dir)
    split = _default_split(split, extra)
    inp = prepare_inputs(y_true, y_prob, positive_class=positive_class, classes=classes)
    thr = resolve_threshold(threshold, inp)
    n = inp.y_true.size
    if case_ids is None:
        ids: list[Any] = list(range(n))
    else:
        ids = list(case_ids)
        if len(ids) != n:
            raise ValueError(f"{len(ids)} case_ids given for {n} cases")
    pos_arg = inp.positive_class if inp.positive_class is not None else 0

    ordinal = bool(ordinal) and not inp.binary
    point = classification_metrics(
        inp.y_true, inp.prob, threshold=thr, positive_class=pos_arg, classes=inp.classes, ordinal=ordinal
    )
    ci = bootstrap_ci(
        inp.y_true,
        inp.prob,
        n_boot=n_boot,
        alpha=alpha,
        seed=seed,
        stratified=stratified,
        threshold=thr,
        positive_class=pos_arg,
        classes=inp.classes,
        ordinal=ordinal,
    )
    ci.pop("confusion_matrix")
    cm = np.asarray(point["confusion_matrix"])
    rows = cm.sum(axis=1, keepdims=True)
    row_norm = [[None if r == 0 else float(v) / r for v in row] for row, r in zip(cm.tolist(), rows[:, 0].tolist())]
    notes = list(point["notes"])
    if inp.binary and threshold is None:
        notes.append("threshold 0.5 is a default, not chosen on validation data")
    if not inp.binary and thr is None:
        notes.append("multi-class decisions are the plain argmax, not a decision rule chosen on validation data")
    maj_index, maj_rate = majority_class_rate(inp.y_true, inp.n_classes)
    warnings = []
    maj_text = majority_warning(point["accuracy"], maj_rate, inp.classes[maj_index], inp.binary)
    if maj_text is not None:
        warnings.append(maj_text)
        logger.warning(f"{out_dir}: {maj_text}")
    if n_boot > 0:
        for name, entry in ci.items():
            if entry["value"] is not None and entry["n_boot_valid"] < n_boot:
                notes.append(f"{name}: CI from {entry['n_boot_valid']}/{n_boot} resamples (undefined in the others)")

    report: dict[str, Any] = {
        "schema_version": 1,
        "split": split,
        "task": point["task"],
        "classes": inp.classes,
        "positive_class": point["positive_class"],
        "positive_class_name": point.get("positive_class_name"),
        "prediction_rule": point["prediction_rule"],
        "n": n,
        "n_per_class": point["n_per_class"],
        "threshold": _threshold_info(threshold, inp.binary, thr),
        "majority_class": {
            "index": maj_index,
            "name": inp.classes[maj_index],
            "rate": maj_rate,
            "source": "labels of the evaluated cases",
        },
        "accuracy_below_majority_rate": maj_text is not None,
        "warnings": warnings,
        "metrics": ci,
        "confusion_matrix": {
            "rows": "true",
            "columns": "predicted",
            "labels": inp.classes,
            "counts": point["confusion_matrix"],
            "row_normalised": row_norm,
        },
        "bootstrap": {
            "n_boot": int(n_boot),
            "confidence": 1.0 - alpha,
            "method": "percentile",
            "stratified": bool(stratified),
            "seed": seed,
            "threshold": "fixed (not re-optimised per resample)",
        },
        "notes": notes,
        "files": dict(REPORT_FILES),
        "extra": dict(extra) if extra is not None else {},
    }
    if ordinal:
        report["ordinal"] = True
    if inp.binary:
        report["counts"] = {k: point[k] for k in ("tp", "fp", "tn", "fn")}
    else:
        report["per_class"] = point["per_class"]
        report["decision_rule"] = (
            dict(thr) if thr is not None else {"method": "argmax", "source": "default, not chosen on validation data"}
        )
    try:
        report = to_jsonable(report)
        json.dumps(report)
    except (TypeError, ValueError) as e:
        raise ValueError(f"report for {out_dir} is not JSON-serialisable (check 'extra'): {e}") from e

    pred = predict_labels(inp.prob, thr, inp.positive_class)
    atomic_write_text(
        out_dir / REPORT_FILES["predictions"],
        predictions_csv_text(ids, inp.y_true, inp.prob, pred, inp.classes, extra_columns),
    )
    caption = split_caption(split, inp.y_true, inp.classes, inp.positive_class if inp.binary else None)
    rule = _rule_title(thr)
    op = None
    if inp.binary and point["sensitivity"] is not None and point["specificity"] is not None:
        op = (1.0 - point["specificity"], point["sensitivity"])
    save_roc_png(
        out_dir / REPORT_FILES["roc"],
        inp.y_true,
        inp.prob,
        classes=inp.classes,
        positive_class=pos_arg,
        operating_point=op,
        auc_ci=ci,
        confidence=1.0 - alpha,
        title=f"ROC — {caption}" + (f"\n{rule}" if isinstance(thr, float) else ""),
    )
    save_confusion_matrix_png(
        out_dir / REPORT_FILES["confusion_matrix"],
        cm,
        inp.classes,
        title=f"confusion matrix — {caption}" + (f"\n{rule}" if rule else ""),
    )
    atomic_write_json(out_dir / REPORT_FILES["report"], report)
    return report


def _fmt_metric(entry: Any, nd: int = 2) -> str | None:
    """``"0.97 [0.93, 1.00]"`` for a ``{"value", "ci_low", "ci_high"}`` entry (or a plain number); None if undefined."""
    if isinstance(entry, Mapping):
        value, lo, hi = entry.get("value"), entry.get("ci_low"), entry.get("ci_high")
    else:
        value, lo, hi = entry, None, None
    if value is None:
        return None
    text = f"{float(value):.{nd}f}"
    if lo is not None and hi is not None:
        text += f" [{float(lo):.{nd}f}, {float(hi):.{nd}f}]"
    return text


def _where(path: PathLike | None) -> str:
    return f"; report in {os.fspath(path)}" if path is not None else ""


def classification_summary_line(report: Mapping[str, Any], path: PathLike | None = None) -> str:
    """One line for a :func:`write_classification_report` report.

    Example: ``"test n=156: AUC 0.90 [0.85, 0.94], sensitivity 0.81 [0.69, 0.92], specificity 0.84 [0.77, 0.90],
    accuracy 0.83 [0.77, 0.88] (threshold 0.62, youden); report in runs/eval/report.json"``. Multi-class reports
    give AUC, balanced accuracy, macro F1 and accuracy (and the quadratic weighted kappa when ordinal). Brackets are
    the bootstrap CIs (absent with ``n_boot=0``); undefined metrics are left out; a majority-rate warning is
    appended as ``"WARNING: accuracy below ..."``.

    Args:
        report: the report dict (``report.json`` content).
        path: where the report lies, named at the end of the line.
    """
    metrics = report.get("metrics", {})
    binary = report.get("task") == "binary"
    names = (
        [("auc", "AUC"), ("sensitivity", "sensitivity"), ("specificity", "specificity"), ("accuracy", "accuracy")]
        if binary
        else [("auc", "AUC"), ("balanced_accuracy", "balanced accuracy"), ("f1_macro", "macro F1"),
              ("accuracy", "accuracy")]
    )  # fmt: skip
    if report.get("ordinal"):
        names.append(("kappa_quadratic", "quadratic weighted kappa"))
    parts = [f"{label} {text}" for key, label in names if (text := _fmt_metric(metrics.get(key))) is not None]
    split = report.get("split") or _default_split(None, report.get("extra"))
    line = f"{split} n={report.get('n', '?')}: " + (", ".join(parts) or "no defined metric")
    thr = report.get("threshold") or {}
    if binary and isinstance(thr.get("threshold"), int | float):
        line += f" (threshold {float(thr['threshold']):.3g}, {thr.get('method', 'given')})"
    if report.get("accuracy_below_majority_rate"):
        maj = report.get("majority_class") or {}
        line += f" WARNING: accuracy below the majority-class rate {float(maj.get('rate', float('nan'))):.2f}"
    return line + _where(path)


def segmentation_summary_line(report: Mapping[str, Any], path: PathLike | None = None) -> str:
    """One line for a segmentation report of :func:`medmonai.metrics.segmentation.segmentation_report`.

    Example: ``"test n=52: Dice anterior 0.88 ± 0.03, posterior 0.86 ± 0.04, mean 0.87 ± 0.03; HD95 mean
    1.52 ± 0.61 mm; report in runs/eval/report.json"`` (per-case mean ± std; classes without a defined value are
    left out). The split is the report's ``split`` (the bundles' ``extra``), else ``"cv (out-of-fold)"`` for the
    cross-validation report (``n_folds``), ``"fold K validation"`` for a fold's report (``fold``), else ``"test"``.

    Args:
        report: the report dict (``report.json`` content).
        path: where the report lies, named at the end of the line.
    """
    summary = report.get("summary", {})

    def stat(metric: str, name: str, nd: int) -> str | None:
        s = summary.get(metric, {}).get(name) or {}
        if s.get("mean") is None:
            return None
        return f"{s['mean']:.{nd}f} ± {s['std']:.{nd}f}"

    dice = [f"{name} {t}" for name in [*report.get("classes", [])[1:], "mean"] if (t := stat("dice", name, 2))]
    split = report.get("split")
    if not split:
        if "n_folds" in report:
            split = "cv (out-of-fold)"
        elif isinstance(report.get("fold"), int):
            split = f"fold {report['fold']} validation"
        else:
            split = "test"
    line = f"{split} n={report.get('n_cases', '?')}: Dice " + (", ".join(dice) or "undefined")
    if (hd := stat("hd95", "mean", 2)) is not None:
        line += f"; HD95 mean {hd} mm"
    return line + _where(path)


def summary_line(report: Mapping[str, Any], path: PathLike | None = None) -> str:
    """One line of results for a classification or a segmentation ``report.json`` (told apart by their keys).

    Args:
        report: a report of :func:`write_classification_report` (``metrics``) or of
            :func:`medmonai.metrics.segmentation.segmentation_report` (``summary`` and ``n_cases``).
        path: where the report lies, named at the end of the line.

    Raises:
        ValueError: for a dict that is neither.
    """
    if "n_cases" in report and "summary" in report:
        return segmentation_summary_line(report, path)
    if "metrics" in report and "n" in report:
        return classification_summary_line(report, path)
    raise ValueError("not a classification or segmentation report (no 'metrics'/'n' or 'summary'/'n_cases' keys)")


def print_summary(report_or_path: Mapping[str, Any] | PathLike) -> str:
    """Print :func:`summary_line` of a report (a dict, a ``report.json`` file or the folder holding it); return it.

    Meant for the end of a bundle's ``evaluate.yaml``:
    ``$medmonai.metrics.report.print_summary(@eval_dir + '/report.json')`` (the folder itself works too).
    """
    path: Path | None = None
    if isinstance(report_or_path, Mapping):
        report = report_or_path
    else:
        path = Path(report_or_path)
        if path.is_dir():
            path = path / REPORT_FILES["report"]
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    line = summary_line(report, path)
    print(line, flush=True)
    return line
