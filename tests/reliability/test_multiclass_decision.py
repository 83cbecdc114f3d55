"""Multi-class decisions are chosen on validation data and the report flags accuracy below the majority rate (issue
21, item 7).

A model trained with balanced class weights estimates posteriors for a uniform class prior: its plain argmax
under-predicts the commonest class, and on an imbalanced 5-grade set its accuracy fell below that of always answering
the commonest grade. The decision rule (argmax, or argmax after undoing the weighting partly or fully) is now chosen on
the validation predictions, recorded in report.json and used on the test split and by inference; the report states
the majority-class rate and warns when the accuracy is below it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medmonai.metrics.clinical import (
    apply_decision_rule,
    decision_rule_from_report,
    majority_class_rate,
    quadratic_weighted_kappa,
)
from medmonai.metrics.report import summary_line, write_classification_report
from medmonai.metrics.threshold import choose_decision_rule
from tests.reliability._bundle import run_in_process

PRIORS = np.array([0.435, 0.25, 0.15, 0.10, 0.065])  # the imbalanced 5-grade set of the issue
UNIFORM = np.full(5, 0.2)  # balanced class weights: the model was trained for a uniform prior


def _weighted_model(n: int, seed: int, signal: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn with PRIORS and the calibrated posteriors of a model trained with balanced class weights."""
    rng = np.random.default_rng(seed)
    y = rng.choice(5, size=n, p=PRIORS)
    z = signal * np.eye(5)[y] + rng.normal(size=(n, 5))
    q = np.exp(signal * z)  # likelihoods; normalised = posteriors under a uniform prior
    return y, q / q.sum(axis=1, keepdims=True)


def test_the_rule_chosen_on_validation_beats_the_majority_rate_where_the_weighted_argmax_does_not():
    yv, pv = _weighted_model(300, seed=0)
    yt, pt = _weighted_model(600, seed=1)
    _, majority = majority_class_rate(yt, 5)
    old = np.mean(pt.argmax(axis=1) == yt)
    assert old < majority  # the failure of the issue: the weighted argmax is less often right than the trivial rule
    rule = choose_decision_rule(yv, pv, PRIORS, UNIFORM)
    assert rule["method"] == "prior_shift" and 0.0 < rule["alpha"] <= 1.0
    pred = apply_decision_rule(pt, rule)
    assert np.mean(pred == yt) >= majority
    assert len(set(pred.tolist())) >= 3  # not the trivial rule either: rare grades are still predicted
    # recorded for the report: the priors, the factors, every candidate's validation values, the objective
    assert rule["objective"] == "balanced_accuracy_above_majority" and rule["majority_rate"] == pytest.approx(0.435)
    assert [c["alpha"] for c in rule["candidates"]] == [None, 0.25, 0.5, 0.75, 1.0]
    assert sum(c["selected"] for c in rule["candidates"]) == 1
    assert rule["validation"]["expected_accuracy"] >= rule["majority_rate"]
    assert np.allclose(rule["factors"], PRIORS ** rule["alpha"] / np.sum(PRIORS ** rule["alpha"]))


def test_the_test_report_warns_below_the_majority_rate_and_records_the_rule(tmp_path):
    yv, pv = _weighted_model(300, seed=0)
    yt, pt = _weighted_model(600, seed=1)
    plain = write_classification_report(tmp_path / "argmax", yt, pt, n_boot=20)
    assert plain["majority_class"]["rate"] == pytest.approx(np.mean(yt == 0)) and plain["majority_class"]["index"] == 0
    assert plain["accuracy_below_majority_rate"] is True
    assert any("below the majority-class rate" in w for w in plain["warnings"])
    assert plain["decision_rule"]["method"] == "argmax"
    rule = choose_decision_rule(yv, pv, PRIORS, UNIFORM)
    chosen = write_classification_report(tmp_path / "rule", yt, pt, threshold=rule, n_boot=20)
    assert chosen["accuracy_below_majority_rate"] is False and chosen["warnings"] == []
    assert chosen["metrics"]["accuracy"]["value"] >= chosen["majority_class"]["rate"]
    on_disk = json.loads((tmp_path / "rule" / "report.json").read_text())
    assert on_disk["decision_rule"]["alpha"] == rule["alpha"] and on_disk["threshold"]["method"] == "prior_shift"
    # predictions.csv and inference apply the same rule, read back from the report
    again = decision_rule_from_report(on_disk)
    assert np.array_equal(apply_decision_rule(pt, again), apply_decision_rule(pt, rule))
    rows = (tmp_path / "rule" / "predictions.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[-3]) for r in rows] == apply_decision_rule(pt, rule).tolist()


def test_binary_reports_keep_the_youden_threshold(tmp_path):
    from medmonai.metrics.threshold import choose_threshold

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, 200), 0, 1)
    thr = choose_threshold(y, p)
    rep = write_classification_report(tmp_path, y, p, threshold=thr, n_boot=20)
    assert rep["threshold"]["method"] == "youden" and rep["threshold"]["threshold"] == thr["threshold"]
    assert "decision_rule" not in rep and "majority_class" in rep
    assert decision_rule_from_report(rep) == {"threshold": thr["threshold"], "positive_class": 1}
    assert np.array_equal(apply_decision_rule(np.stack([1 - p, p], 1), thr), (p >= thr["threshold"]).astype(int))


