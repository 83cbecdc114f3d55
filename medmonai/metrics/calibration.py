"""Probability calibration by temperature scaling, decided on out-of-fold predictions.

Temperature scaling (Guo et al., 2017) divides the log-probabilities by one number ``T`` and renormalises:
``p_T = softmax(log p / T)``. ``T > 1`` softens over-confident probabilities, ``T < 1`` sharpens under-confident
ones (a mean of fold models is often under-confident); the ranking of the cases, hence the AUC, is unchanged, and a
binary threshold maps onto the new scale.

Whether to calibrate is decided honestly on out-of-fold (OOF) predictions: :func:`cross_fitted_temperature` fits
``T`` on the OOF predictions of all folds but one and applies it to the left-out fold, so the calibrated log loss it
reports is measured on predictions the temperature was not fitted on. Calibrate when that log loss is lower than the
uncalibrated one; the temperature used is then the one fitted on all OOF predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

__all__ = ["apply_temperature", "log_loss", "fit_temperature", "cross_fitted_temperature", "choose_calibration"]

_EPS = 1e-12
#: the search range of ``log T``: T in [e^-3, e^3] ~ [0.05, 20]
_LOG_T_RANGE = (-3.0, 3.0)


def apply_temperature(probs: Any, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` of ``(N, C)`` class probabilities."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)
    z = np.log(p) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_loss(labels: Any, probs: Any) -> float:
    """Mean negative log-likelihood of the true classes (natural log)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def fit_temperature(labels: Any, probs: Any) -> float:
    """The temperature minimising the log loss of ``probs`` (bounded search over ``log T``)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("fit_temperature needs at least one prediction")
    res = minimize_scalar(
        lambda log_t: log_loss(y, apply_temperature(p, float(np.exp(log_t)))), bounds=_LOG_T_RANGE, method="bounded"
    )
    return float(np.exp(res.x))


def cross_fitted_temperature(labels: Any, probs: Any, groups: Sequence[int]) -> tuple[np.ndarray, list[float]]:
    """Calibrate each group's predictions with a temperature fitted on the other groups (the folds).

    Args:
        labels: ``(N,)`` class indices.
        probs: ``(N, C)`` probabilities.
        groups: ``(N,)`` the fold that predicted each case (its out-of-fold fold).

    Returns:
        The cross-fitted calibrated probabilities and the temperature of each group (in sorted group order).
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    g = np.asarray(groups)
    out = np.empty_like(p)
    temps: list[float] = []
    for k in sorted(set(g.tolist())):
        test = g == k
        if test.all():  # a single group: nothing to fit on
            raise ValueError("cross-fitting needs predictions of at least two folds")
        t = fit_temperature(y[~test], p[~test])
        temps.append(t)
        out[test] = apply_temperature(p[test], t)
    return out, temps


def choose_calibration(labels: Any, probs: Any, groups: Sequence[int]) -> dict[str, Any]:
    """Decide on out-of-fold predictions whether temperature scaling improves the log loss.

    Returns:
        ``{"calibrate": bool, "temperature": T (fitted on all OOF predictions, 1.0 when not calibrating),
        "log_loss_raw", "log_loss_calibrated_cross_fitted", "fold_temperatures", "reason"}``.
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    raw = log_loss(y, p)
    cross, temps = cross_fitted_temperature(y, p, groups)
    cal = log_loss(y, cross)
    better = cal < raw
    t_all = fit_temperature(y, p) if better else 1.0
    reason = (
        f"temperature scaling, fitted on the other folds' out-of-fold predictions, gives log loss {cal:.4f} vs "
        f"{raw:.4f} uncalibrated: "
        + (
            f"calibrated with T = {t_all:.3f} (fitted on all out-of-fold predictions)"
            if better
            else "not calibrated (it does not help out-of-fold)"
        )
    )
    return {
        "calibrate": bool(better),
        "temperature": float(t_all),
        "log_loss_raw": raw,
        "log_loss_calibrated_cross_fitted": cal,
        "fold_temperatures": temps,
        "reason": reason,
    }
