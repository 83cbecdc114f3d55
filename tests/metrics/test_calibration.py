"""Temperature scaling decided on out-of-fold predictions (medmonai.metrics.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from medmonai.metrics.calibration import (
    apply_temperature,
    choose_calibration,
    cross_fitted_temperature,
    fit_temperature,
    log_loss,
)


def _calibrated_sample(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from the probabilities themselves: calibrated by construction."""
    rng = np.random.default_rng(seed)
    p1 = rng.beta(2, 2, n)
    y = (rng.random(n) < p1).astype(int)
    return y, np.stack([1 - p1, p1], axis=1)


def test_fit_temperature_undoes_a_known_distortion():
    y, p = _calibrated_sample()
    for t in (0.5, 2.0):
        distorted = apply_temperature(p, 1.0 / t)  # under- (t=0.5: log p / 2) or over-confident (t=2) copies
        assert fit_temperature(y, distorted) == pytest.approx(t, rel=0.15)  # the temperature that undoes it
    assert fit_temperature(y, p) == pytest.approx(1.0, abs=0.15)
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, atol=1e-9)
    assert (apply_temperature(p, 3.0).argmax(1) == p.argmax(1)).all()  # ranking (AUC) unchanged


def test_choose_calibration_calibrates_only_when_it_helps_out_of_fold():
    y, p = _calibrated_sample()
    folds = np.arange(len(y)) % 5
    under = apply_temperature(p, 3.0)  # under-confident, as a mean of fold models often is
    decision = choose_calibration(y, under, folds)
    assert decision["calibrate"] and decision["temperature"] < 1.0
    assert decision["log_loss_calibrated_cross_fitted"] < decision["log_loss_raw"] == pytest.approx(log_loss(y, under))
    assert "calibrated with T" in decision["reason"]
    cross, temps = cross_fitted_temperature(y, under, folds)
    assert len(temps) == 5 and cross.shape == under.shape


def test_cross_fitting_needs_two_folds():
    y, p = _calibrated_sample(50)
    with pytest.raises(ValueError, match="at least two folds"):
        cross_fitted_temperature(y, p, np.zeros(len(y)))
