"""The classifier evaluation's per-case table carries the training-domain marks (issue 21: out-of-distribution)."""

from __future__ import annotations

import csv

import pytest

from medmonai.data.datalist import load_datalist
from medmonai.data.domain import RECORD_FILE, out_of_distribution_columns
from medmonai.deploy.models import load_clinical_model
from medmonai.engines.evaluation import evaluate_classifier
from tests.deploy._clinical_data import bundle_dir
from tests.reliability._domain_data import case_pixels, other_scale, phantom_datalist, write_study


def test_predictions_csv_marks_each_out_of_distribution_case(cls_root, tmp_path):
    model = load_clinical_model(bundle_dir("classification_2d"), cls_root, device="cpu")
    study, _ = write_study(tmp_path / "other_scale", other_scale(case_pixels(cls_root)))
    png = load_datalist(phantom_datalist(cls_root), "test")
    test = png + [{"image": str(study / "image.dcm"), "label": 1, "case_id": "other_scale"}]
    args = (model.network, model.preprocessing, png, test)
    rep = evaluate_classifier(
        *args, tmp_path / "e", model.classes, device="cpu", n_boot=10, training_domain=cls_root / "runs" / RECORD_FILE,
        allow_out_of_distribution=True,
    )  # fmt: skip
    assert rep["extra"]["input_check"]["n_out_of_distribution"] == 1
    rows = list(csv.DictReader(open(tmp_path / "e" / "predictions.csv")))
    assert [r["case_id"] for r in rows] == [str(e.get("case_id")) for e in test]
    assert [r["out_of_distribution"] for r in rows] == ["false"] * len(png) + ["true"]
    assert "raw intensities" in rows[-1]["out_of_distribution_reasons"] and rows[0]["out_of_distribution_reasons"] == ""
    assert rows[-1]["pred_label"] in model.classes  # still evaluated, the other columns unchanged
    # no record: not checked, the marks are empty (unknown), not "false"
    plain = evaluate_classifier(*args, tmp_path / "u", model.classes, device="cpu", n_boot=10)
    assert plain["extra"]["input_check"]["checked"] is False
    assert {r["out_of_distribution"] for r in csv.DictReader(open(tmp_path / "u" / "predictions.csv"))} == {""}


def test_out_of_distribution_columns_refuse_a_check_over_other_cases():
    check = {"checked": True, "out_of_distribution": [{"index": 1, "reasons": ["r1", "r2"]}]}
    with pytest.raises(ValueError, match="outside the 1 cases"):
        out_of_distribution_columns(check, 1)
    cols = out_of_distribution_columns(check, 2)
    assert list(zip(cols["out_of_distribution"], cols["out_of_distribution_reasons"])) == [
        ("false", ""),
        ("true", "r1; r2"),
    ]
    assert out_of_distribution_columns({"checked": False}, 2)["out_of_distribution"] == ["", ""]
