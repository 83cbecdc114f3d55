"""Per-class segmentation metrics (Dice, 95 % Hausdorff distance) and their JSON/CSV report.

The metrics are MONAI's :class:`~monai.metrics.DiceMetric` and :class:`~monai.metrics.HausdorffDistanceMetric`
(``percentile=95``, surface distances in millimetres through the voxel spacing), computed per case and per
foreground class on integer label maps. Conventions for empty structures (as MONAI's, made explicit):

- Dice: reference empty and prediction empty -> ``None`` (undefined, not counted in the mean); reference empty
  but something predicted -> 0 (``DiceMetric(ignore_empty=False)`` semantics for that case);
- HD95: undefined (``None``) when the reference or the prediction of that class is empty; the number of cases
  where it was undefined is reported next to the mean.

:func:`summarize_cases` aggregates the cases into mean ± std (population std, like nnU-Net's summary), median,
min, max and ``n``; :func:`write_segmentation_report` writes ``report.json`` and ``per_case.csv`` atomically.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from medmonai.utils import PathLike, atomic_write_json, atomic_write_text

__all__ = [
    "case_metrics",
    "summarize_cases",
    "summary_stats",
    "segmentation_report",
    "write_segmentation_report",
    "format_summary",
]


def _channel_first(x: Any, spatial_dims: int | None) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if spatial_dims is not None and arr.ndim == spatial_dims + 1:
        return arr.argmax(0) if arr.shape[0] > 1 else arr[0]
    return arr


def _one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(np.rint(labels).astype(np.int64))
    if t.min() < 0 or t.max() >= num_classes:
        raise ValueError(f"label values must be in [0, {num_classes - 1}], found [{int(t.min())}, {int(t.max())}]")
    oh = torch.nn.functional.one_hot(t, num_classes)  # (*spatial, C)
    return oh.movedim(-1, 0).unsqueeze(0).float()  # (1, C, *spatial)


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def case_metrics(
    pred: Any,
    label: Any,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    spatial_dims: int | None = None,
    hd95: bool = True,
) -> dict[str, dict[str, float | None]]:
    """Dice and HD95 of one case for every foreground class (MONAI metrics).

    Args:
        pred: predicted label map ``(*spatial)`` (or ``(1, *spatial)``, or ``(C, *spatial)`` scores with
            ``spatial_dims`` given, arg-maxed).
        label: reference label map, same grid.
        num_classes: number of classes including background (label values ``0 .. num_classes - 1``).
        spacing: voxel spacing (mm) per axis, for HD95 in mm; default 1 (voxels).
        class_names: names of the classes (index 0 = background); default ``class_1``...
        spatial_dims: spatial dimensionality, to recognise channel-first inputs.
        hd95: also compute the 95 % Hausdorff distance.

    Returns:
        ``{"dice": {name: value}, "hd95": {name: value}, "volume_pred": {...}, "volume_ref": {...}}`` for the
        foreground classes; volumes in mm^3 (mm^2 in 2D); undefined values are ``None``.

    Raises:
        ValueError: for different shapes, labels out of range or a spacing of the wrong length.
    """
    p = _channel_first(pred, spatial_dims)
    y = _channel_first(label, spatial_dims)
    if p.shape != y.shape:
        raise ValueError(f"prediction shape {p.shape} differs from the reference shape {y.shape}")
    names = list(class_names) if class_names is not None else [f"class_{c}" for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes: {names}")
    sp = [1.0] * p.ndim if spacing is None else [float(s) for s in spacing]
    if len(sp) != p.ndim:
        raise ValueError(f"spacing has {len(sp)} values for a {p.ndim}D label map")
    p_oh, y_oh = _one_hot(p, num_classes), _one_hot(y, num_classes)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(p_oh, y_oh)[0]
    voxel = float(np.prod(sp))
    out: dict[str, dict[str, float | None]] = {"dice": {}, "hd95": {}, "volume_pred": {}, "volume_ref": {}}
    hd = None
    if hd95:
        with warnings.catch_warnings():  # MONAI warns for empty structures: they are reported as None
            warnings.simplefilter("ignore")
            metric = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
            hd = metric(p_oh, y_oh, spacing=sp)[0]
    for c in range(1, num_classes):
        n_pred, n_ref = int(p_oh[0, c].sum()), int(y_oh[0, c].sum())
        name = names[c]
        out["dice"][name] = None if n_pred == 0 and n_ref == 0 else float(dice[c - 1])
        if hd is not None:
            out["hd95"][name] = None if n_pred == 0 or n_ref == 0 else _finite(float(hd[c - 1]))
        out["volume_pred"][name] = n_pred * voxel
        out["volume_ref"][name] = n_ref * voxel
    if not hd95:
        del out["hd95"]
    return out


def summary_stats(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, population std, median, min, max and ``n`` of the finite values; ``n_undefined`` counts the others.

    Args:
        values: numbers; ``None``, NaN and infinities are left out and counted as undefined.

    Returns:
        ``{"mean", "std", "median", "min", "max", "n", "n_undefined"}`` (the statistics are None when ``n`` is 0).
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n_missing = len(values) - len(v)
    if v.size == 0:
        return {"mean": None, "std": None, "median": None, "min": None, "max": None, "n": 0, "n_undefined": n_missing}
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "median": float(np.median(v)),
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
        "n_undefined": int(n_missing),
    }


def summarize_cases(cases: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("dice", "hd95")) -> dict[str, Any]:
    """Mean ± std (and median, min, max, n) of every metric and class over cases.

    Args:
        cases: per-case records with ``{metric: {class: value}}`` (as :func:`case_metrics` returns).
        metrics: metrics to summarise.

    Returns:
        ``{metric: {class: stats, "mean": stats of the per-case class means}}``; the per-case class mean only
        averages the classes defined for that case.
    """
    out: dict[str, Any] = {}
    for m in metrics:
        rows = [c[m] for c in cases if m in c]
        if not rows:
            continue
        names = list(dict.fromkeys(k for r in rows for k in r))
        out[m] = {name: summary_stats([r.get(name) for r in rows]) for name in names}
        per_case_mean = []
        for r in rows:
            vals = [r.get(n) for n in names if r.get(n) is not None]
            per_case_mean.append(float(np.mean(vals)) if vals else None)
        out[m]["mean"] = summary_stats(per_case_mean)
    return out


def segmentation_report(
    cases: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-able report: class names, per-case metrics and their summary.

    Args:
        cases: per-case records: ``case_id`` plus the :func:`case_metrics` dicts.
        class_names: class names (index 0 = background).
        extra: further top-level fields (model, data, settings).

    Returns:
        ``{"classes", "n_cases", "summary", "cases", ...extra}``; ``summary["dice"][name]["mean"]`` etc.
    """
    return {
        "classes": list(class_names),
        "n_cases": len(cases),
        "units": {"hd95": "mm", "volume": "mm^3 (mm^2 in 2D)"},
        "summary": summarize_cases(cases),
        "cases": [dict(c) for c in cases],
        **dict(extra or {}),
    }


