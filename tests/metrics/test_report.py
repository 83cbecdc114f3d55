"""The evaluation report: CSV, PNGs and JSON written and consistent."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from medmonai.metrics.clinical import BINARY_SCALARS, classification_metrics
from medmonai.metrics.report import REPORT_FILES, save_confusion_matrix_png, write_classification_report
from medmonai.metrics.threshold import choose_threshold


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _assert_png(path, min_size=100):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size and im.size[1] >= min_size
        im.verify()


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.4 * y + 0.6 * rng.random(n), 0, 1)


def test_binary_report_files(tmp_path):
    y_val, p_val = _data(50, seed=1)
    y, p = _data(60)
    thr = choose_threshold(y_val, p_val, method="youden")
    ids = [f"case-{i:03d}" for i in range(60)]
    rep = write_classification_report(
        tmp_path / "eval",
        y,
        p,
        case_ids=ids,
        classes=["normal", "pneumonia"],
        threshold=thr,
        n_boot=200,
        extra={"model": "resnet18", "run": 3},
    )
    out = tmp_path / "eval"
    assert sorted(x.name for x in out.iterdir()) == sorted(REPORT_FILES.values())

    rows = _read_csv(out / "predictions.csv")
    assert len(rows) == 60
    assert list(rows[0]) == [
        "case_id",
        "true_index",
        "true_label",
        "prob_normal",
        "prob_pneumonia",
        "pred_index",
        "pred_label",
        "correct",
    ]
    assert [r["case_id"] for r in rows] == ids
    for r, yt, pt in zip(rows, y, p):
        assert int(r["true_index"]) == yt and r["true_label"] == ["normal", "pneumonia"][yt]
        assert float(r["prob_pneumonia"]) == pt  # full precision
        assert int(r["pred_index"]) == int(pt >= thr["threshold"])
        assert r["correct"] == str(int(int(r["pred_index"]) == yt))

    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == rep
    for key in ("task", "classes", "n", "n_per_class", "threshold", "metrics", "confusion_matrix", "notes", "extra"):
        assert key in rep, key
    assert rep["task"] == "binary" and rep["classes"] == ["normal", "pneumonia"]
    assert rep["n"] == 60 and sum(rep["n_per_class"].values()) == 60
    assert rep["threshold"]["threshold"] == thr["threshold"] and rep["threshold"]["method"] == "youden"
    assert rep["extra"] == {"model": "resnet18", "run": 3}
    assert set(rep["metrics"]) == set(BINARY_SCALARS)
    point = classification_metrics(y, p, threshold=thr)
    for name in BINARY_SCALARS:
        e = rep["metrics"][name]
        assert e["value"] == pytest.approx(point[name])
        assert e["ci_low"] <= e["value"] <= e["ci_high"]
    assert rep["confusion_matrix"]["counts"] == point["confusion_matrix"]
    assert rep["counts"] == {k: point[k] for k in ("tp", "fp", "tn", "fn")}
    row_norm = np.array(rep["confusion_matrix"]["row_normalised"])
    np.testing.assert_allclose(row_norm.sum(axis=1), 1.0)
    assert sum(int(r["correct"]) for r in rows) == round(point["accuracy"] * 60)
    _assert_png(out / "roc.png")
    _assert_png(out / "confusion_matrix.png")


def test_multiclass_report(tmp_path):
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1, 2], 15)
    p = rng.dirichlet(np.ones(3), 45)
    p[np.arange(45), y] += 0.5
    p /= p.sum(1, keepdims=True)
    rep = write_classification_report(tmp_path, y, p, classes=["a", "b", "c"], n_boot=100)
    assert rep["task"] == "multiclass" and rep["threshold"] == {"threshold": None, "method": "argmax"}
    assert {"auc", "f1_macro", "auc/a", "ppv/c"} <= set(rep["metrics"])
    assert set(rep["per_class"]) == {"a", "b", "c"}
    rows = _read_csv(tmp_path / "predictions.csv")
    assert len(rows) == 45 and [r["case_id"] for r in rows[:3]] == ["0", "1", "2"]
    assert all(int(r["pred_index"]) == int(np.argmax(pi)) for r, pi in zip(rows, p))
    _assert_png(tmp_path / "roc.png")
    _assert_png(tmp_path / "confusion_matrix.png")


def test_single_class_report_does_not_crash(tmp_path):
    rep = write_classification_report(tmp_path, [0, 0, 0, 0], [0.1, 0.6, 0.2, 0.3], n_boot=50)
    assert rep["metrics"]["auc"]["value"] is None
    assert any(n.startswith("auc undefined") for n in rep["notes"])
    assert any("not chosen on validation data" in n for n in rep["notes"])
    assert rep["confusion_matrix"]["row_normalised"][1] == [None, None]
    _assert_png(tmp_path / "roc.png")
    _assert_png(tmp_path / "confusion_matrix.png")


def test_bad_case_ids_or_extra_write_nothing(tmp_path):
    y, p = _data(10)
    with pytest.raises(ValueError, match="3 case_ids given for 10 cases"):
        write_classification_report(tmp_path / "a", y, p, case_ids=["x", "y", "z"], n_boot=0)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        write_classification_report(tmp_path / "b", y, p, n_boot=0, extra={"model": object()})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_confusion_png_many_classes(tmp_path):
    cm = np.arange(36).reshape(6, 6)
    path = save_confusion_matrix_png(tmp_path / "cm.png", cm, [f"class{i}" for i in range(6)])
    _assert_png(path)


def test_report_states_the_majority_rate_and_warns_below_it(tmp_path):
    y = [0] * 8 + [1, 2]
    always_wrong_on_majority = np.tile([0.2, 0.4, 0.4], (10, 1))
    rep = write_classification_report(tmp_path / "bad", y, always_wrong_on_majority, n_boot=0)
    assert rep["majority_class"] == {"index": 0, "name": "0", "rate": 0.8, "source": "labels of the evaluated cases"}
    assert rep["accuracy_below_majority_rate"] is True and "below the majority-class rate 0.800" in rep["warnings"][0]
    assert any("plain argmax" in n for n in rep["notes"])
    good = np.tile([0.8, 0.1, 0.1], (10, 1))
    rep = write_classification_report(tmp_path / "good", y, good, n_boot=0)
    assert rep["accuracy_below_majority_rate"] is False and rep["warnings"] == []
    binary = write_classification_report(tmp_path / "bin", [0, 0, 0, 1], [0.6, 0.7, 0.1, 0.9], n_boot=0)
    assert binary["majority_class"]["rate"] == 0.75 and binary["accuracy_below_majority_rate"] is True
    assert "not for accuracy" in binary["warnings"][0]
