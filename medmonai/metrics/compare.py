"""Paired comparison of two classification runs evaluated on the same test cases.

Two models scored on the *same* cases give correlated results; unpaired tests (comparing two CIs by eye) throw
that pairing away and are far too conservative. This module provides the standard paired tests:

* :func:`delong_test` — DeLong, DeLong & Clarke-Pearson (1988) test for the difference of two correlated ROC AUCs
  (binary), computed with the fast midrank algorithm of Sun & Xu (2014), ``O(N log N)``; ties count 1/2.
* :func:`paired_bootstrap_auc` — the cases are resampled with replacement (stratified by class, as
  :mod:`medmonai.metrics.bootstrap`), and the AUC difference is recomputed on each resample with *the same*
  cases for both models; binary AUC or the one-vs-rest macro AUC of a multi-class problem.
* :func:`mcnemar_test` — McNemar's test on the paired correctness of the two runs' own predictions (exact
  binomial when there are fewer than 25 discordant cases, else chi-square with continuity correction).

:func:`compare_runs` loads two runs' ``predictions.csv`` files (as written by
:func:`medmonai.metrics.report.write_classification_report`), matches their cases by ``case_id`` and runs all
applicable tests; :func:`write_comparison` writes the result as JSON. All differences are ``A - B``.

References:
    DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more correlated receiver operating
    characteristic curves: a nonparametric approach. Biometrics 1988;44:837-845.
    Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas under correlated receiver
    operating characteristic curves. IEEE Signal Processing Letters 2014;21(11):1389-1393.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest, chi2, norm, rankdata

from medmonai.metrics.bootstrap import resample_indices
from medmonai.metrics.clinical import _rank_auc
from medmonai.utils import PathLike, atomic_write_json, to_jsonable

__all__ = [
    "PREDICTIONS_SEARCH",
    "delong_test",
    "paired_bootstrap_auc",
    "mcnemar_test",
    "load_run_predictions",
    "compare_runs",
    "write_comparison",
    "format_p",
]

#: where :func:`load_run_predictions` looks for ``predictions.csv`` inside a run folder, in this order
PREDICTIONS_SEARCH: tuple[str, ...] = (
    "predictions.csv",
    "eval/predictions.csv",
    "runs/eval/predictions.csv",
    "ensemble/predictions.csv",
)

# elements of one (B, N, C) probability chunk of the paired bootstrap (bounds the memory, as bootstrap.py)
_CHUNK_ELEMENTS = 4_000_000
# McNemar: exact binomial test below this many discordant pairs, chi-square with continuity correction above
_MCNEMAR_EXACT_BELOW = 25


def format_p(p: float | None) -> str:
    """A p-value for display: ``"< 0.001"``, three significant digits, or ``"n/a"`` for ``None``."""
    if p is None:
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


# ------------------------------------------------------------------------------------------------- input checks
def _as_1d_float(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds {int(np.sum(~np.isfinite(arr)))} non-finite value(s) (NaN/inf)")
    return arr


def _as_labels(y_true: Any, n_classes: int) -> np.ndarray:
    y = _as_1d_float(y_true, "y_true")
    if y.ndim != 1:
        raise ValueError(f"y_true must have shape (N,) (class indices), got {y.shape}")
    if y.size == 0:
        raise ValueError("empty inputs: y_true has no cases")
    if not np.all(y == np.round(y)):
        raise ValueError("y_true must hold integer class indices; found non-integral values")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        raise ValueError(f"y_true holds label(s) {sorted(set(y[bad].tolist()))} outside 0..{n_classes - 1}")
    return y


def _check_both_classes(y: np.ndarray, what: str = "the AUC") -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        only = 1 if n_pos else 0
        raise ValueError(
            f"{what} is undefined: y_true holds only class {only} ({y.size} case(s)); "
            "comparing AUCs needs at least one case of each class"
        )


# ------------------------------------------------------------------------------------------------- DeLong
def _midrank_components(pos: np.ndarray, neg: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components by midranks (Sun & Xu 2014).

    Returns:
        ``(auc, v10, v01)``: ``v10[i]`` = fraction of negatives scored below positive ``i`` (ties 1/2),
        ``v01[j]`` = fraction of positives scored above negative ``j`` (ties 1/2).
    """
    m, n = pos.size, neg.size
    tx = rankdata(pos)  # midranks within the positives
    ty = rankdata(neg)  # midranks within the negatives
    tz = rankdata(np.concatenate([pos, neg]))  # midranks in the pooled sample
    auc = float((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n))
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    return auc, v10, v01


