"""The evaluation report: CSV, PNGs and JSON written and consistent."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from medmonai.metrics import report as report_module
from medmonai.metrics.clinical import BINARY_SCALARS, classification_metrics
from medmonai.metrics.report import (
    REPORT_FILES,
    print_summary,
    save_confusion_matrix_png,
    split_caption,
    summary_line,
    write_classification_report,
)
from medmonai.metrics.segmentation import segmentation_report
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


def _capture_titles(monkeypatch):
    titles = {}
    for name, key in (("save_roc_png", "roc"), ("save_confusion_matrix_png", "cm")):
        real = getattr(report_module, name)

        def wrapper(*args, _real=real, _key=key, **kwargs):
            titles[_key] = kwargs.get("title")
            return _real(*args, **kwargs)

        monkeypatch.setattr(report_module, name, wrapper)
    return titles


def test_figure_titles_name_the_split_and_case_count(tmp_path, monkeypatch):
    titles = _capture_titles(monkeypatch)
    y, p = _data(40)
    rep = write_classification_report(tmp_path / "t", y, p, classes=["benign", "malignant"], threshold=0.5, n_boot=0)
    n_pos = int(np.sum(y == 1))
    assert rep["split"] == "test"
    assert titles["roc"].startswith(f"ROC — test split, n=40 ({n_pos} positive 'malignant')")
    assert "threshold 0.5" in titles["roc"]
    assert titles["cm"].startswith(f"confusion matrix — test split, n=40 ({n_pos} positive 'malignant')")
    rep = write_classification_report(tmp_path / "v", y, p, n_boot=0, split="validation")
    assert rep["split"] == "validation" and titles["roc"].startswith("ROC — validation split, n=40")
    # derived from what the callers pass: extra['split'], the cross-validation 'what'
    rep = write_classification_report(tmp_path / "e", y, p, n_boot=0, extra={"split": "external"})
    assert rep["split"] == "external" and "external split, n=40" in titles["roc"]
    rep = write_classification_report(tmp_path / "o", y, p, n_boot=0, extra={"what": "out-of-fold predictions"})
    assert rep["split"] == "cv (out-of-fold)" and titles["roc"].startswith("ROC — cv (out-of-fold), n=40")
    _assert_png(tmp_path / "o" / "roc.png")
    y3 = np.repeat([0, 1, 2], 5)
    write_classification_report(tmp_path / "m", y3, np.full((15, 3), 1 / 3), classes=["a", "b", "c"], n_boot=0)
    assert titles["roc"] == "ROC — test split, n=15 (5 a, 5 b, 5 c)"
    assert split_caption("test", np.arange(6), [str(i) for i in range(6)], None) == "test split, n=6, 6 classes"


def test_summary_line_classification(tmp_path, capsys):
    y, p = _data(60)
    rep = write_classification_report(tmp_path, y, p, classes=["normal", "pneumonia"], threshold=0.5, n_boot=50)
    line = summary_line(rep)
    m = rep["metrics"]
    auc = f"AUC {m['auc']['value']:.2f} [{m['auc']['ci_low']:.2f}, {m['auc']['ci_high']:.2f}]"
    assert line.startswith(f"test n=60: {auc}, sensitivity ")
    assert "specificity" in line and "accuracy" in line and "(threshold 0.5, given)" in line
    assert "report in" not in line and "\n" not in line
    printed = print_summary(tmp_path)  # the folder: reads report.json
    assert printed == print_summary(tmp_path / "report.json") == f"{line}; report in {tmp_path / 'report.json'}"
    assert capsys.readouterr().out.splitlines() == [printed, printed]
    assert print_summary(rep) == line
    no_ci = write_classification_report(tmp_path / "b", y, p, n_boot=0, split="validation")
    assert summary_line(no_ci).startswith(f"validation n=60: AUC {no_ci['metrics']['auc']['value']:.2f}, sens")
    single = write_classification_report(tmp_path / "s", [0, 0, 0, 1], [0.6, 0.7, 0.1, 0.9], n_boot=0)
    assert "WARNING: accuracy below the majority-class rate 0.75" in summary_line(single)
    y3 = np.repeat([0, 1, 2], 5)
    multi = write_classification_report(tmp_path / "m", y3, np.eye(3)[y3] * 0.8 + 0.2 / 3, n_boot=0)
    assert summary_line(multi) == ("test n=15: AUC 1.00, balanced accuracy 1.00, macro F1 1.00, accuracy 1.00")
    with pytest.raises(ValueError, match="not a classification or segmentation report"):
        summary_line({"n": 3})


def test_summary_line_segmentation(tmp_path, capsys):
    cases = [
        {"case_id": "a", "dice": {"anterior": 0.8, "posterior": 0.9}, "hd95": {"anterior": 1.0, "posterior": 2.0}},
        {"case_id": "b", "dice": {"anterior": 0.9, "posterior": None}, "hd95": {"anterior": 3.0, "posterior": None}},
    ]
    rep = segmentation_report(cases, ["background", "anterior", "posterior"], extra={"split": "test"})
    line = summary_line(rep)
    assert line.startswith("test n=2: Dice anterior 0.85 ± 0.05, posterior 0.90 ± 0.00, mean ")
    assert "; HD95 mean " in line and line.endswith(" mm")
    (tmp_path / "report.json").write_text(json.dumps(rep))
    assert print_summary(tmp_path) == f"{line}; report in {tmp_path / 'report.json'}"
    assert capsys.readouterr().out.strip() == f"{line}; report in {tmp_path / 'report.json'}"
    oof = segmentation_report(cases, ["background", "anterior", "posterior"], extra={"n_folds": 5})
    assert summary_line(oof).startswith("cv (out-of-fold) n=2: Dice anterior 0.85")
    fold = segmentation_report(cases, ["background", "anterior", "posterior"], extra={"fold": 2, "scheme": "kfold"})
    assert summary_line(fold).startswith("fold 2 validation n=2: Dice anterior 0.85")
    old = dict(write_classification_report(tmp_path / "c", [0, 1], [0.2, 0.9], n_boot=0))
    del old["split"]  # a report written before the split was recorded
    assert summary_line(old).startswith("test n=2: AUC 1.00")
    old["extra"] = {"what": "out-of-fold predictions"}
    assert summary_line(old).startswith("cv (out-of-fold) n=2: ")