def _csv_text(report: Mapping[str, Any]) -> str:
    names = [n for n in report["classes"][1:]]
    metrics = [m for m in ("dice", "hd95", "volume_pred", "volume_ref") if any(m in c for c in report["cases"])]
    fields = ["case_id"] + [f"{m}_{n}" for m in metrics for n in names]
    marked = any("out_of_distribution" in c for c in report["cases"])  # the input check's per-case marks
    if marked:
        fields += ["out_of_distribution", "out_of_distribution_reasons"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for c in report["cases"]:
        row: dict[str, Any] = {"case_id": c.get("case_id", "")}
        for m in metrics:
            for n in names:
                v = c.get(m, {}).get(n)
                row[f"{m}_{n}"] = "" if v is None else f"{v:.6g}"
        if marked:
            flag = c.get("out_of_distribution")
            row["out_of_distribution"] = "" if flag is None else str(bool(flag)).lower()
            row["out_of_distribution_reasons"] = "; ".join(c.get("out_of_distribution_reasons") or [])
        w.writerow(row)
    return buf.getvalue()


def write_segmentation_report(report: Mapping[str, Any], out_dir: PathLike) -> dict[str, Path]:
    """Write ``report.json`` and ``per_case.csv`` (one row per case, one column per metric and class) atomically.

    Returns:
        ``{"json": path, "csv": path}``.
    """
    out = Path(out_dir)
    return {
        "json": atomic_write_json(out / "report.json", dict(report)),
        "csv": atomic_write_text(out / "per_case.csv", _csv_text(report)),
    }


def format_summary(report: Mapping[str, Any]) -> str:
    """A text table of the per-class Dice and HD95 mean ± std of a report."""
    lines = [f"{'class':<20} {'Dice mean ± std':>18} {'HD95 mm mean ± std':>22} {'n':>5}"]
    summary = report["summary"]
    for name in list(report["classes"][1:]) + ["mean"]:
        d = summary.get("dice", {}).get(name, {})
        h = summary.get("hd95", {}).get(name, {})

        def f(s: Mapping[str, Any], nd: int) -> str:
            return "-" if s.get("mean") is None else f"{s['mean']:.{nd}f} ± {s['std']:.{nd}f}"

        lines.append(f"{name:<20} {f(d, 4):>18} {f(h, 2):>22} {d.get('n', 0):>5}")
    return "\n".join(lines)
