"""Threshold selection on constructed validation sets with known optima."""

from __future__ import annotations

import numpy as np
import pytest

from medmonai.metrics.clinical import classification_metrics
from medmonai.metrics.threshold import choose_decision_rule, choose_threshold

# validation set: 4 positives, 6 negatives. Sorted scores (P = positive, N = negative):
#   0.9P 0.8P 0.7N 0.6P 0.4N 0.35N 0.3P 0.2N 0.1N 0.05N
# Youden J = sens + spec - 1 at each threshold t (positive if p >= t):
#   t=0.9: 1/4 - 0 = .250   t=0.8: 2/4 - 0 = .500   t=0.7: 2/4 - 1/6 = .333   t=0.6: 3/4 - 1/6 = .583 (max)
#   t=0.4: 3/4 - 2/6 = .417 t=0.35: 3/4 - 3/6 = .25 t=0.3: 1 - 3/6 = .500    ... decreasing to 0
Y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
P = [0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.35, 0.05]


def test_youden_known_optimum():
    r = choose_threshold(Y, P, method="youden")
    assert r["method"] == "youden"
    assert r["threshold"] == pytest.approx(0.6)
    assert r["sensitivity"] == pytest.approx(3 / 4)
    assert r["specificity"] == pytest.approx(5 / 6)
    assert r["youden_index"] == pytest.approx(7 / 12)
    assert (r["n_val"], r["n_val_positive"], r["n_val_negative"]) == (10, 4, 6)


@pytest.mark.parametrize(
    ("target", "thr", "sens", "spec"),
    [
        (0.9, 0.3, 1.0, 3 / 6),  # only t=0.3 catches the 4th positive; highest such threshold
        (0.75, 0.6, 3 / 4, 5 / 6),
        (0.5, 0.8, 2 / 4, 1.0),
        (0.6, 0.6, 3 / 4, 5 / 6),
        (1.0, 0.3, 1.0, 3 / 6),
    ],
)
def test_target_sensitivity_highest_threshold_reaching_target(target, thr, sens, spec):
    r = choose_threshold(Y, P, method="sensitivity", target_sensitivity=target)
    assert r["threshold"] == pytest.approx(thr)
    assert r["sensitivity"] == pytest.approx(sens) and r["sensitivity"] >= target
    assert r["specificity"] == pytest.approx(spec)
    assert r["target_sensitivity"] == target


def test_target_sensitivity_exact_fraction_despite_float_rounding():
    # 10 positives; 0.7 * 10 = 7.000000000000001 in floating point, exactly 7 positives must suffice
    pos = np.linspace(0.55, 1.0, 10)
    neg = np.linspace(0.0, 0.5, 10)
    y = np.r_[np.ones(10, int), np.zeros(10, int)]
    r = choose_threshold(y, np.r_[pos, neg], method="sensitivity", target_sensitivity=0.7)
    assert r["sensitivity"] == pytest.approx(0.7)
    assert r["threshold"] == pytest.approx(pos[3])  # the 7th highest positive score


def test_youden_tie_breaks_towards_higher_sensitivity():
    # sorted: 0.9P 0.8P 0.7P 0.65P 0.6N 0.55P 0.4N ... ; J(0.65) = 4/5 - 0 = 0.8 = J(0.55) = 1 - 1/5
    y = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    p = [0.55, 0.65, 0.7, 0.8, 0.9, 0.1, 0.2, 0.3, 0.4, 0.6]
    r = choose_threshold(y, p)
    assert r["threshold"] == pytest.approx(0.55)
    assert r["sensitivity"] == 1.0 and r["specificity"] == pytest.approx(0.8)


def test_threshold_is_finite_in_unit_interval_for_extreme_scores():
    r = choose_threshold([0, 0, 1, 1], [0.0, 0.0, 1.0, 1.0])
    assert np.isfinite(r["threshold"]) and 0.0 <= r["threshold"] <= 1.0
    assert r["sensitivity"] == 1.0 and r["specificity"] == 1.0
    # a useless classifier (all scores equal): still a finite threshold
    r = choose_threshold([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])
    assert r["threshold"] == 0.5 and r["sensitivity"] == 1.0


def test_fixed_method_reports_validation_rates():
    r = choose_threshold(Y, P, method="fixed", fixed=0.5)
    assert (
        r["threshold"] == 0.5 and r["sensitivity"] == pytest.approx(3 / 4) and r["specificity"] == pytest.approx(5 / 6)
    )


