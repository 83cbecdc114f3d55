"""Paired comparison of two runs: DeLong, paired bootstrap, McNemar, loading runs, compare_runs and the CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from sklearn.metrics import roc_auc_score

from medmonai.cli.main import main
from medmonai.metrics.compare import (
    compare_runs,
    delong_test,
    load_run_predictions,
    mcnemar_test,
    paired_bootstrap_auc,
    write_comparison,
)
from medmonai.metrics.report import predictions_csv_text, write_classification_report
from medmonai.utils import atomic_write_text


# ------------------------------------------------------------------------------------------------- helpers
def _slow_delong(y, a, b):
    """DeLong 1988 written out directly: psi kernel, placement values V10/V01, their covariances (O(m n))."""
    y = np.asarray(y).astype(bool)
    comps = []
    for s in (np.asarray(a, float), np.asarray(b, float)):
        x, z = s[y], s[~y]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])  # (m, n)
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))  # AUC, V10 (m,), V01 (n,)
    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = comps
    m, n = v10_a.size, v01_a.size
    s10 = np.cov(np.vstack([v10_a, v10_b]), ddof=1)
    s01 = np.cov(np.vstack([v01_a, v01_b]), ddof=1)
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return auc_a, auc_b, var


def _binary_pair(n=150, seed=0, strong=0.5, weak=0.15):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    noise = rng.random(n)
    a = np.clip(strong * y + (1 - strong) * (0.6 * noise + 0.4 * rng.random(n)), 0, 1).round(2)  # ties
    b = np.clip(weak * y + (1 - weak) * (0.6 * noise + 0.4 * rng.random(n)), 0, 1).round(2)  # correlated with a
    return y, a, b


def _multiclass_pair(n=120, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    pa = rng.dirichlet(np.ones(c), n)
    pa[np.arange(n), y] += 0.6
    pb = rng.dirichlet(np.ones(c), n)
    pb[np.arange(n), y] += 0.2
    return y, pa / pa.sum(1, keepdims=True), pb / pb.sum(1, keepdims=True)


# ------------------------------------------------------------------------------------------------- DeLong
def test_delong_hand_computed_example():
    # positives: A = 0.9, 0.7, 0.4   B = 0.8, 0.5, 0.3
    # negatives: A = 0.6, 0.2        B = 0.5, 0.3      (B has ties across the classes)
    # V10_A = [1, 1, 1/2], V10_B = [1, 3/4, 1/4]  -> AUC_A = 5/6, AUC_B = 2/3, difference 1/6
    # V01_A = [2/3, 1],    V01_B = [1/2, 5/6]
    # V10_A - V10_B = [0, 1/4, 1/4]: sample variance 1/48, / m=3 -> 1/144
    # V01_A - V01_B = [1/6, 1/6]: variance 0
    # => var = 1/144, se = 1/12, z = (1/6) / (1/12) = 2, p = 2 (1 - Phi(2)) = 0.0455003
    y = [1, 1, 1, 0, 0]
    a = [0.9, 0.7, 0.4, 0.6, 0.2]
    b = [0.8, 0.5, 0.3, 0.5, 0.3]
    r = delong_test(y, a, b)
    assert r["auc_a"] == pytest.approx(5 / 6)
    assert r["auc_b"] == pytest.approx(2 / 3)
    assert r["difference"] == pytest.approx(1 / 6)
    assert r["se"] == pytest.approx(1 / 12)
    assert r["z"] == pytest.approx(2.0)
    assert r["p_value"] == pytest.approx(0.04550026, abs=1e-7)
    assert r["ci_low"] == pytest.approx(1 / 6 - 1.959964 / 12, abs=1e-6)
    assert r["ci_high"] == pytest.approx(1 / 6 + 1.959964 / 12, abs=1e-6)
    assert (r["n_positive"], r["n_negative"]) == (3, 2)
    # case order does not matter; swapping A and B flips the sign only
    perm = [3, 0, 4, 2, 1]
    r2 = delong_test(np.take(y, perm), np.take(a, perm), np.take(b, perm))
    assert r2["z"] == pytest.approx(2.0) and r2["p_value"] == pytest.approx(r["p_value"])
    r3 = delong_test(y, b, a)
    assert r3["difference"] == pytest.approx(-1 / 6) and r3["z"] == pytest.approx(-2.0)
    assert r3["p_value"] == pytest.approx(r["p_value"])
    assert r3["ci_low"] == pytest.approx(-r["ci_high"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_matches_sklearn_and_slow_structural_components(seed):
    y, a, b = _binary_pair(n=157, seed=seed)
    r = delong_test(y, a, b)
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert r["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    auc_a, auc_b, var = _slow_delong(y, a, b)
    assert r["auc_a"] == pytest.approx(auc_a, abs=1e-12)
    assert r["se"] ** 2 == pytest.approx(var, rel=1e-10)
    z = (auc_a - auc_b) / math.sqrt(var)
    assert r["z"] == pytest.approx(z, rel=1e-9)
    assert r["p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)  # 2 (1 - Phi(|z|))
    assert r["ci_high"] - r["ci_low"] == pytest.approx(2 * norm.ppf(0.975) * math.sqrt(var))


def test_delong_single_auc_variance_against_a_constant_model():
    # a constant score has AUC 1/2 and constant placements (1/2), so the variance of the difference is the
    # DeLong variance of model A's AUC alone: var(V10)/m + var(V01)/n
    y, a, _ = _binary_pair(n=90, seed=5)
    r = delong_test(y, a, np.full(y.size, 0.3))
    assert r["auc_b"] == 0.5
    x, z = a[y == 1], a[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    var = psi.mean(1).var(ddof=1) / x.size + psi.mean(0).var(ddof=1) / z.size
    assert r["se"] == pytest.approx(math.sqrt(var), rel=1e-10)


def test_delong_identical_runs_and_clear_winner():
    y, a, b = _binary_pair(n=200, seed=3)
    same = delong_test(y, a, a)
    assert same["difference"] == 0.0 and same["se"] == 0.0
    assert same["z"] == 0.0 and same["p_value"] == 1.0
    assert same["ci_low"] == 0.0 and same["ci_high"] == 0.0
    better = delong_test(y, a, b)
    assert better["difference"] > 0.15
    assert better["p_value"] < 1e-4
    assert better["ci_low"] > 0


def test_delong_zero_variance_with_a_difference():
    # A separates perfectly (placements all 1), B is constant (placements all 1/2): the variance estimate is 0
    y = np.array([1, 1, 1, 0, 0, 0])
    r = delong_test(y, [0.9, 0.8, 0.7, 0.3, 0.2, 0.1], np.full(6, 0.5))
    assert (r["auc_a"], r["auc_b"], r["se"]) == (1.0, 0.5, 0.0)
    assert r["z"] is None and r["p_value"] is None and "variance" in r["note"]


def test_delong_errors():
    with pytest.raises(ValueError, match="only class 1"):
        delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="only class 0"):
        delong_test([0, 0, 0], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="at least 2 positive"):
        delong_test([1, 0, 0], [0.9, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="outside 0..1"):
        delong_test([0, 1, 2, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="scores_b must have shape"):
        delong_test([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3])


# ------------------------------------------------------------------------------------------------- bootstrap
def test_paired_bootstrap_binary_ci_p_and_determinism():
    y, a, b = _binary_pair(n=150, seed=1, strong=0.35, weak=0.25)
    r = paired_bootstrap_auc(y, a, b, n_boot=1000, seed=7)
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, a))
    assert r["auc_b"] == pytest.approx(roc_auc_score(y, b))
    assert r["difference"] == pytest.approx(r["auc_a"] - r["auc_b"])
    assert r["ci_low"] < r["difference"] < r["ci_high"]
    assert r["n_boot"] == r["n_boot_valid"] == 1000
    assert 2 / 1001 <= r["p_value"] <= 1.0
    again = paired_bootstrap_auc(y, a, b, n_boot=1000, seed=7)
    assert again == r
    other = paired_bootstrap_auc(y, a, b, n_boot=1000, seed=8)
    assert other["ci_low"] != r["ci_low"]
    # the bootstrap interval and DeLong's normal interval estimate the same quantity
    d = delong_test(y, a, b)
    half_width = (r["ci_high"] - r["ci_low"]) / 2
    assert half_width == pytest.approx(d["ci_high"] - d["difference"], rel=0.25)
    # (N, 2) probability matrices give the same result as the positive-class column
    two_col = paired_bootstrap_auc(y, np.stack([1 - a, a], 1), np.stack([1 - b, b], 1), n_boot=1000, seed=7)
    assert two_col["difference"] == r["difference"] and two_col["ci_low"] == r["ci_low"]


def test_paired_bootstrap_p_value_formula():
    y, a, b = _binary_pair(n=200, seed=2, strong=0.6, weak=0.0)
    r = paired_bootstrap_auc(y, a, b, n_boot=500, seed=0)
    assert r["ci_low"] > 0  # no resample crosses 0 ...
    assert r["p_value"] == pytest.approx(2 * (1 + 0) / (500 + 1))  # ... so p is the smallest possible value
    rev = paired_bootstrap_auc(y, b, a, n_boot=500, seed=0)
    assert rev["difference"] == pytest.approx(-r["difference"]) and rev["p_value"] == r["p_value"]
    assert rev["ci_high"] == pytest.approx(-r["ci_low"])
    same = paired_bootstrap_auc(y, a, a, n_boot=200, seed=0)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    assert same["ci_low"] == 0.0 and same["ci_high"] == 0.0


def test_paired_bootstrap_multiclass_macro_auc():
    y, pa, pb = _multiclass_pair()
    r = paired_bootstrap_auc(y, pa, pb, n_boot=400, seed=0)
    macro_a = np.mean([roc_auc_score(y == k, pa[:, k]) for k in range(3)])
    macro_b = np.mean([roc_auc_score(y == k, pb[:, k]) for k in range(3)])
    assert r["auc_a"] == pytest.approx(macro_a) and r["auc_b"] == pytest.approx(macro_b)
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, pa, multi_class="ovr", average="macro"))
    assert r["metric"] == "macro one-vs-rest auc"
    assert r["ci_low"] < r["difference"] < r["ci_high"]
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] have no case"):
        paired_bootstrap_auc(np.where(y == 2, 0, y), pa, pb, n_boot=10)
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap_auc(y, pa, pb, n_boot=0)


# ------------------------------------------------------------------------------------------------- McNemar
def _pairs(n11, b, c, n00):
    ca = np.array([1] * n11 + [1] * b + [0] * c + [0] * n00, dtype=bool)
    cb = np.array([1] * n11 + [0] * b + [1] * c + [0] * n00, dtype=bool)
    return ca, cb


def test_mcnemar_exact():
    ca, cb = _pairs(20, 7, 2, 5)
    r = mcnemar_test(ca, cb)
    assert (r["b"], r["c"], r["n_both_correct"], r["n_both_wrong"], r["n"]) == (7, 2, 20, 5, 34)
    assert r["method"] == "exact binomial" and r["statistic"] is None
    # two-sided exact: 2 P(X >= 7), X ~ Bin(9, 1/2) = 2 (36 + 9 + 1) / 512
    assert r["p_value"] == pytest.approx(92 / 512)
    assert r["p_value"] == pytest.approx(binomtest(7, 9, 0.5).pvalue)
    assert r["accuracy_a"] == pytest.approx(27 / 34) and r["accuracy_b"] == pytest.approx(22 / 34)
    assert r["difference"] == pytest.approx(5 / 34)
    flipped = mcnemar_test(cb, ca)
    assert (flipped["b"], flipped["c"]) == (2, 7) and flipped["p_value"] == pytest.approx(r["p_value"])
    # 24 discordant pairs is still exact
    assert mcnemar_test(*_pairs(3, 16, 8, 1))["method"] == "exact binomial"


def test_mcnemar_chi_square_and_degenerate():
    ca, cb = _pairs(50, 30, 10, 10)
    r = mcnemar_test(ca.astype(int), cb.astype(int))
    assert r["method"] == "chi-square with continuity correction"
    assert r["statistic"] == pytest.approx((20 - 1) ** 2 / 40)
    assert r["p_value"] == pytest.approx(math.erfc(math.sqrt(r["statistic"] / 2)))  # chi2(1) survival
    assert mcnemar_test(*_pairs(0, 13, 12, 0))["method"].startswith("chi-square")  # b + c = 25
    none = mcnemar_test(*_pairs(10, 0, 0, 3))
    assert (none["b"], none["c"], none["p_value"], none["difference"]) == (0, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="booleans"):
        mcnemar_test([0, 2], [1, 1])
    with pytest.raises(ValueError, match="correct_a has 2 cases but correct_b has 3"):
        mcnemar_test([0, 1], [1, 1, 0])


# ------------------------------------------------------------------------------------------------- runs on disk
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Binary runs A (good) and B (weak) on the same 80 cases, B written in shuffled case order."""
    root = tmp_path_factory.mktemp("runs")
    y, a, b = _binary_pair(n=80, seed=4)
    ids = [f"case-{i:03d}" for i in range(80)]
    write_classification_report(root / "a" / "eval", y, a, case_ids=ids, classes=["benign", "malignant"], n_boot=0)
    perm = np.random.default_rng(0).permutation(80)
    write_classification_report(
        root / "b" / "runs" / "eval",
        y[perm],
        b[perm],
        case_ids=[ids[i] for i in perm],
        classes=["benign", "malignant"],
        threshold=0.4,
        n_boot=0,
    )
    return {"root": root, "y": y, "a": a, "b": b, "ids": ids}


