"""Classification metrics against hand-computed values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medmonai.metrics.clinical import (
    BINARY_SCALARS,
    MULTICLASS_SCALARS,
    apply_decision_rule,
    classification_metrics,
    decision_rule_from_report,
    majority_class_rate,
    prepare_inputs,
    prior_shift_factors,
    scalar_metrics,
)

# 10 cases, 4 positive (class 1), 6 negative (class 0).
Y10 = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
P10 = [0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.35, 0.05]
# threshold 0.5 -> predicted positive: 0.9, 0.8, 0.6 (true positives) and 0.7 (a negative)
#   TP = 3, FN = 1 (0.3), FP = 1 (0.7), TN = 5
#   sensitivity 3/4, specificity 5/6, PPV 3/4, NPV 5/6, F1 = 2*3/(2*3+1+1) = 3/4,
#   accuracy 8/10, balanced accuracy (3/4 + 5/6)/2 = 19/24
# AUC (pairwise): 0.9 and 0.8 beat all 6 negatives, 0.6 beats 5 (not 0.7), 0.3 beats 3 (0.2, 0.1, 0.05)
#   -> (6 + 6 + 5 + 3) / (4 * 6) = 20/24


def test_binary_hand_computed():
    m = classification_metrics(Y10, P10, threshold=0.5)
    assert m["task"] == "binary"
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 1, 5, 1)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["ppv"] == pytest.approx(3 / 4)
    assert m["npv"] == pytest.approx(5 / 6)
    assert m["f1"] == pytest.approx(3 / 4)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["balanced_accuracy"] == pytest.approx(19 / 24)
    assert m["auc"] == pytest.approx(20 / 24)
    assert m["confusion_matrix"] == [[5, 1], [1, 3]]
    assert m["n"] == 10 and m["n_per_class"] == {"0": 6, "1": 4}
    assert m["notes"] == []
    assert set(scalar_metrics(m)) == set(BINARY_SCALARS)


def test_auc_equals_pairwise_count_with_ties():
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([0.5, 0.8, 0.5, 0.2, 0.2, 0.9])
    pos, neg = p[y == 1], p[y == 0]
    pairs = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg)]
    # by hand: 0.5 vs (0.5, 0.2, 0.9) = 0.5 + 1 + 0; 0.8 vs ... = 1 + 1 + 0; 0.2 vs ... = 0 + 0.5 + 0 -> 4/9
    assert sum(pairs) / len(pairs) == pytest.approx(4 / 9)
    assert classification_metrics(y, p)["auc"] == pytest.approx(4 / 9)


def test_confusion_matrix_orientation_rows_true_cols_predicted():
    # 3 true negatives of which 2 predicted positive, 1 true positive predicted positive
    m = classification_metrics([0, 0, 0, 1], [0.9, 0.8, 0.1, 0.7], threshold=0.5)
    assert m["confusion_matrix"] == [[1, 2], [0, 1]]  # row 0 = true class 0: 1 predicted 0, 2 predicted 1
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 2, 1, 0)
    assert m["ppv"] == pytest.approx(1 / 3)
    assert m["npv"] == pytest.approx(1.0)


def test_threshold_is_inclusive_and_changes_predictions():
    m = classification_metrics([1, 0], [0.4, 0.39], threshold=0.4)
    assert m["tp"] == 1 and m["fp"] == 0
    m = classification_metrics(Y10, P10, threshold=0.3)  # adds 0.3 (TP), 0.4 and 0.35 (FP)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (4, 3, 3, 0)
    assert m["sensitivity"] == 1.0 and m["specificity"] == pytest.approx(0.5)


def test_two_column_probabilities_and_positive_class_zero():
    p2 = np.stack([1 - np.array(P10), P10], axis=1)
    a = classification_metrics(Y10, P10)
    b = classification_metrics(Y10, p2)
    assert scalar_metrics(a) == pytest.approx(scalar_metrics(b))
    # relabel: class 0 is now the positive one, with the same probabilities
    y_swapped = 1 - np.array(Y10)
    c = classification_metrics(y_swapped, P10, positive_class=0, classes=["disease", "healthy"])
    assert scalar_metrics(c) == pytest.approx(scalar_metrics(a))
    assert c["positive_class_name"] == "disease"
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (3, 1, 5, 1)
    # rows/cols are class indices: class 0 (disease) row = [TP, FN]
    assert c["confusion_matrix"] == [[3, 1], [1, 5]]


def test_torch_and_one_hot_inputs():
    m = classification_metrics(torch.tensor(Y10), torch.tensor(P10, dtype=torch.float32))
    assert m["auc"] == pytest.approx(20 / 24)
    one_hot = np.eye(2, dtype=int)[Y10]
    assert classification_metrics(one_hot, P10)["confusion_matrix"] == [[5, 1], [1, 3]]


# 3 classes, 6 cases. Predictions (argmax): 0, 1, 1, 2, 2, 2 for true 0, 0, 1, 1, 2, 2.
Y6 = [0, 0, 1, 1, 2, 2]
P6 = [
    [0.7, 0.2, 0.1],
    [0.3, 0.4, 0.3],
    [0.2, 0.6, 0.2],
    [0.1, 0.3, 0.6],
    [0.1, 0.2, 0.7],
    [0.1, 0.1, 0.8],
]
# confusion (rows true): [[1,1,0],[0,1,1],[0,0,2]]; accuracy 4/6; recalls 1/2, 1/2, 1 -> balanced 2/3
# one-vs-rest:   tp fp tn fn | sens spec ppv  npv  f1
#   a:           1  0  4  1  | 1/2  1    1    4/5  2/3
#   b:           1  1  3  1  | 1/2  3/4  1/2  3/4  1/2
#   c:           2  1  3  0  | 1    3/4  2/3  1    4/5
# AUC a: positives 0.7, 0.3 beat all negatives (0.2, 0.1, 0.1, 0.1) -> 1
# AUC b: positives 0.6 (beats 4), 0.3 (beats 0.2, 0.2, 0.1; loses to 0.4) -> 7/8
# AUC c: positives 0.7, 0.8 beat all negatives (0.1, 0.3, 0.2, 0.6) -> 1; macro = (1 + 7/8 + 1)/3 = 23/24


def test_multiclass_hand_computed():
    m = classification_metrics(Y6, P6, classes=["a", "b", "c"])
    assert m["task"] == "multiclass" and m["threshold"] is None
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    expected = {
        "a": dict(tp=1, fp=0, tn=4, fn=1, sensitivity=1 / 2, specificity=1, ppv=1, npv=4 / 5, f1=2 / 3, auc=1),
        "b": dict(
            tp=1, fp=1, tn=3, fn=1, sensitivity=1 / 2, specificity=3 / 4, ppv=1 / 2, npv=3 / 4, f1=1 / 2, auc=7 / 8
        ),
        "c": dict(tp=2, fp=1, tn=3, fn=0, sensitivity=1, specificity=3 / 4, ppv=2 / 3, npv=1, f1=4 / 5, auc=1),
    }
    for cls, exp in expected.items():
        for key, v in exp.items():
            assert m["per_class"][cls][key] == pytest.approx(v), (cls, key)
        assert m["per_class"][cls]["n"] == 2
    assert m["auc"] == pytest.approx(23 / 24)
    assert m["sensitivity_macro"] == pytest.approx(2 / 3)
    assert m["specificity_macro"] == pytest.approx((1 + 3 / 4 + 3 / 4) / 3)
    assert m["ppv_macro"] == pytest.approx((1 + 1 / 2 + 2 / 3) / 3)
    assert m["npv_macro"] == pytest.approx((4 / 5 + 3 / 4 + 1) / 3)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3)
    flat = scalar_metrics(m)
    assert set(MULTICLASS_SCALARS) <= set(flat)
    assert flat["auc/b"] == pytest.approx(7 / 8) and flat["ppv/c"] == pytest.approx(2 / 3)


def test_multiclass_auc_matches_sklearn_ovr_macro():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 80)
    p = rng.dirichlet(np.ones(4), 80)
    p[np.arange(80), y] += 0.3
    p /= p.sum(1, keepdims=True)
    assert classification_metrics(y, p)["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))


def test_single_class_gives_undefined_auc_with_note():
    m = classification_metrics([0, 0, 0], [0.2, 0.7, 0.1])
    assert m["auc"] is None
    assert m["sensitivity"] is None and m["balanced_accuracy"] is None
    assert m["specificity"] == pytest.approx(2 / 3)
    assert any(n.startswith("auc undefined") and "only class '0'" in n for n in m["notes"])
    assert any(n.startswith("sensitivity undefined") for n in m["notes"])


def test_nothing_predicted_positive_gives_undefined_ppv():
    m = classification_metrics([1, 0, 0], [0.4, 0.2, 0.1], threshold=0.5)
    assert m["ppv"] is None and m["sensitivity"] == 0.0 and m["f1"] == 0.0
    assert m["npv"] == pytest.approx(2 / 3)
    assert any(n.startswith("ppv undefined") for n in m["notes"])


def test_multiclass_absent_class_makes_macro_values_undefined():
    p = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]]
    m = classification_metrics([0, 1, 0], p, classes=["a", "b", "c"])
    assert m["per_class"]["c"]["auc"] is None and m["per_class"]["c"]["sensitivity"] is None
    assert m["per_class"]["a"]["auc"] == pytest.approx(1.0)
    assert m["auc"] is None and m["balanced_accuracy"] is None and m["sensitivity_macro"] is None
    assert m["accuracy"] == pytest.approx(1.0)
    assert any("of class 'c' undefined" in n for n in m["notes"])


@pytest.mark.parametrize(
    ("y", "p", "kwargs", "match"),
    [
        ([0, 1], [2.0, -1.0], {}, "logits"),
        ([0, 2], [0.1, 0.9], {}, "outside 0..1"),
        ([0, 1, 1], [0.1, 0.9], {}, "3 cases but y_prob has 2"),
        ([0, 1], [0.1, float("nan")], {}, "non-finite"),
        ([0, 1], [[0.2, 0.8], [0.6, 0.4]], {"classes": ["a", "b", "c"]}, "3 class names"),
        ([0, 1], [[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]], {"threshold": 0.5}, "only applies to binary"),
        ([0, 1], [0.1, 0.9], {"threshold": 1.5}, r"within \[0, 1\]"),
        ([0.5, 1], [0.1, 0.9], {}, "integer class indices"),
        ([], [], {}, "empty"),
    ],
)
def test_bad_inputs_raise_clear_errors(y, p, kwargs, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(y, p, **kwargs)


def test_prepare_inputs_expands_binary_column():
    inp = prepare_inputs([0, 1], [0.25, 0.75], positive_class=0)
    np.testing.assert_allclose(inp.prob, [[0.25, 0.75], [0.75, 0.25]])
    assert inp.binary and inp.positive_class == 0 and inp.classes == ["0", "1"]


# ------------------------------------------------------------------------------------------- decision rules


def test_prior_shift_factors_undo_balanced_weights():
    pi = [0.6, 0.3, 0.1]
    uniform = [1 / 3] * 3
    assert np.allclose(prior_shift_factors(1.0, pi, uniform), pi)  # alpha 1: back to the real frequencies
    assert np.allclose(prior_shift_factors(0.0, pi, uniform), uniform)  # alpha 0: the weighted model as is
    assert np.allclose(prior_shift_factors(1.0, pi, pi), uniform)  # an unweighted model at alpha 1: plain argmax
    assert np.allclose(prior_shift_factors(0.0, pi, pi), np.array([1 / 0.6, 1 / 0.3, 1 / 0.1]) / 15.0)
    with pytest.raises(ValueError, match="alpha"):
        prior_shift_factors(1.5, pi, uniform)
    with pytest.raises(ValueError, match="positive"):
        prior_shift_factors(0.5, [1.0, 0.0, 0.0], uniform)


def test_apply_decision_rule_forms():
    p = np.array([[0.30, 0.35, 0.35], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    assert apply_decision_rule(p).tolist() == [1, 0, 2]  # argmax, ties to the lowest index
    assert apply_decision_rule(p, {"method": "argmax"}).tolist() == [1, 0, 2]
    rule = {"method": "prior_shift", "alpha": 1.0, "class_priors": [0.6, 0.3, 0.1], "training_prior": [1, 1, 1]}
    assert apply_decision_rule(p, rule).tolist() == [0, 0, 0]  # 0.30 * 0.6 > 0.35 * 0.3; 0.2 * 0.6 > 0.6 * 0.1
    assert apply_decision_rule(p[None], rule).shape == (1, 3)  # batched (B, N, C), as in the bootstrap
    b = np.array([[0.6, 0.4], [0.2, 0.8]])
    assert apply_decision_rule(b, 0.3).tolist() == [1, 1]
    assert apply_decision_rule(b, {"threshold": 0.3, "positive_class": 0}).tolist() == [0, 1]
    with pytest.raises(ValueError, match="for 3 classes"):
        apply_decision_rule(b, rule)
    with pytest.raises(ValueError, match="only applies to 2 classes"):
        apply_decision_rule(p, 0.5)
    with pytest.raises(ValueError, match="unknown decision rule"):
        classification_metrics([0, 1, 2], p, threshold={"method": "vote", "threshold": None})


def test_classification_metrics_with_a_decision_rule():
    p = np.array([[0.30, 0.35, 0.35], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    rule = {"method": "prior_shift", "alpha": 1.0, "class_priors": [0.6, 0.3, 0.1], "training_prior": [1, 1, 1]}
    m = classification_metrics([0, 0, 2], p, threshold=rule)
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 0, 0], [1, 0, 0]] and m["threshold"] is None
    assert m["decision_rule"]["alpha"] == 1.0 and "prior shift" in m["prediction_rule"]


def test_decision_rule_from_report_and_majority_rate():
    assert decision_rule_from_report({"threshold": {"threshold": 0.3}, "positive_class": 1}) == {
        "threshold": 0.3,
        "positive_class": 1,
    }
    assert decision_rule_from_report({"threshold": {"threshold": None, "method": "argmax"}}) is None
    rule = {"method": "prior_shift", "alpha": 0.5, "class_priors": [0.5, 0.5, 0.0001], "training_prior": [1, 1, 1]}
    assert decision_rule_from_report({"threshold": {"threshold": None}, "decision_rule": rule}) == rule
    assert majority_class_rate([2, 2, 1, 0]) == (2, 0.5)


def test_quadratic_weighted_kappa_matches_sklearn_and_is_reported_for_ordinal_labels_only(tmp_path):
    from sklearn.metrics import cohen_kappa_score

    from medmonai.metrics.clinical import classification_metrics, quadratic_weighted_kappa, scalar_metrics
    from medmonai.metrics.report import summary_line, write_classification_report

    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 200)
    pred = np.clip(y + rng.integers(-1, 2, 200), 0, 3)  # mostly off by at most one grade
    cm = np.zeros((4, 4), int)
    np.add.at(cm, (y, pred), 1)
    expected = cohen_kappa_score(y, pred, weights="quadratic")
    assert float(quadratic_weighted_kappa(cm)) == pytest.approx(expected)
    # batched, and undefined (NaN) when only one class is present
    batch = quadratic_weighted_kappa(np.stack([cm, np.diag([5, 0, 0, 0])]))
    assert batch[0] == pytest.approx(expected) and np.isnan(batch[1])
    # a distant error costs more than a neighbouring one
    near, far = np.diag([10, 10, 10, 10]), np.diag([10, 10, 10, 10])
    near[0, 0], near[0, 1] = 9, 1
    far[0, 0], far[0, 3] = 9, 1
    assert quadratic_weighted_kappa(near) > quadratic_weighted_kappa(far)
    prob = np.eye(4)[pred] * 0.7 + 0.075  # argmax = pred
    assert "kappa_quadratic" not in scalar_metrics(classification_metrics(y, prob))
    ordinal = classification_metrics(y, prob, ordinal=True)
    assert ordinal["ordinal"] is True and ordinal["kappa_quadratic"] == pytest.approx(expected)
    report = write_classification_report(tmp_path / "ord", y, prob, ordinal=True, n_boot=50)
    kappa = report["metrics"]["kappa_quadratic"]
    assert report["ordinal"] is True and kappa["ci_low"] <= kappa["value"] <= kappa["ci_high"]
    assert "quadratic weighted kappa" in summary_line(report)
    plain = write_classification_report(tmp_path / "nominal", y, prob, n_boot=0)
    assert "kappa_quadratic" not in plain["metrics"] and "ordinal" not in plain
    binary = write_classification_report(tmp_path / "bin", y % 2, prob[:, :2].sum(1) / 2, ordinal=True, n_boot=0)
    assert "kappa_quadratic" not in binary["metrics"]  # two classes: the binary metrics, not an ordinal scale


def test_is_ordinal_reads_the_datalist_flag(tmp_path):
    import json

    from medmonai.data.datalist import is_ordinal

    assert is_ordinal({"classes": ["a", "b", "c"], "ordinal": True}) and not is_ordinal({"classes": ["a"]})
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"classes": ["g0", "g1", "g2"], "ordinal": "yes", "training": []}))
    with pytest.raises(ValueError, match=r"datalist.json: 'ordinal' must be true or false, got 'yes'"):
        is_ordinal(path)