def test_positive_class_zero_and_two_column_input():
    y0 = 1 - np.array(Y)  # class 0 is now the positive class
    p2 = np.stack([P, 1 - np.array(P)], axis=1)  # column 0 = p(positive)
    r = choose_threshold(y0, p2, positive_class=0)
    assert r["threshold"] == pytest.approx(0.6) and r["positive_class"] == 0


def test_chosen_threshold_reproduces_rates_and_is_usable_as_dict():
    r = choose_threshold(Y, P, method="youden")
    m = classification_metrics(Y, P, threshold=r)
    assert m["threshold"] == r["threshold"]
    assert m["sensitivity"] == r["sensitivity"] and m["specificity"] == r["specificity"]
    with pytest.raises(ValueError, match="positive_class=1"):
        classification_metrics(1 - np.array(Y), P, threshold=r, positive_class=0)


@pytest.mark.parametrize(
    ("y", "p", "kwargs", "match"),
    [
        ([0, 1, 2], [[0.5, 0.3, 0.2]] * 3, {}, "binary problems"),
        ([0, 0, 0], [0.1, 0.2, 0.3], {}, "both classes are needed"),
        ([0, 1], [0.1, 0.9], {"method": "cost"}, "unknown threshold method"),
        ([0, 1], [0.1, 0.9], {"method": "sensitivity", "target_sensitivity": 0.0}, "target_sensitivity"),
        ([0, 1], [0.1, 0.9], {"method": "fixed", "fixed": 2.0}, "fixed threshold"),
    ],
)
def test_bad_requests_raise(y, p, kwargs, match):
    with pytest.raises(ValueError, match=match):
        choose_threshold(y, p, **kwargs)


# ------------------------------------------------------------------------------------ multi-class decision rule


def _three_class(n=400, seed=0, priors=(0.7, 0.2, 0.1)):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=priors)
    z = np.eye(3)[y] + rng.normal(size=(n, 3))
    q = np.exp(z)
    return y, q / q.sum(axis=1, keepdims=True)  # a model trained for a uniform prior (balanced weights)


def test_decision_rule_candidates_and_objectives():
    y, p = _three_class()
    pi, uniform = [0.7, 0.2, 0.1], [1 / 3] * 3
    acc = choose_decision_rule(y, p, pi, uniform, objective="accuracy")
    bal = choose_decision_rule(y, p, pi, uniform, objective="balanced_accuracy")
    default = choose_decision_rule(y, p, pi, uniform)
    # balanced weights: alpha 0 is the plain argmax and is dropped as a duplicate
    assert [c["alpha"] for c in acc["candidates"]] == [None, 0.25, 0.5, 0.75, 1.0]
    best_acc = max(c["expected_accuracy"] for c in acc["candidates"])
    assert acc["validation"]["expected_accuracy"] == best_acc
    assert bal["validation"]["balanced_accuracy"] == max(c["balanced_accuracy"] for c in bal["candidates"])
    assert default["validation"]["expected_accuracy"] >= default["majority_rate"] == pytest.approx(0.7)
    assert default["objective_used"] == "balanced_accuracy_above_majority"


def test_decision_rule_of_an_unweighted_model_and_its_errors():
    y, p = _three_class(seed=1)
    pi = [0.7, 0.2, 0.1]
    rule = choose_decision_rule(y, p, pi, pi)  # unweighted: alpha 1 equals the plain argmax
    assert [c["alpha"] for c in rule["candidates"]] == [None, 0.0, 0.25, 0.5, 0.75]
    with pytest.raises(ValueError, match="binary problems use choose_threshold"):
        choose_decision_rule([0, 1], [[0.4, 0.6], [0.7, 0.3]], [0.5, 0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="unknown decision objective"):
        choose_decision_rule(y, p, pi, pi, objective="kappa")
    with pytest.raises(ValueError, match="3 classes"):
        choose_decision_rule(y, p, [0.5, 0.5], [0.5, 0.5])


def test_decision_rule_without_a_validation_class_uses_the_plain_accuracy():
    y, p = _three_class(seed=2)
    keep = y != 2
    rule = choose_decision_rule(y[keep], p[keep], [0.7, 0.2, 0.1], [1 / 3] * 3)
    assert rule["objective_used"] == "validation_accuracy" and "no validation case" in rule["notes"][0]
    assert rule["validation"]["accuracy"] == max(c["accuracy"] for c in rule["candidates"])