def delong_test(y_true: Any, scores_a: Any, scores_b: Any, alpha: float = 0.05) -> dict[str, Any]:
    """DeLong's test for the difference of two correlated ROC AUCs measured on the same cases.

    The AUCs are the Mann-Whitney statistics (ties count 1/2, equal to :func:`sklearn.metrics.roc_auc_score`);
    the variance of ``auc_a - auc_b`` is ``L S L'`` with ``L = (1, -1)`` and ``S = S10 / m + S01 / n``, the
    covariance matrices (``ddof=1``) of the placement values of the ``m`` positive and ``n`` negative cases.

    Degenerate cases: identical AUCs give ``z = 0`` and ``p = 1`` (e.g. identical runs, whose estimated variance is
    0 too); a non-zero difference with a zero variance estimate (e.g. both models' placements constant) has no
    usable normal approximation: ``z`` and ``p_value`` are then ``None`` and ``note`` says why.

    Args:
        y_true: ``(N,)`` binary labels (1 = positive / "case", 0 = negative).
        scores_a: ``(N,)`` scores of model A (higher = more likely positive), e.g. ``p(positive)``.
        scores_b: ``(N,)`` scores of model B on the same cases, in the same order.
        alpha: 1 - confidence level of the interval (0.05: 95 %).

    Returns:
        ``{"auc_a", "auc_b", "difference" (auc_a - auc_b), "se", "z", "p_value" (two-sided), "ci_low", "ci_high",
        "confidence", "n_positive", "n_negative", "method"}`` (plus ``"note"`` in the degenerate case above).

    Raises:
        ValueError: when only one class is present, a class has fewer than 2 cases (no variance estimate),
            labels are not 0/1, or the arrays do not match.
    """
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be within (0, 1), got {alpha!r}")
    y = _as_labels(y_true, 2)
    a = _as_1d_float(scores_a, "scores_a")
    b = _as_1d_float(scores_b, "scores_b")
    for name, s in (("scores_a", a), ("scores_b", b)):
        if s.shape != y.shape:
            raise ValueError(f"{name} must have shape {y.shape} (one score per case, like y_true), got {s.shape}")
    _check_both_classes(y)
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong's variance needs at least 2 positive and 2 negative cases; got {m} positive, {n} negative"
        )
    auc_a, v10_a, v01_a = _midrank_components(a[pos], a[neg])
    auc_b, v10_b, v01_b = _midrank_components(b[pos], b[neg])
    s10 = np.cov(np.vstack([v10_a, v10_b]))  # ddof=1
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    contrast = np.array([1.0, -1.0])
    var = float(contrast @ s10 @ contrast / m + contrast @ s01 @ contrast / n)
    var = max(var, 0.0)  # rounding can give a tiny negative value
    se = math.sqrt(var)
    diff = auc_a - auc_b
    zq = float(norm.ppf(1.0 - alpha / 2.0))
    out: dict[str, Any] = {
        "method": "DeLong (fast midrank algorithm of Sun & Xu 2014)",
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": diff,
        "se": se,
        "z": None,
        "p_value": None,
        "ci_low": diff - zq * se,
        "ci_high": diff + zq * se,
        "confidence": 1.0 - alpha,
        "n_positive": m,
        "n_negative": n,
    }
    if abs(diff) <= 1e-12:
        out["z"], out["p_value"] = 0.0, 1.0
    elif se > 0.0:
        z = diff / se
        out["z"] = z
        out["p_value"] = float(min(1.0, 2.0 * norm.sf(abs(z))))
    else:
        out["note"] = (
            "the estimated variance of the difference is 0 although the AUCs differ (constant placement values), "
            "so the normal approximation is unusable: no z or p-value; see the paired bootstrap"
        )
    return out


