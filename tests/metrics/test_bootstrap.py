"""Bootstrap confidence intervals: coverage of the point estimate, determinism, width, stratification, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from medmonai.metrics.bootstrap import bootstrap_ci, resample_indices
from medmonai.metrics.clinical import (
    BINARY_SCALARS,
    batch_scalar_metrics,
    classification_metrics,
    prepare_inputs,
    scalar_metrics,
)


def _binary_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1).round(2)  # rounding creates ties
    return y, p


def _multiclass_data(n: int, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    p = rng.dirichlet(np.ones(c), n)
    p[np.arange(n), y] += 0.4
    return y, p / p.sum(1, keepdims=True)


def test_ci_contains_point_estimate_binary():
    y, p = _binary_data(300)
    ci = bootstrap_ci(y, p, n_boot=500, seed=1)
    assert set(BINARY_SCALARS) | {"confusion_matrix"} == set(ci)
    point = scalar_metrics(classification_metrics(y, p))
    for name in BINARY_SCALARS:
        e = ci[name]
        assert e["value"] == pytest.approx(point[name])
        assert e["ci_low"] <= e["value"] <= e["ci_high"], name
        assert e["ci_low"] < e["ci_high"], name
        assert e["n_boot_valid"] == 500
    assert ci["confusion_matrix"]["value"] == classification_metrics(y, p)["confusion_matrix"]


def test_ci_contains_point_estimate_multiclass():
    y, p = _multiclass_data(240, c=3)
    ci = bootstrap_ci(y, p, n_boot=300, classes=["a", "b", "c"])
    assert {"auc", "f1_macro", "auc/a", "sensitivity/c"} <= set(ci)
    for name, e in ci.items():
        if name != "confusion_matrix":
            assert e["ci_low"] <= e["value"] <= e["ci_high"], name


def test_deterministic_with_seed():
    y, p = _binary_data(100)
    a = bootstrap_ci(y, p, n_boot=200, seed=7)
    b = bootstrap_ci(y, p, n_boot=200, seed=7)
    c = bootstrap_ci(y, p, n_boot=200, seed=8)
    assert a == b
    assert a["auc"]["ci_low"] != c["auc"]["ci_low"] or a["auc"]["ci_high"] != c["auc"]["ci_high"]


def test_narrower_with_more_cases():
    y, p = _binary_data(40, seed=2)
    small = bootstrap_ci(y, p, n_boot=400)
    big = bootstrap_ci(np.tile(y, 10), np.tile(p, 10), n_boot=400)  # same point estimates, 10x the cases
    for name in ("auc", "accuracy", "sensitivity", "specificity"):
        assert big[name]["value"] == pytest.approx(small[name]["value"])
        w_small = small[name]["ci_high"] - small[name]["ci_low"]
        w_big = big[name]["ci_high"] - big[name]["ci_low"]
        assert w_big < 0.6 * w_small, name  # ~ 1/sqrt(10) expected


def test_stratified_resamples_keep_class_counts():
    y = np.array([0] * 57 + [1] * 3)
    idx = resample_indices(y, 200, np.random.default_rng(0), stratified=True)
    assert idx.shape == (200, 60)
    counts = np.stack([np.bincount(y[row], minlength=2) for row in idx])
    assert (counts == [57, 3]).all()
    free = resample_indices(y, 200, np.random.default_rng(0), stratified=False)
    assert (np.bincount(y[free].ravel(), minlength=2) > 0).all() and free.shape == (200, 60)


def test_stratification_keeps_metrics_defined_on_rare_class():
    y = np.array([0] * 57 + [1] * 3)
    p = np.r_[np.linspace(0.0, 0.6, 57), [0.55, 0.7, 0.9]]
    strat = bootstrap_ci(y, p, metric_names=["sensitivity", "auc"], n_boot=1000, stratified=True)
    free = bootstrap_ci(y, p, metric_names=["sensitivity", "auc"], n_boot=1000, stratified=False)
    assert strat["sensitivity"]["n_boot_valid"] == 1000 and strat["auc"]["n_boot_valid"] == 1000
    # P(no positive in a free resample) = (57/60)^60 ~ 4.6 %
    assert 10 < 1000 - free["sensitivity"]["n_boot_valid"] < 100
    assert free["auc"]["n_boot_valid"] == free["sensitivity"]["n_boot_valid"]
    assert set(strat) == {"sensitivity", "auc", "confusion_matrix"}


def test_threshold_stays_fixed():
    y, p = _binary_data(120)
    lo = bootstrap_ci(y, p, metric_names=["sensitivity", "specificity"], n_boot=100, threshold=0.3)
    hi = bootstrap_ci(y, p, metric_names=["sensitivity", "specificity"], n_boot=100, threshold=0.7)
    assert lo["sensitivity"]["value"] == pytest.approx(classification_metrics(y, p, threshold=0.3)["sensitivity"])
    assert hi["specificity"]["value"] == pytest.approx(classification_metrics(y, p, threshold=0.7)["specificity"])
    assert lo["sensitivity"]["ci_low"] > hi["sensitivity"]["ci_high"]  # low threshold -> clearly more sensitive
    assert lo["confusion_matrix"]["value"] != hi["confusion_matrix"]["value"]


@pytest.mark.parametrize("multiclass", [False, True])
def test_vectorised_metrics_equal_point_metrics(multiclass):
    y, p = _multiclass_data(90, c=4, seed=5) if multiclass else _binary_data(90, seed=5)
    p = p.round(1)  # many ties
    inp = prepare_inputs(y, p, classes=None)
    thr = None if multiclass else 0.5
    point = scalar_metrics(classification_metrics(y, p, threshold=thr))
    idx = np.stack([np.arange(y.size), np.arange(y.size)])  # two identity "resamples"
    batch = batch_scalar_metrics(inp.y_true[idx], inp.prob[idx], thr, inp.classes, inp.positive_class)
    assert set(batch) == set(point)
    for name, v in point.items():
        np.testing.assert_allclose(batch[name], [v, v], rtol=1e-12, err_msg=name)


def test_single_class_does_not_crash():
    ci = bootstrap_ci([0, 0, 0, 0], [0.1, 0.6, 0.2, 0.3], n_boot=50)
    assert ci["auc"] == {"value": None, "ci_low": None, "ci_high": None, "n_boot_valid": 0}
    assert ci["specificity"]["value"] == pytest.approx(0.75) and ci["specificity"]["n_boot_valid"] == 50


def test_zero_resamples_and_bad_arguments():
    y, p = _binary_data(30)
    ci = bootstrap_ci(y, p, n_boot=0)
    assert ci["auc"]["ci_low"] is None and ci["auc"]["value"] is not None and ci["auc"]["n_boot_valid"] == 0
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci(y, p, metric_names=["auroc"])
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(y, p, alpha=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(y, p, n_boot=-1)


def test_alpha_controls_width():
    y, p = _binary_data(150)
    wide = bootstrap_ci(y, p, metric_names=["auc"], n_boot=500, alpha=0.01)["auc"]
    narrow = bootstrap_ci(y, p, metric_names=["auc"], n_boot=500, alpha=0.2)["auc"]
    assert wide["ci_low"] < narrow["ci_low"] and wide["ci_high"] > narrow["ci_high"]


def test_speed_1000_resamples_of_600_cases():
    y, p = _binary_data(600)
    bootstrap_ci(y, p, n_boot=10)  # warm up imports
    t0 = time.perf_counter()
    ci = bootstrap_ci(y, p, n_boot=1000)
    elapsed = time.perf_counter() - t0
    assert ci["auc"]["n_boot_valid"] == 1000
    assert elapsed < 5.0, f"bootstrap took {elapsed:.2f} s"