def _write_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def test_load_run_predictions_search_order_and_content(runs, tmp_path):
    root = runs["root"]
    r = load_run_predictions(root / "a")
    assert r["file"] == str(root / "a" / "eval" / "predictions.csv")
    assert r["classes"] == ["benign", "malignant"]
    assert r["case_ids"] == runs["ids"]
    np.testing.assert_array_equal(r["true_index"], runs["y"])
    np.testing.assert_allclose(r["prob"][:, 1], runs["a"], rtol=0, atol=0)  # full precision round trip
    np.testing.assert_array_equal(r["pred_index"], (runs["a"] >= 0.5).astype(int))
    np.testing.assert_array_equal(r["correct"], r["pred_index"] == runs["y"])
    assert load_run_predictions(root / "b")["file"] == str(root / "b" / "runs" / "eval" / "predictions.csv")
    assert load_run_predictions(root / "a" / "eval")["file"] == r["file"]
    assert load_run_predictions(root / "a" / "eval" / "predictions.csv")["file"] == r["file"]

    # eval/ wins over ensemble/
    text = (root / "a" / "eval" / "predictions.csv").read_text()
    for sub in ("ensemble", "eval"):
        (tmp_path / "both" / sub).mkdir(parents=True)
        (tmp_path / "both" / sub / "predictions.csv").write_text(text)
    assert load_run_predictions(tmp_path / "both")["file"].endswith("eval/predictions.csv")
    (tmp_path / "ens" / "ensemble").mkdir(parents=True)
    (tmp_path / "ens" / "ensemble" / "predictions.csv").write_text(text)
    assert load_run_predictions(tmp_path / "ens")["file"].endswith("ensemble/predictions.csv")


