"""``medmonai train`` (medmonai.apps.auto): input checks, the budget rule, successive halving, the final model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medmonai.apps.auto import MIN_EPOCHS, AutoTrainError, check_inputs, plan_auto, train_auto
from medmonai.bundles import bundles_dir, run_bundle
from medmonai.cli.main import main
from medmonai.data.datalist import SPLIT_KEYS, load_datalist, load_datalist_file, write_datalist
from medmonai.data.defaults import resolve_datalist
from medmonai.data.dicom_output import read_classification_sr
from medmonai.data.splits import case_id
from medmonai.deploy.models import load_clinical_model
from medmonai.deploy.pipeline import infer_dicom
from medmonai.engines.crossval import fold_dir, load_fold_predictions
from medmonai.utils import read_json

BUNDLE = bundles_dir() / "classification"


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """2D phantoms as DICOM (the hospital path): 24 subjects with 1-2 images each, a test split."""
    root = tmp_path_factory.mktemp("auto_phantoms")
    default = resolve_datalist("", str(root / "data"), 2, n_subjects=24, images_per_subject=[1, 2], test_fraction=0.25)
    return str(Path(default).with_name("datalist_dicom.json"))


def _variant(phantoms, tmp_path, edit):
    raw = load_datalist_file(phantoms)
    full = {k: load_datalist(phantoms, k) if k in SPLIT_KEYS and isinstance(v, list) else v for k, v in raw.items()}
    edit(full)
    return write_datalist(tmp_path / "datalist.json", full)


def test_bad_input_is_refused_before_training(phantoms, tmp_path):
    no_training = _variant(phantoms, tmp_path, lambda d: d.pop("training"))
    with pytest.raises(AutoTrainError, match="no 'training' split"):
        check_inputs(no_training)
    with pytest.raises(AutoTrainError, match="must be positive"):
        check_inputs(phantoms, budget_min=0)
    with pytest.raises(AutoTrainError, match=r"fewer subjects than the 20 folds.*--folds"):
        check_inputs(phantoms, n_folds=20)
    info = check_inputs(phantoms, n_folds=3)
    assert info["n_pool"] == len(load_datalist(phantoms, "training")) and sum(info["class_counts"]) == info["n_pool"]


def test_cli_train_bad_input_exits_2_naming_the_problem(phantoms, tmp_path, capsys):
    no_training = _variant(phantoms, tmp_path, lambda d: d.pop("training"))
    assert main(["train", str(no_training), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no 'training' split" in err and str(no_training) in err
    assert not (tmp_path / "out" / "plan.json").exists()  # nothing planned or trained


def test_budget_too_small_names_the_budget_that_works(phantoms, tmp_path):
    with pytest.raises(AutoTrainError, match=r"too small.*--budget-min \d+"):
        plan_auto(phantoms, tmp_path / "plan", budget_min=1e-4, n_folds=3, candidates=["small_cnn"])
    with pytest.raises(AutoTrainError, match="too small"):
        train_auto(phantoms, tmp_path / "out", budget_min=1e-4, n_folds=3, candidates=["small_cnn"])
    assert not (tmp_path / "out").exists()  # no half-made run folder


@pytest.fixture(scope="module")
def auto_run(phantoms, tmp_path_factory):
    out = tmp_path_factory.mktemp("auto") / "run"
    report = train_auto(phantoms, out, budget_min=3, n_folds=3, seed=0, candidates=["small_cnn", "resnet18"], n_boot=50)
    return out, report


@pytest.mark.slow  # trains the module's auto run (about a minute): not in make test-quick
def test_plan_states_reasons_and_the_fold_cap(auto_run):
    out, _ = auto_run
    plan = read_json(out / "plan.json")
    assert [r["name"] for r in plan["candidates"]] == ["small_cnn", "resnet18"]
    for row in plan["candidates"]:
        assert row["included"] and row["reason"] and row["cost"]["epoch_s"] > 0
    cap = plan["fold_minutes"]["value"]
    assert 0 < cap < 3 and "fold runs" in plan["fold_minutes"]["reason"]
    assert plan["tta_flip_axes"]["value"] == [0] and plan["tta_flip_axes"]["reason"]
    # each fold ran the bundle with the per-fold time cap
    for name in ("small_cnn", "resnet18"):
        settings = read_json(out / "candidates" / name / "runs" / "cv" / "cv_settings.json")
        assert settings["time_budget_min"] == cap and settings["tta_flip_axes"] == [0]
        assert all(row["cost"]["epoch_s"] * MIN_EPOCHS <= cap * 60 for row in plan["candidates"])


@pytest.mark.slow  # trains the module's auto run (about a minute): not in make test-quick
def test_selection_uses_out_of_fold_predictions_only(phantoms, auto_run):
    out, report = auto_run
    assert set(report["rung0_fold0_oof_auc"]) == {"small_cnn", "resnet18"}
    assert report["survivors"] and set(report["selected"]) <= set(report["survivors"])
    test_ids = {case_id(e) for e in load_datalist(phantoms, "test")}
    for name in report["survivors"]:
        cv_dir = out / "candidates" / name / "runs" / "cv"
        splits = read_json(cv_dir / "splits.json")
        assert not test_ids & set(splits["case_ids"])  # the test split is in no fold
        for k in range(3):
            assert set(load_fold_predictions(fold_dir(cv_dir, k) / "fold_predictions.npz")["val_ids"]) <= set(
                splits["case_ids"]
            )
    cv_report = read_json(out / "final" / "cv_report.json")
    assert cv_report["threshold"]["method"] == "youden"  # chosen on the out-of-fold predictions
    assert cv_report["ensemble"]["n"] == len(test_ids)
    assert report["calibration"]["reason"] and report["calibration"]["temperature"] > 0
    for f in ("roc.png", "confusion_matrix.png", "report.json"):
        assert (out / "final" / "ensemble" / f).is_file()


@pytest.mark.slow  # trains the module's auto run (about a minute): not in make test-quick
def test_final_model_loads_for_inference_and_reproduces_the_report(phantoms, auto_run):
    out, report = auto_run
    model = load_clinical_model(BUNDLE, bundle_root=out, model=out / "final" / "ensemble" / "model.ts")
    assert model.threshold == pytest.approx(report["threshold"]["threshold"])
    assert "out-of-fold" in model.threshold_source
    assert model.domain is not None  # the training-domain record travels with the final model
    test = load_datalist(phantoms, "test")
    x = torch.stack([torch.as_tensor(model.preprocessing({"image": e["image"]})["image"]) for e in test]).float()
    with torch.no_grad():
        probs = torch.softmax(model.network(x), dim=1).numpy()
    with open(out / "final" / "ensemble" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = model.classes
    expected = np.array([[float(r[f"prob_{c}"]) for c in names] for r in rows])
    np.testing.assert_allclose(probs, expected, atol=1e-5)  # mirroring and calibration are inside the model file


@pytest.mark.slow  # trains the module's auto run (about a minute): not in make test-quick
def test_medmonai_infer_runs_the_final_model_on_a_dicom_study(phantoms, auto_run, tmp_path):
    out, report = auto_run
    model = load_clinical_model(BUNDLE, bundle_root=out, model=out / "final" / "ensemble" / "model.ts")
    subject = load_datalist(phantoms, "test")[0]["subject"]
    study = Path(phantoms).parent / "dicom" / subject
    result = infer_dicom(model, study, tmp_path / "infer")
    assert result["results"] and all(r["predicted"] in model.classes for r in result["results"])
    sr = read_classification_sr(tmp_path / "infer" / result["results"][0]["outputs"]["sr"])
    assert sr["threshold"] == pytest.approx(report["threshold"]["threshold"])


@pytest.mark.slow  # trains the module's auto run (about a minute): not in make test-quick
def test_rerun_resumes_and_other_arguments_are_refused(phantoms, auto_run):
    out, report = auto_run
    again = train_auto(phantoms, out, budget_min=3, n_folds=3, seed=0, candidates=["small_cnn", "resnet18"], n_boot=50)
    assert again["selected"] == report["selected"] and again["test"]["auc"] == report["test"]["auc"]
    assert again["fold_seconds"] == report["fold_seconds"]  # no fold was trained again
    with pytest.raises(AutoTrainError, match="other arguments"):
        train_auto(phantoms, out, budget_min=5, n_folds=3, seed=0, candidates=["small_cnn", "resnet18"])


@pytest.mark.slow
def test_three_classes_through_the_bundle_config(tmp_path):
    """auto.yaml through monai.bundle run on 3-class phantoms: macro AUC, the 3x3 confusion matrix, a decision rule."""
    data = resolve_datalist(
        "", str(tmp_path / "data"), 2, n_subjects=24, images_per_subject=[1, 2], test_fraction=0.25,
        classes=["grade1", "grade2", "grade3"],
    )  # fmt: skip
    run_bundle(
        [str(BUNDLE / "configs" / "auto.yaml")], bundle_root=str(tmp_path / "root"), datalist=data,
        time_budget_min=2, n_folds=3, candidates=["small_cnn"], n_boot=50,
    )  # fmt: skip
    out = tmp_path / "root" / "runs" / "auto"
    report = read_json(out / "auto_report.json")
    assert report["selected"] == ["small_cnn"]
    test = read_json(out / "final" / "ensemble" / "report.json")
    assert np.asarray(test["confusion_matrix"]["counts"]).shape == (3, 3)
    assert test["metrics"]["auc"]["value"] is not None  # one-vs-rest macro AUC
    assert {f"sensitivity/grade{i}" for i in (1, 2, 3)} <= set(test["metrics"])  # per-class sensitivity
    assert read_json(out / "final" / "cv_report.json")["decision_rule"]["method"]
    assert json.loads((out / "plan.json").read_text())["data"]["classes"] == ["grade1", "grade2", "grade3"]


@pytest.mark.slow
def test_3d_plan_keeps_the_3d_candidates_and_says_why_imagenet_is_out(tmp_path):
    data = resolve_datalist("", str(tmp_path / "data"), 3, n_subjects=12, images_per_subject=1, test_fraction=0.25)
    plan = plan_auto(data, tmp_path / "out", budget_min=30, n_folds=3, spatial_dims=3)
    rows = {r["name"]: r for r in plan["candidates"]}
    assert rows["small_cnn"]["included"] and rows["resnet18"]["included"]
    assert len(rows["small_cnn"]["spatial_size"]) == 3
    for name in ("lite0_frozen", "lite0_finetune"):
        assert not rows[name]["included"] and "2D" in rows[name]["reason"]
    assert plan["portfolio"] == ["small_cnn", "resnet18"]