THREE_CLASSES = {
    "n_subjects": 30,
    "images_per_subject": [1, 1],
    "test_fraction": 0.25,
    "seed": 0,
    "classes": ["grade0", "grade1", "grade2"],
    "class_ratio": [0.6, 0.25, 0.15],
}


def test_classification_2d_bundle_on_three_class_phantoms_records_the_rule(tmp_path):
    from medmonai.data.defaults import resolve_datalist

    datalist = resolve_datalist("", tmp_path / "phantoms", 2, progress=False, **THREE_CLASSES)
    # the grades are ordered: the datalist says so, and the report adds the quadratic weighted kappa
    marked = json.loads(Path(datalist).read_text()) | {"ordinal": True}
    Path(datalist).write_text(json.dumps(marked))
    settings = {"max_epochs": 2, "n_boot": 20}
    run_in_process(tmp_path, datalist, **settings)
    run_in_process(tmp_path, datalist, "evaluate", **settings)
    report = json.loads((tmp_path / "runs" / "eval" / "report.json").read_text())
    assert report["task"] == "multiclass" and report["classes"] == THREE_CLASSES["classes"]
    kappa = report["metrics"]["kappa_quadratic"]
    assert report["ordinal"] is True and kappa["n_boot_valid"] > 0
    cm = np.asarray(report["confusion_matrix"]["counts"])
    assert kappa["value"] == pytest.approx(float(quadratic_weighted_kappa(cm)))
    assert "quadratic weighted kappa" in summary_line(report)
    rule = report["decision_rule"]
    assert rule["method"] in ("argmax", "prior_shift") and rule["chosen_on"] == "validation"
    assert rule["source"]["class_weights"] is not None and rule["source"]["class_priors_from"] == "training entries"
    assert rule["training_prior"] == pytest.approx([1 / 3] * 3)  # balanced class weights: a uniform training prior
    assert len(rule["candidates"]) >= 2
    assert 0.0 < report["majority_class"]["rate"] < 1.0 and isinstance(report["accuracy_below_majority_rate"], bool)
    # the bundle's inference reads the rule from the evaluation report
    run_in_process(tmp_path, datalist, "inference", input=datalist, input_key="test", **settings)
    out = json.loads((tmp_path / "runs" / "inference" / "predictions.json").read_text())
    assert out["decision_rule"]["method"] == rule["method"] and "decision rule" in out["threshold_source"]
    probs = np.asarray([[r[f"prob_{c}"] for c in out["classes"]] for r in out["predictions"]])
    expected = [out["classes"][k] for k in apply_decision_rule(probs, rule)]
    assert [r["predicted"] for r in out["predictions"]] == expected


def test_cross_validation_chooses_the_rule_on_out_of_fold_predictions(tmp_path):
    from medmonai.apps.crossval import summary_text
    from medmonai.engines.crossval import aggregate_crossval, fold_dir, write_fold_predictions
    from medmonai.utils import atomic_write_json

    y_pool, p_pool = _weighted_model(600, seed=1)  # the pooled cases (their class mix gives the priors)
    y_test, p_test = _weighted_model(600, seed=2)
    ids = [f"img_{i:03d}.png" for i in range(len(y_pool))]
    folds = []
    for k in range(3):
        val = [i for i in range(len(ids)) if i % 3 == k]
        folds.append({"train": [ids[i] for i in range(len(ids)) if i % 3 != k], "val": [ids[i] for i in val]})
        write_fold_predictions(
            fold_dir(tmp_path, k), [ids[i] for i in val], y_pool[val], p_pool[val],
            [f"case_{i:05d}" for i in range(len(y_test))], y_test, p_test,
        )  # fmt: skip
    atomic_write_json(tmp_path / "splits.json", {"scheme": "kfold", "case_ids": ids, "folds": folds})
    classes = [f"grade{k}" for k in range(5)]
    report = aggregate_crossval(tmp_path, classes, n_boot=20, class_weights="balanced", ordinal=True)
    assert "kappa_quadratic" in report["oof"]["metrics"] and "kappa_quadratic" in report["ensemble"]["metrics"]
    rule = report["decision_rule"]
    assert rule["chosen_on"] == "out-of-fold predictions" and rule["method"] == "prior_shift"
    assert rule["training_prior"] == pytest.approx([0.2] * 5)  # balanced weights
    assert report["threshold"] is None
    ensemble = json.loads((tmp_path / "ensemble" / "report.json").read_text())
    assert ensemble["decision_rule"]["alpha"] == rule["alpha"]  # applied unchanged to the test split
    assert ensemble["accuracy_below_majority_rate"] is False
    assert report["ensemble"]["majority_class"]["rate"] == pytest.approx(np.mean(y_test == 0))
    assert "WARNING" not in summary_text(report)
    flagged = {**report, "ensemble": {**report["ensemble"], "warnings": ["accuracy 0.280 is below the majority"]}}
    assert "WARNING (ensemble): accuracy 0.280 is below the majority" in summary_text(flagged)