# ------------------------------------------------------------------------------------------------- bootstrap
def _auc_inputs(y_true: Any, scores_a: Any, scores_b: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Validate bootstrap inputs -> ``(y, a, b, binary)``.

    ``a`` and ``b`` are returned with shape ``(N, C)``; a 1-D binary score becomes ``C = 2`` columns where column 1
    is the positive-class score.
    """
    a = _as_1d_float(scores_a, "scores_a")
    b = _as_1d_float(scores_b, "scores_b")
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim == 2 and a.shape[1] == 1:
        a, b = a[:, 0], b[:, 0]
    if a.ndim == 1:
        a = np.stack([1.0 - a, a], axis=1)
        b = np.stack([1.0 - b, b], axis=1)
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"scores must have shape (N,) (binary) or (N, C) with C >= 2, got {a.shape}")
    n_classes = a.shape[1]
    y = _as_labels(y_true, n_classes)
    if y.shape[0] != a.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} cases but the scores have {a.shape[0]}")
    binary = n_classes == 2
    if binary:
        _check_both_classes(y)
    else:
        counts = np.bincount(y, minlength=n_classes)
        missing = [k for k in range(n_classes) if counts[k] == 0]
        if missing:
            raise ValueError(
                f"the macro one-vs-rest AUC is undefined: class(es) {missing} have no case in y_true "
                f"(counts per class {counts.tolist()})"
            )
    return y, a, b, binary


def _batch_auc(y: np.ndarray, prob: np.ndarray, binary: bool) -> np.ndarray:
    """AUCs of B resamples: ``y`` ``(B, N)``, ``prob`` ``(B, N, C)`` -> ``(B,)``; macro one-vs-rest if multi-class."""
    if binary:
        return _rank_auc(y == 1, prob[..., 1])
    return np.mean(np.stack([_rank_auc(y == k, prob[..., k]) for k in range(prob.shape[-1])], axis=-1), axis=-1)


def paired_bootstrap_auc(
    y_true: Any,
    scores_a: Any,
    scores_b: Any,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    stratified: bool = True,
) -> dict[str, Any]:
    """Paired percentile bootstrap of the AUC difference ``A - B``.

    Each resample draws cases with replacement (within each true class when ``stratified``, so every resample keeps
    the class counts) and evaluates both models on the *same* resampled cases. The interval is the percentile
    interval ``[q(alpha/2), q(1 - alpha/2)]`` of the resampled differences. The two-sided p-value is
    ``min(1, 2 * (1 + k) / (n_boot + 1))`` where ``k`` counts the resampled differences on the other side of 0
    from the observed one (0 included); an observed difference of exactly 0 gives ``p = 1``.

    Args:
        y_true: ``(N,)`` class indices (0/1 for a binary problem).
        scores_a: model A: ``(N,)`` positive-class scores (binary), or ``(N, C)`` class probabilities (``C == 2``:
            column 1 is the positive class; ``C > 2``: the macro one-vs-rest AUC is compared).
        scores_b: model B, same shape, same cases in the same order.
        n_boot: number of resamples (>= 1).
        seed: seed of the resampling (same seed and inputs give identical results).
        alpha: 1 - confidence level.
        stratified: resample within each true class (recommended; keeps every class in every resample).

    Returns:
        ``{"metric", "auc_a", "auc_b", "difference", "ci_low", "ci_high", "confidence", "p_value", "n_boot",
        "n_boot_valid", "seed", "stratified", "method"}``; resamples where an AUC is undefined (only possible when
        not stratified) are left out and ``n_boot_valid`` counts the others.

    Raises:
        ValueError: on bad inputs, an undefined AUC (a class without cases), ``n_boot < 1`` or a bad ``alpha``.
    """
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    n_boot = int(n_boot)
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be within (0, 1), got {alpha!r}")
    y, a, b, binary = _auc_inputs(y_true, scores_a, scores_b)
    n, n_c = a.shape
    auc_a = float(_batch_auc(y[None], a[None], binary)[0])
    auc_b = float(_batch_auc(y[None], b[None], binary)[0])
    diff = auc_a - auc_b

    diffs = np.empty(n_boot, dtype=np.float64)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // (n * n_c))
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        idx = resample_indices(y, k, rng, stratified=stratified, n_classes=n_c)
        yb = y[idx]
        diffs[start : start + k] = _batch_auc(yb, a[idx], binary) - _batch_auc(yb, b[idx], binary)
    valid = diffs[np.isfinite(diffs)]
    if valid.size:
        lo, hi = (float(v) for v in np.percentile(valid, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)]))
    else:
        lo = hi = None
    if abs(diff) <= 1e-12 or not valid.size:
        p = 1.0
    else:
        other_side = int(np.sum(valid <= 0.0)) if diff > 0 else int(np.sum(valid >= 0.0))
        p = float(min(1.0, 2.0 * (1 + other_side) / (valid.size + 1)))
    return {
        "method": "paired percentile bootstrap" + (" (stratified by class)" if stratified else ""),
        "metric": "auc (positive class 1)" if binary else "macro one-vs-rest auc",
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": diff,
        "ci_low": lo,
        "ci_high": hi,
        "confidence": 1.0 - alpha,
        "p_value": p,
        "n_boot": n_boot,
        "n_boot_valid": int(valid.size),
        "seed": seed,
        "stratified": bool(stratified),
    }


# ------------------------------------------------------------------------------------------------- McNemar
def mcnemar_test(correct_a: Any, correct_b: Any) -> dict[str, Any]:
    """McNemar's test of equal accuracy on paired per-case correctness.

    ``b`` = cases A got right and B got wrong, ``c`` = cases A got wrong and B got right (the discordant pairs;
    concordant pairs carry no information). With ``b + c < 25`` the exact two-sided binomial test of
    ``b ~ Binomial(b + c, 1/2)`` is used, otherwise the chi-square statistic with continuity correction
    ``(|b - c| - 1)^2 / (b + c)`` on 1 degree of freedom. No discordant pair gives ``p = 1``.

    Args:
        correct_a: ``(N,)`` booleans (or 0/1): whether run A classified each case correctly.
        correct_b: ``(N,)`` the same for run B, same cases in the same order.

    Returns:
        ``{"b", "c", "n_both_correct", "n_both_wrong", "n", "method", "statistic" (chi-square, ``None`` for the
        exact test), "p_value", "accuracy_a", "accuracy_b", "difference" (accuracy_a - accuracy_b)}``.

    Raises:
        ValueError: for arrays of different lengths, empty arrays, or values other than 0/1/True/False.
    """
    arrs = []
    for name, x in (("correct_a", correct_a), ("correct_b", correct_b)):
        arr = _as_1d_float(x, name)
        if arr.ndim != 1:
            raise ValueError(f"{name} must have shape (N,), got {arr.shape}")
        if not np.isin(arr, (0.0, 1.0)).all():
            raise ValueError(f"{name} must hold booleans (or 0/1)")
        arrs.append(arr.astype(bool))
    ca, cb = arrs
    if ca.shape != cb.shape:
        raise ValueError(f"correct_a has {ca.size} cases but correct_b has {cb.size}")
    if ca.size == 0:
        raise ValueError("empty inputs: no cases")
    b = int(np.sum(ca & ~cb))
    c = int(np.sum(~ca & cb))
    n_disc = b + c
    statistic: float | None = None
    if n_disc == 0:
        method, p = "no discordant pairs", 1.0
    elif n_disc < _MCNEMAR_EXACT_BELOW:
        method = "exact binomial"
        p = float(binomtest(b, n_disc, 0.5, alternative="two-sided").pvalue)
    else:
        method = "chi-square with continuity correction"
        statistic = (abs(b - c) - 1.0) ** 2 / n_disc
        p = float(chi2.sf(statistic, df=1))
    acc_a, acc_b = float(ca.mean()), float(cb.mean())
    return {
        "method": method,
        "b": b,
        "c": c,
        "n_both_correct": int(np.sum(ca & cb)),
        "n_both_wrong": int(np.sum(~ca & ~cb)),
        "n": int(ca.size),
        "statistic": statistic,
        "p_value": min(1.0, p),
        "accuracy_a": acc_a,
        "accuracy_b": acc_b,
        "difference": acc_a - acc_b,
    }


# ------------------------------------------------------------------------------------------------- loading runs
def _find_predictions(run: PathLike) -> Path:
    path = Path(run)
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run folder or predictions.csv")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a folder or a predictions.csv file")
    for rel in PREDICTIONS_SEARCH:
        cand = path / rel
        if cand.is_file():
            return cand
    searched = ", ".join(str(path / rel) for rel in PREDICTIONS_SEARCH)
    raise FileNotFoundError(f"{path}: no predictions.csv found (searched {searched})")


def load_run_predictions(run: PathLike) -> dict[str, Any]:
    """Read a run's per-case predictions.

    The file is the ``predictions.csv`` written by :func:`medmonai.metrics.report.write_classification_report`.

    Args:
        run: a ``predictions.csv`` file, or a folder searched for, in this order, ``predictions.csv`` (an eval
            folder), ``eval/predictions.csv``, ``runs/eval/predictions.csv`` and ``ensemble/predictions.csv``
            (:data:`PREDICTIONS_SEARCH`); the first found is used and returned as ``"file"``.

    Returns:
        ``{"run": the given path, "file": the predictions.csv used, "case_ids": list of str, "true_index": (N,)
        int64, "classes": class names from the ``prob_<class>`` columns, "prob": (N, C) float64, "pred_index": (N,)
        int64, "correct": (N,) bool (``pred_index == true_index``)}``.

    Raises:
        FileNotFoundError: when no predictions file is found.
        ValueError: for a malformed file (missing columns, non-numeric or out-of-range values, duplicate case ids,
            no rows, a ``correct`` or ``true_label`` column that contradicts the indices); the message names the
            file and the line.
    """
    file = _find_predictions(run)
    try:
        with open(file, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as e:
        raise ValueError(f"{file}: not a UTF-8 CSV file ({e})") from e
    except csv.Error as e:
        raise ValueError(f"{file}: malformed CSV ({e})") from e
    if not rows:
        raise ValueError(f"{file}: empty file (expected a predictions.csv header and rows)")
    header = rows[0][1]
    prob_cols = [i for i, h in enumerate(header) if h.startswith("prob_")]
    missing = [h for h in ("case_id", "true_index", "pred_index") if h not in header]
    if missing or len(prob_cols) < 2:
        raise ValueError(
            f"{file}: not a predictions.csv of write_classification_report: missing column(s) "
            f"{missing + ([] if len(prob_cols) >= 2 else ['prob_<class> (at least 2)'])}; header is {header}"
        )
    classes = [header[i][len("prob_") :] for i in prob_cols]
    col = {h: i for i, h in enumerate(header)}
    n_c = len(classes)
    data = [(line, row) for line, row in rows[1:] if any(v.strip() for v in row)]
    if not data:
        raise ValueError(f"{file}: no prediction rows (header only)")

    ids: list[str] = []
    y = np.empty(len(data), dtype=np.int64)
    pred = np.empty(len(data), dtype=np.int64)
    prob = np.empty((len(data), n_c), dtype=np.float64)
    for r, (line, row) in enumerate(data):
        if len(row) != len(header):
            raise ValueError(f"{file}, line {line}: {len(row)} fields, the header has {len(header)}")
        try:
            t, q = int(row[col["true_index"]]), int(row[col["pred_index"]])
            p = [float(row[i]) for i in prob_cols]
        except ValueError as e:
            raise ValueError(f"{file}, line {line}: non-numeric index or probability ({e})") from e
        if not (0 <= t < n_c and 0 <= q < n_c):
            raise ValueError(f"{file}, line {line}: true_index {t} / pred_index {q} outside 0..{n_c - 1} ({classes})")
        if not all(math.isfinite(v) for v in p):
            raise ValueError(f"{file}, line {line}: non-finite probability")
        if "true_label" in col and row[col["true_label"]] != classes[t]:
            raise ValueError(
                f"{file}, line {line}: true_label {row[col['true_label']]!r} does not match true_index {t} "
                f"({classes[t]!r})"
            )
        if "correct" in col and row[col["correct"]].strip() not in ("", str(int(t == q))):
            raise ValueError(
                f"{file}, line {line}: correct={row[col['correct']]!r} contradicts true_index {t}, pred_index {q}"
            )
        ids.append(row[col["case_id"]])
        y[r], pred[r], prob[r] = t, q, p
    dups = sorted(cid for cid, k in Counter(ids).items() if k > 1)
    if dups:
        raise ValueError(f"{file}: {len(dups)} duplicate case_id(s), e.g. {dups[:5]}; case ids must be unique")
    return {
        "run": str(run),
        "file": str(file),
        "case_ids": ids,
        "true_index": y,
        "classes": classes,
        "prob": prob,
        "pred_index": pred,
        "correct": pred == y,
    }


# ------------------------------------------------------------------------------------------------- comparison
def _align(a: dict[str, Any], b: dict[str, Any]) -> np.ndarray:
    """Indices into run B's rows that put its cases in run A's order; raises if the test sets differ."""
    if a["classes"] != b["classes"]:
        raise ValueError(
            f"the runs have different classes: A ({a['file']}) {a['classes']}, B ({b['file']}) {b['classes']}"
        )
    ids_a, ids_b = a["case_ids"], b["case_ids"]
    set_a, set_b = set(ids_a), set(ids_b)
    if set_a != set_b:
        only_a, only_b = sorted(set_a - set_b), sorted(set_b - set_a)
        raise ValueError(
            f"the runs were not evaluated on the same test cases: A has {len(ids_a)} cases ({a['file']}), "
            f"B has {len(ids_b)} ({b['file']}), {len(set_a & set_b)} in common; {len(only_a)} only in A "
            f"(e.g. {only_a[:3]}), {len(only_b)} only in B (e.g. {only_b[:3]})"
        )
    pos_b = {cid: i for i, cid in enumerate(ids_b)}
    order = np.array([pos_b[cid] for cid in ids_a], dtype=np.int64)
    differ = np.flatnonzero(a["true_index"] != b["true_index"][order])
    if differ.size:
        examples = [ids_a[i] for i in differ[:3]]
        raise ValueError(
            f"the runs were not evaluated on the same test cases: the true label of {differ.size} of {len(ids_a)} "
            f"case(s) differs between A ({a['file']}) and B ({b['file']}), e.g. case(s) {examples}"
        )
    return order


def _ci_text(lo: float | None, hi: float | None) -> str:
    return "n/a" if lo is None or hi is None else f"{lo:+.3f}..{hi:+.3f}"


def _p_phrase(p: float | None) -> str:
    text = format_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _verdict(p: float | None, alpha: float, better: str) -> str:
    if p is None:
        return "no p-value"
    if p < alpha:
        return f"significant difference at alpha {alpha:g} ({better} better)"
    return f"no significant difference at alpha {alpha:g}"


def _conclusion(auc_test: dict[str, Any] | None, test_name: str, mc: dict[str, Any], alpha: float) -> str:
    parts = []
    if auc_test is not None:
        d = auc_test["difference"]
        if abs(d) <= 1e-12:
            head = f"The AUCs are equal ({auc_test['auc_a']:.3f})"
        else:
            who = "A" if d > 0 else "B"
            # the CI of (higher - lower): flip the A - B interval when B is higher
            lo, hi = auc_test["ci_low"], auc_test["ci_high"]
            if d < 0 and lo is not None and hi is not None:
                lo, hi = -hi, -lo
            head = (
                f"{who}'s AUC is higher by {abs(d):.3f} (A {auc_test['auc_a']:.3f} vs B {auc_test['auc_b']:.3f}; "
                f"{100 * auc_test['confidence']:g} % CI of {who} - {'B' if who == 'A' else 'A'} {_ci_text(lo, hi)})"
            )
        parts.append(
            f"{head}, {_p_phrase(auc_test['p_value'])} ({test_name}): "
            f"{_verdict(auc_test['p_value'], alpha, 'A' if d > 0 else 'B')}."
        )
    else:
        parts.append("No AUC test was possible (see the notes).")
    dacc = mc["difference"]
    parts.append(
        f"Accuracy at each run's own operating point: A {mc['accuracy_a']:.3f} vs B {mc['accuracy_b']:.3f} "
        f"(b = {mc['b']}, c = {mc['c']} discordant cases), {_p_phrase(mc['p_value'])} (McNemar): "
        f"{_verdict(mc['p_value'], alpha, 'A' if dacc > 0 else 'B')}."
    )
    return " ".join(parts)


def compare_runs(
    run_a: PathLike,
    run_b: PathLike,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Paired comparison of two classification runs evaluated on the same test cases.

    Both runs' ``predictions.csv`` are read with :func:`load_run_predictions` and matched by ``case_id``. Binary
    problems: DeLong's test and the paired bootstrap of the AUC of the positive class (class index 1).
    Multi-class problems: the paired bootstrap of the one-vs-rest macro AUC (DeLong's test as implemented here is
    binary; the result says so). Both: McNemar's test on each run's own predictions (``pred_index``, i.e. each run
    at its own threshold). All differences are ``A - B``.

    Args:
        run_a: run A: a ``predictions.csv`` or a folder holding one (see :func:`load_run_predictions`).
        run_b: run B, likewise.
        n_boot: paired bootstrap resamples.
        seed: bootstrap seed.
        alpha: significance level (and 1 - confidence level of the intervals).

    Returns:
        A JSON-serialisable dict: ``run_a``/``run_b`` (``path``, ``predictions``), ``task``, ``classes``,
        ``positive_class`` (binary), ``n``, ``n_per_class``, ``alpha``, ``auc`` (``a``, ``b``, ``difference``,
        ``metric``), ``delong``, ``bootstrap``, ``mcnemar`` (each a test dict, or ``{"applicable": False,
        "reason": ...}``), ``primary_auc_test``, ``notes`` and ``conclusion`` (plain English).

    Raises:
        FileNotFoundError: when a run's predictions file is missing.
        ValueError: for malformed files, different classes, different case sets or different true labels.
    """
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be within (0, 1), got {alpha!r}")
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    a = load_run_predictions(run_a)
    b = load_run_predictions(run_b)
    order = _align(a, b)
    y = a["true_index"]
    prob_a, prob_b = a["prob"], b["prob"][order]
    classes = a["classes"]
    binary = len(classes) == 2
    notes: list[str] = []

    auc_test: dict[str, Any] | None = None
    test_name = ""
    if binary:
        try:
            delong: dict[str, Any] = {"applicable": True, **delong_test(y, prob_a[:, 1], prob_b[:, 1], alpha=alpha)}
        except ValueError as e:
            delong = {"applicable": False, "reason": str(e)}
    else:
        delong = {
            "applicable": False,
            "reason": f"DeLong's test is implemented for binary problems; this one has {len(classes)} classes, "
            "so the macro one-vs-rest AUC is compared by the paired bootstrap only",
        }
    try:
        boot: dict[str, Any] = {
            "applicable": True,
            **paired_bootstrap_auc(y, prob_a, prob_b, n_boot=n_boot, seed=seed, alpha=alpha),
        }
    except ValueError as e:  # an undefined AUC (a class without cases)
        boot = {"applicable": False, "reason": str(e)}
    if delong["applicable"] and delong["p_value"] is not None:
        auc_test, test_name = delong, "DeLong"
    elif boot["applicable"]:
        auc_test, test_name = boot, "paired bootstrap"
    for name, test in (("DeLong", delong), ("paired bootstrap", boot)):
        if binary and not test["applicable"]:
            notes.append(f"{name} not applicable: {test['reason']}")
    if delong.get("note"):
        notes.append(f"DeLong: {delong['note']}")

    mc = mcnemar_test(a["correct"], b["correct"][order])
    notes.append(
        "McNemar compares each run's own predictions (pred_index: its own threshold or argmax), so it tests the "
        "runs as deployed, not the models' ranking ability"
    )
    result: dict[str, Any] = {
        "schema_version": 1,
        "run_a": {"path": str(run_a), "predictions": a["file"]},
        "run_b": {"path": str(run_b), "predictions": b["file"]},
        "task": "binary" if binary else "multiclass",
        "classes": classes,
        "positive_class": 1 if binary else None,
        "positive_class_name": classes[1] if binary else None,
        "n": int(y.size),
        "n_per_class": {c: int(k) for c, k in zip(classes, np.bincount(y, minlength=len(classes)))},
        "alpha": alpha,
        "auc": {
            "metric": f"auc of class '{classes[1]}'" if binary else "macro one-vs-rest auc",
            "a": None if auc_test is None else auc_test["auc_a"],
            "b": None if auc_test is None else auc_test["auc_b"],
            "difference": None if auc_test is None else auc_test["difference"],
        },
        "primary_auc_test": test_name or None,
        "delong": delong,
        "bootstrap": boot,
        "mcnemar": mc,
        "notes": notes,
        "conclusion": _conclusion(auc_test, test_name, mc, alpha),
    }
    return to_jsonable(result)


def write_comparison(out_file: PathLike, result: dict[str, Any]) -> Path:
    """Write a :func:`compare_runs` result as JSON, atomically; returns the path."""
    return atomic_write_json(out_file, result)
