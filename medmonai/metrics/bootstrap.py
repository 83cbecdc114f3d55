"""Percentile-bootstrap confidence intervals for every scalar classification metric.

Cases are resampled with replacement (stratified by true class by default, so every resample holds exactly as
many cases of each class as the data); the metrics of all resamples are computed at once on ``(B, N)`` arrays
(confusion counts by ``bincount``, AUC by average ranks), so 1000 resamples of 600 cases take well under a second.
The binary decision threshold stays **fixed** across resamples: it was chosen on validation data, and
re-optimising it per resample would make the interval too optimistic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medmonai.metrics.clinical import (
    batch_scalar_metrics,
    classification_metrics,
    prepare_inputs,
    resolve_threshold,
    scalar_metrics,
)

__all__ = ["bootstrap_ci", "resample_indices"]

# elements of the (B, N, C) probability array processed per chunk (bounds memory to a few hundred MB)
_CHUNK_ELEMENTS = 4_000_000


def resample_indices(
    y_true: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    stratified: bool = True,
    n_classes: int | None = None,
) -> np.ndarray:
    """Bootstrap case indices, shape ``(n_boot, N)``.

    Args:
        y_true: ``(N,)`` class indices.
        n_boot: number of resamples.
        rng: the random generator.
        stratified: resample within each true class (each resample keeps the class counts of ``y_true``);
            otherwise resample the ``N`` cases freely.
        n_classes: number of classes (default ``y_true.max() + 1``).

    Returns:
        Integer indices into the cases; with ``stratified`` the columns are grouped by class (order does not
        matter to any metric).
    """
    y_true = np.asarray(y_true)
    n = y_true.size
    if not stratified:
        return rng.integers(0, n, size=(n_boot, n))
    n_classes = int(y_true.max()) + 1 if n_classes is None else n_classes
    parts = []
    for k in range(n_classes):
        members = np.flatnonzero(y_true == k)
        if members.size:
            parts.append(members[rng.integers(0, members.size, size=(n_boot, members.size))])
    return np.concatenate(parts, axis=1)


def bootstrap_ci(
    y_true: Any,
    y_prob: Any,
    metric_names: Sequence[str] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratified: bool = True,
    threshold: float | Mapping[str, Any] | None = None,
    positive_class: int = 1,
    classes: Sequence[str] | None = None,
    ordinal: bool = False,
) -> dict[str, dict[str, Any]]:
    """Point estimate and percentile-bootstrap ``1 - alpha`` confidence interval of every scalar metric.

    The interval is ``[q(alpha/2), q(1 - alpha/2)]`` of the metric over the resamples where it is defined
    (``numpy.percentile``, linear interpolation). A resample where the metric is undefined (e.g. PPV when nothing is
    predicted positive, or AUC with one class in a non-stratified resample) is left out and counted as invalid;
    ``n_boot_valid`` says how many resamples remained. With no valid resample the bounds are ``None``.

    Args:
        y_true: ``(N,)`` class indices.
        y_prob: ``(N,)`` positive-class probabilities (binary) or ``(N, C)`` class probabilities.
        metric_names: the metrics to bootstrap (names as in :func:`medmonai.metrics.clinical.scalar_metrics`);
            default all of them.
        n_boot: number of resamples (0: point estimates only).
        alpha: 1 - confidence level (0.05 for 95 % intervals).
        seed: seed of the resampling (same seed and inputs give identical intervals).
        stratified: resample within each class (recommended; keeps every class in every resample).
        threshold: the FIXED binary threshold (``None`` = 0.5, a number, or a
            :func:`~medmonai.metrics.threshold.choose_threshold` dict); ``None`` for multi-class problems.
        positive_class: positive class of a binary problem.
        classes: class names.
        ordinal: multi-class classes in ordinal order: ``kappa_quadratic`` is bootstrapped too.

    Returns:
        ``{metric name: {"value", "ci_low", "ci_high", "n_boot_valid"}}`` for each requested scalar metric, plus
        ``"confusion_matrix": {"value": [[...]], "ci_low": None, "ci_high": None, "n_boot_valid": 0}`` (point
        estimate only; rows = true, columns = predicted).

    Raises:
        ValueError: on bad inputs, unknown metric names, ``n_boot < 0`` or ``alpha`` outside ``(0, 1)``.
    """
    if int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    n_boot = int(n_boot)
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be within (0, 1), got {alpha!r}")
    inp = prepare_inputs(y_true, y_prob, positive_class=positive_class, classes=classes)
    thr = resolve_threshold(threshold, inp)
    point_all = classification_metrics(
        inp.y_true, inp.prob, threshold=thr, positive_class=inp.positive_class or 0, classes=inp.classes,
        ordinal=ordinal,
    )  # fmt: skip
    point = scalar_metrics(point_all)
    names = list(point) if metric_names is None else list(metric_names)
    unknown = [m for m in names if m not in point]
    if unknown:
        raise ValueError(f"unknown metric name(s) {unknown}; available: {list(point)}")

    n, n_c = inp.prob.shape
    samples = {m: np.full(n_boot, np.nan) for m in names}
    with_auc = any(m == "auc" or m.startswith("auc/") for m in names)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // (n * n_c))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = resample_indices(inp.y_true, b, rng, stratified=stratified, n_classes=n_c)
        values = batch_scalar_metrics(
            inp.y_true[idx], inp.prob[idx], thr, inp.classes, inp.positive_class, with_auc=with_auc,
            ordinal=ordinal,
        )  # fmt: skip
        for m in names:
            samples[m][start : start + b] = values[m]

    q = [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)]
    out: dict[str, dict[str, Any]] = {}
    for m in names:
        valid = samples[m][np.isfinite(samples[m])]
        lo, hi = (float(v) for v in np.percentile(valid, q)) if valid.size else (None, None)
        out[m] = {"value": point[m], "ci_low": lo, "ci_high": hi, "n_boot_valid": int(valid.size)}
    out["confusion_matrix"] = {
        "value": point_all["confusion_matrix"],
        "ci_low": None,
        "ci_high": None,
        "n_boot_valid": 0,
    }
    return out