def test_load_run_predictions_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no predictions.csv found.*runs/eval/predictions.csv"):
        load_run_predictions(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such run"):
        load_run_predictions(tmp_path / "missing")
    head = ["case_id", "true_index", "true_label", "prob_a", "prob_b", "pred_index", "pred_label", "correct"]
    bad = {
        "nocol.csv": ([["case_id", "true_index", "prob_a", "prob_b"], ["x", "0", "0.9", "0.1"]], "pred_index"),
        "onlyheader.csv": ([head], "no prediction rows"),
        "text.csv": ([head, ["x", "0", "a", "oops", "0.1", "0", "a", "1"]], "line 2: non-numeric"),
        "range.csv": ([head, ["x", "5", "a", "0.9", "0.1", "0", "a", "0"]], "line 2: true_index 5"),
        "short.csv": ([head, ["x", "0", "a", "0.9"]], "line 2: 4 fields"),
        "dup.csv": ([head] + [["x", "0", "a", "0.9", "0.1", "0", "a", "1"]] * 2, "duplicate case_id"),
        "label.csv": ([head, ["x", "0", "b", "0.9", "0.1", "0", "a", "1"]], "true_label 'b'"),
        "correct.csv": ([head, ["x", "0", "a", "0.9", "0.1", "0", "a", "0"]], "contradicts"),
    }
    for name, (rows, msg) in bad.items():
        path = _write_csv(tmp_path / name, rows)
        with pytest.raises(ValueError, match=msg) as info:
            load_run_predictions(path)
        assert str(path) in str(info.value)


def test_compare_runs_binary(runs, tmp_path):
    root = runs["root"]
    res = compare_runs(root / "a", root / "b", n_boot=500, seed=1)
    y, a, b = runs["y"], runs["a"], runs["b"]
    assert res["task"] == "binary" and res["n"] == 80 and res["positive_class_name"] == "malignant"
    assert res["run_b"]["predictions"] == str(root / "b" / "runs" / "eval" / "predictions.csv")
    # cases were matched by id although B's file is shuffled
    d = delong_test(y, a, b)
    assert res["delong"]["applicable"] is True
    assert res["delong"]["p_value"] == pytest.approx(d["p_value"]) and res["delong"]["z"] == pytest.approx(d["z"])
    assert res["auc"]["a"] == pytest.approx(roc_auc_score(y, a)) and res["auc"]["b"] == pytest.approx(
        roc_auc_score(y, b)
    )
    assert res["primary_auc_test"] == "DeLong"
    assert res["bootstrap"]["n_boot"] == 500 and res["bootstrap"]["ci_low"] < res["auc"]["difference"]
    # McNemar on each run's own operating point (A: 0.5, B: 0.4)
    m = mcnemar_test((a >= 0.5) == y, (b >= 0.4) == y)
    assert {k: res["mcnemar"][k] for k in ("b", "c", "p_value")} == {k: m[k] for k in ("b", "c", "p_value")}
    assert res["delong"]["p_value"] < 0.05
    assert res["conclusion"].startswith(f"A's AUC is higher by {res['auc']['difference']:.3f}")
    assert "(DeLong): significant difference at alpha 0.05 (A better)" in res["conclusion"]
    assert "McNemar" in res["conclusion"]
    out = write_comparison(tmp_path / "cmp" / "c.json", res)
    assert json.loads(out.read_text()) == res

    same = compare_runs(root / "a", root / "a" / "eval" / "predictions.csv", n_boot=100)
    assert same["auc"]["difference"] == 0.0 and same["delong"]["p_value"] == 1.0
    assert same["bootstrap"]["p_value"] == 1.0 and same["mcnemar"]["p_value"] == 1.0
    assert "The AUCs are equal" in same["conclusion"] and "no significant difference" in same["conclusion"]


def test_compare_runs_multiclass(tmp_path):
    y, pa, pb = _multiclass_pair(n=60)
    write_classification_report(tmp_path / "a", y, pa, classes=["x", "y", "z"], n_boot=0)
    write_classification_report(tmp_path / "b", y, pb, classes=["x", "y", "z"], n_boot=0)
    res = compare_runs(tmp_path / "a", tmp_path / "b", n_boot=300)
    assert res["task"] == "multiclass"
    assert res["delong"]["applicable"] is False and "binary" in res["delong"]["reason"]
    assert res["primary_auc_test"] == "paired bootstrap"
    assert res["auc"]["a"] == pytest.approx(roc_auc_score(y, pa, multi_class="ovr"))
    assert res["bootstrap"]["p_value"] == pytest.approx(2 / 301)
    assert "(paired bootstrap): significant difference" in res["conclusion"]
    assert res["mcnemar"]["accuracy_a"] == pytest.approx(np.mean(pa.argmax(1) == y))


def test_compare_runs_rejects_different_test_sets(runs, tmp_path):
    src = runs["root"] / "a" / "eval" / "predictions.csv"
    rows = list(csv.reader(src.open(newline="")))
    fewer = _write_csv(tmp_path / "fewer" / "predictions.csv", rows[:-5])  # 75 of the 80 cases
    with pytest.raises(
        ValueError,
        match=r"not evaluated on the same test cases: A has 80 cases .* B has 75 .*"
        r"75 in common; 5 only in A",
    ):
        compare_runs(src, fewer)
    relabelled = [rows[0]] + [r[:] for r in rows[1:]]
    for r in relabelled[1:4]:  # flip the true label of 3 cases
        t = 1 - int(r[1])
        r[1], r[2], r[-1] = str(t), ["benign", "malignant"][t], str(int(t == int(r[5])))
    other = _write_csv(tmp_path / "relabelled" / "predictions.csv", relabelled)
    with pytest.raises(ValueError, match=r"true label of 3 of 80 case\(s\) differs"):
        compare_runs(src, other)
    renamed = [[c.replace("benign", "normal") for c in r] for r in rows]  # header and true_label/pred_label
    with pytest.raises(ValueError, match="different classes"):
        compare_runs(src, _write_csv(tmp_path / "renamed.csv", renamed))


def test_compare_runs_without_delong_or_any_auc(tmp_path):
    def write(path, y, p):
        prob = np.stack([1 - p, p], axis=1)
        atomic_write_text(path, predictions_csv_text(list(range(y.size)), y, prob, (p >= 0.5).astype(int), ["n", "p"]))
        return path

    a, b = np.array([0.9, 0.1, 0.2, 0.3, 0.6, 0.4]), np.array([0.5, 0.1, 0.7, 0.3, 0.6, 0.4])
    one_pos = np.array([1, 0, 0, 0, 0, 0])  # a single positive: AUCs defined, DeLong's variance is not
    res = compare_runs(write(tmp_path / "a.csv", one_pos, a), write(tmp_path / "b.csv", one_pos, b), n_boot=200)
    assert res["delong"]["applicable"] is False and "at least 2 positive" in res["delong"]["reason"]
    assert res["primary_auc_test"] == "paired bootstrap"
    assert res["auc"]["a"] == 1.0 and res["auc"]["b"] == pytest.approx(0.6)
    assert "(paired bootstrap)" in res["conclusion"] and any("DeLong not applicable" in n for n in res["notes"])

    negatives = np.zeros(6, dtype=int)  # no positive at all: no AUC, McNemar only
    res = compare_runs(write(tmp_path / "c.csv", negatives, a), write(tmp_path / "d.csv", negatives, b), n_boot=50)
    assert res["primary_auc_test"] is None and res["auc"]["a"] is None
    assert res["bootstrap"]["applicable"] is False and "only class 0" in res["bootstrap"]["reason"]
    assert res["conclusion"].startswith("No AUC test was possible")
    assert (res["mcnemar"]["b"], res["mcnemar"]["c"], res["mcnemar"]["p_value"]) == (1, 0, 1.0)


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_compare(runs, tmp_path, capsys):
    root = runs["root"]
    out = tmp_path / "cmp.json"
    rc = main(["compare", str(root / "a"), str(root / "b"), "--n-boot", "300", "--seed", "2", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["bootstrap"]["n_boot"] == 300 and res["bootstrap"]["seed"] == 2
    assert str(root / "b" / "runs" / "eval" / "predictions.csv") in text
    assert "DeLong" in text and "paired bootstrap (300)" in text and "McNemar" in text
    assert f"b={res['mcnemar']['b']}, c={res['mcnemar']['c']}" in text
    assert f"{res['auc']['a']:.3f}" in text and f"{res['auc']['b']:.3f}" in text
    assert f"{res['delong']['ci_low']:+.3f}..{res['delong']['ci_high']:+.3f}" in text
    assert res["conclusion"] in text

    rc = main(["compare", str(root / "a"), str(tmp_path / "nope")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "medmonai compare: error:" in err and "nope" in err
