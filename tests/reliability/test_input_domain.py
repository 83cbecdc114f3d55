"""Attack matrix, issue 21 item 1: inference refuses inputs outside the model's training domain.

The issue's case: a 2D classifier trained on the phantom PNGs (0..255) gave a confident answer on a DICOM copy of a
test case stored in another intensity scale (values about 1,264..5,132). ``medmonai infer``/``watch``, the bundle's
inference config and the evaluation must refuse such an input with a message naming the series and the statistic out
of range; with ``--allow-out-of-distribution`` it is processed and marked; a same-domain input passes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import run
from PIL import Image

from medmonai.cli.main import main
from medmonai.data.datalist import load_datalist
from medmonai.data.dicom_output import read_classification_sr
from medmonai.data.domain import RECORD_FILE, OutOfDistributionError, check_input_domain
from medmonai.deploy.pipeline import infer_dicom, watch_folder
from medmonai.engines.evaluation import evaluate_classifier
from medmonai.engines.inference import predict_to_files
from tests.deploy._clinical_data import CLS_PHANTOM, bundle_dir
from tests.reliability._domain_data import case_pixels, other_scale, phantom_datalist, write_study

CLS = bundle_dir("classification_2d")


@pytest.fixture
def other_scale_study(cls_root, tmp_path):
    return write_study(tmp_path / "other_scale", other_scale(case_pixels(cls_root)))


@pytest.fixture
def same_domain_study(cls_root, tmp_path):
    return write_study(tmp_path / "same_domain", case_pixels(cls_root))


def _infer(root: Path, study: Path, out: Path, *flags: str) -> int:
    return main(
        ["infer", str(CLS), str(study), "--out", str(out), "--bundle-root", str(root), "--device", "cpu", *flags]
    )


def test_training_writes_the_domain_record(cls_root):
    record = json.loads((cls_root / "runs" / RECORD_FILE).read_text())
    assert record["spatial_dims"] == 2 and record["channels"] == [1] and record["preprocessed_channels"] == [1]
    raw = record["raw"][0]
    assert 0 <= raw["p0_5"] < raw["p50"] < raw["p99_5"] <= 255  # the PNGs' 8-bit range
    assert {"p5", "p95", "mean", "std", "per_image"} <= set(raw)
    assert 0 <= record["preprocessed"][0]["p99_5"] <= 1.0  # 0..255 scaled to 0..1
    assert record["tolerances"]["raw_widen"] == 0.5 and record["modality"]["counts"] == {"8bit": record["n_images"]}


def test_infer_refuses_a_dicom_copy_in_another_intensity_scale(cls_root, other_scale_study, tmp_path, capsys):
    study, uid = other_scale_study
    out = tmp_path / "out"
    assert _infer(cls_root, study, out) == 2
    err = capsys.readouterr().err
    assert f"series {uid}" in err and "outside the training domain" in err
    assert "raw intensities" in err and "outside the training range" in err and "p5/p50/p95" in err
    assert "--allow-out-of-distribution" in err
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_infer_with_the_flag_runs_and_marks_the_result_out_of_distribution(cls_root, other_scale_study, tmp_path):
    study, uid = other_scale_study
    out = tmp_path / "out"
    assert _infer(cls_root, study, out, "--allow-out-of-distribution") == 0
    result = json.loads((out / "results.json").read_text())
    (rec,) = result["results"]
    assert rec["SeriesInstanceUID"] == uid and rec["out_of_distribution"] is True
    assert any("raw intensities" in r for r in rec["out_of_distribution_reasons"])
    assert result["input_check"]["checked"] and result["input_check"]["n_out_of_distribution"] == 1
    (row,) = csv.DictReader(open(out / "results.csv"))
    assert row["out_of_distribution"] == "true" and "raw intensities" in row["out_of_distribution_reasons"]
    sr = read_classification_sr(out / rec["outputs"]["sr"])
    assert (
        sr["out_of_distribution"].startswith("OUT OF TRAINING DISTRIBUTION")
        and "raw intensities" in sr["out_of_distribution"]
    )


def test_the_same_domain_dicom_passes(cls_root, same_domain_study, tmp_path):
    study, uid = same_domain_study
    out = tmp_path / "out"
    assert _infer(cls_root, study, out) == 0
    result = json.loads((out / "results.json").read_text())
    (rec,) = result["results"]
    assert rec["out_of_distribution"] is False and rec["out_of_distribution_reasons"] == []
    assert result["input_check"] == {
        "training_domain": str(cls_root / "runs" / RECORD_FILE), "checked": True,
        "allow_out_of_distribution": False, "n_out_of_distribution": 0,
    }  # fmt: skip
    assert read_classification_sr(out / rec["outputs"]["sr"])["out_of_distribution"] is None


def test_the_phantom_test_set_passes(cls_root, cls_model):
    """Same domain, other subjects: every test image passes (and the evaluation checked them)."""
    record = cls_model.domain
    for entry in load_datalist(phantom_datalist(cls_root), "test"):
        assert check_input_domain(record, entry, cls_model.preprocessing) == [], entry["image"]
    report = json.loads((cls_root / "runs" / "eval" / "report.json").read_text())
    assert report["extra"]["input_check"]["checked"] and report["extra"]["input_check"]["n_out_of_distribution"] == 0


def test_watch_fails_the_study_and_processes_it_with_the_flag(cls_model, other_scale_study, tmp_path):
    study, uid = other_scale_study
    inbox, out = tmp_path / "inbox", tmp_path / "watch"
    shutil.copytree(study, inbox / "a")
    summary = watch_folder(cls_model, inbox, out, min_age_s=0, once=True)
    assert len(summary["failed"]) == 1 and not summary["processed"]
    state = json.loads((out / "watch_state.json").read_text())
    (entry,) = state["studies"].values()
    assert entry["status"] == "failed" and uid in entry["error"] and "raw intensities" in entry["error"]
    again = watch_folder(
        cls_model, inbox, out, min_age_s=0, once=True, retry_failed=True, allow_out_of_distribution=True
    )
    assert len(again["processed"]) == 1
    (results,) = list(out.glob("*/results.json"))
    assert json.loads(results.read_text())["results"][0]["out_of_distribution"] is True


def test_a_model_without_a_record_warns_that_inputs_are_not_checked(cls_root, other_scale_study, tmp_path, caplog):
    old = tmp_path / "old_root"  # a run trained before records were written: no training_domain.json
    shutil.copytree(cls_root / "runs", old / "runs", ignore=shutil.ignore_patterns(RECORD_FILE, "tensorboard"))
    study, _ = other_scale_study
    caplog.set_level(logging.WARNING)
    assert _infer(old, study, tmp_path / "out") == 0
    assert "no training-domain record" in caplog.text and "NOT checked" in caplog.text
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["input_check"]["checked"] is False and result["results"][0]["out_of_distribution"] is False


def test_bundle_inference_and_evaluation_refuse_or_mark(cls_root, cls_model, other_scale_study, tmp_path):
    study, uid = other_scale_study
    record = cls_root / "runs" / RECORD_FILE
    args = (cls_model.network, cls_model.preprocessing, str(study))
    with pytest.raises(OutOfDistributionError, match="raw intensities"):
        predict_to_files(*args, tmp_path / "p1", cls_model.classes, training_domain=record)
    assert not (tmp_path / "p1").exists()
    res = predict_to_files(
        *args, tmp_path / "p2", cls_model.classes, training_domain=record, allow_out_of_distribution=True
    )
    assert res["predictions"][0]["out_of_distribution"] is True and res["input_check"]["n_out_of_distribution"] == 1

    png = load_datalist(phantom_datalist(cls_root), "test")
    test = png + [{"image": str(study / "image.dcm"), "label": 1, "case_id": "other_scale"}]
    kwargs = {"device": "cpu", "n_boot": 10, "training_domain": record}
    with pytest.raises(OutOfDistributionError, match="other_scale"):
        evaluate_classifier(
            cls_model.network, cls_model.preprocessing, png, test, tmp_path / "e1", cls_model.classes, **kwargs
        )
    rep = evaluate_classifier(
        cls_model.network, cls_model.preprocessing, png, test, tmp_path / "e2", cls_model.classes,
        allow_out_of_distribution=True, **kwargs,
    )  # fmt: skip
    assert [c["case_id"] for c in rep["extra"]["input_check"]["out_of_distribution"]] == ["other_scale"]


def test_the_bundle_inference_config_refuses_by_default(cls_root, other_scale_study, tmp_path):
    study, _ = other_scale_study
    cfg = CLS / "configs"
    common = {
        "config_file": [str(cfg / "train.yaml"), str(cfg / "inference.yaml")],
        "meta_file": str(cfg / "metadata.json"),
        "bundle_root": str(cls_root),
        "phantom": CLS_PHANTOM,
        "batch_size": 8,
        "spatial_size": [32, 32],
        "input": str(study),
    }
    with pytest.raises(RuntimeError) as info:  # MONAI's config parser wraps the error
        run(**common, infer_dir=str(tmp_path / "i1"))
    cause = info.value
    while cause.__cause__ is not None and not isinstance(cause, OutOfDistributionError):
        cause = cause.__cause__
    assert isinstance(cause, OutOfDistributionError) and "raw intensities" in str(cause)
    assert not (tmp_path / "i1" / "predictions.json").exists()
    run(**common, infer_dir=str(tmp_path / "i2"), allow_out_of_distribution=True)
    pred = json.loads((tmp_path / "i2" / "predictions.json").read_text())
    assert pred["predictions"][0]["out_of_distribution"] is True


def test_other_channel_count_and_dimensionality_are_refused(cls_model, tmp_path):
    record = cls_model.domain
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(rgb)
    problems = check_input_domain(record, {"image": str(rgb)}, None)
    assert any("3 channel(s)" in p and "[1]" in p for p in problems)
    record3d = dataclasses.replace(cls_model).domain | {"spatial_dims": 3}
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((40, 40), 120, np.uint8)).save(gray)
    assert any("2D image" in p for p in check_input_domain(record3d, {"image": str(gray)}, None))


def test_infer_dicom_refuses_before_writing_anything(cls_model, other_scale_study, tmp_path):
    study, uid = other_scale_study
    with pytest.raises(OutOfDistributionError, match=uid):
        infer_dicom(cls_model, study, tmp_path / "o")
    assert not (tmp_path / "o").exists()
