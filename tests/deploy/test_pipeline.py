"""Clinical inference on DICOM studies: SR / SEG outputs, result tables, no patient data in logs, watch mode."""

from __future__ import annotations

import csv
import json
import logging
import shutil

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from medmonai.cli.main import main
from medmonai.data.dicom_output import read_classification_sr
from medmonai.deploy.models import load_clinical_model
from medmonai.deploy.pipeline import discover_series, infer_dicom, watch_folder
from tests.data.dicom_factory import write_slice
from tests.deploy._clinical_data import (
    PATIENT_ID,
    PATIENT_NAME,
    bundle_dir,
    checksums,
    copy_study,
    copy_tree,
    subject_dirs,
    trained_segmenter,
)

CLS = bundle_dir("classification_2d")
SEG = bundle_dir("segmentation_2d")


@pytest.fixture
def study(cls_root, tmp_path):
    """A multi-series phantom study with a distinctive patient name and id, in a folder named neutrally."""
    return copy_study(subject_dirs(cls_root)[0], tmp_path / "study")


def _no_patient_data(*texts: str) -> None:
    for text in texts:
        for secret in (PATIENT_NAME, PATIENT_NAME.split("^")[0], PATIENT_ID):
            assert secret not in text


def test_classification_cli_writes_sr_and_tables_without_touching_inputs_or_leaking_patient_data(
    cls_root, study, tmp_path, caplog, capsys
):
    before = checksums(study)
    series = {pydicom.dcmread(f).SeriesInstanceUID: f for f in study.iterdir()}
    assert len(series) >= 2  # a study with several series
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG)
    rc = main(["infer", str(CLS), str(study), "--out", str(out), "--bundle-root", str(cls_root), "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr()
    assert checksums(study) == before  # inputs never modified (content and modification time)

    result = json.loads((out / "results.json").read_text())
    report = json.loads((cls_root / "runs" / "eval" / "report.json").read_text())
    meta = json.loads((CLS / "configs" / "metadata.json").read_text())
    assert result["model"]["name"] == "classification_2d" and result["model"]["version"] == meta["version"]
    assert result["threshold"] == pytest.approx(report["threshold"]["threshold"])  # chosen on validation
    assert "validation" in result["threshold_source"]
    assert {r["SeriesInstanceUID"] for r in result["results"]} == set(series)
    rows = {r["SeriesInstanceUID"]: r for r in csv.DictReader(open(out / "results.csv"))}
    study_uid = pydicom.dcmread(next(iter(series.values()))).StudyInstanceUID
    for rec in result["results"]:
        uid = rec["SeriesInstanceUID"]
        assert rec["StudyInstanceUID"] == study_uid and rows[uid]["StudyInstanceUID"] == study_uid
        probs = rec["probabilities"]
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert rec["predicted"] == ("malignant" if probs["malignant"] >= result["threshold"] else "benign")
        assert float(rows[uid]["prob_malignant"]) == pytest.approx(probs["malignant"], abs=1e-6)
        assert rows[uid]["model_version"] == meta["version"]
        # the SR: same study and patient as the source, references the source series, holds the same numbers
        sr_file = out / rec["outputs"]["sr"]
        sr = pydicom.dcmread(sr_file)
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
        assert sr.StudyInstanceUID == study_uid and str(sr.PatientName) == PATIENT_NAME
        assert sr.SeriesInstanceUID not in series
        back = read_classification_sr(sr_file)
        assert back["referenced_series"] == [uid]
        assert back["referenced_instances"] == [pydicom.dcmread(series[uid]).SOPInstanceUID]
        assert back["probabilities"] == pytest.approx(probs, abs=1e-6)
        assert back["predicted"] == rec["predicted"] and back["threshold"] == pytest.approx(result["threshold"])
        assert back["algorithm"] == "classification_2d" and back["version"] == meta["version"]
    # the one-line summary: series, studies, the outcome counts, where the results are
    summary = [line for line in printed.out.splitlines() if line.startswith("infer: ")]
    assert len(summary) == 1, printed.out
    counts = {c: sum(r["predicted"] == c for r in result["results"]) for c in result["classes"]}
    assert f"infer: {len(series)} series of 1 study -> " in summary[0]
    assert ", ".join(f"{n} {c}" for c, n in sorted(counts.items()) if n) in summary[0]
    assert str(out / "results.json") in summary[0]
    # no patient name or id in the logs (even at DEBUG), the console output or the result tables
    assert "wrote results for" in caplog.text and "series " in caplog.text  # the logs were captured
    _no_patient_data(
        caplog.text, printed.out, printed.err, (out / "results.json").read_text(), (out / "results.csv").read_text()
    )
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporary files left


def test_binary_decisions_use_the_positive_class_of_the_report(cls_root, study, tmp_path):
    """A report whose threshold is on class 0 is applied to class 0, not to the second class."""
    run = copy_tree(cls_root, tmp_path / "run")
    report_file = run / "runs" / "eval" / "report.json"
    report = json.loads(report_file.read_text())
    report["positive_class"], report["threshold"]["threshold"] = 0, 0.3
    report_file.write_text(json.dumps(report))
    model = load_clinical_model(CLS, run, device="cpu")
    assert (model.threshold, model.positive_class) == (0.3, 0)
    out = tmp_path / "out"
    assert main(["infer", str(CLS), str(study), "--out", str(out), "--bundle-root", str(run), "--device", "cpu"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["threshold"] == pytest.approx(0.3)
    for rec in result["results"]:
        assert rec["predicted"] == ("benign" if rec["probabilities"]["benign"] >= 0.3 else "malignant")
    # a threshold given by the user applies to the report's positive class too
    assert load_clinical_model(CLS, run, device="cpu", threshold=0.9).positive_class == 0


def test_fold_ensemble_torchscript_gives_the_checkpoint_probabilities_and_the_oof_threshold(
    cls_root, cls_model, study, tmp_path
):
    """A TorchScript fold ensemble (probability output) in runs/cv/ensemble, threshold from cv_report.json."""
    from medmonai.engines.crossval import export_ensemble

    root = tmp_path / "root"
    shutil.copytree(cls_root / "runs", root / "runs")
    shutil.copytree(cls_root / "data", root / "data")
    cv = root / "runs" / "cv"
    cv.mkdir()
    (cv / "fingerprint.json").write_text((root / "runs" / "fingerprint.json").read_text())
    (cv / "cv_report.json").write_text(json.dumps({"threshold": {"method": "youden", "threshold": 0.25}}))
    net = cls_model.network
    twin = load_clinical_model(CLS, cls_root, device="cpu").network
    export_ensemble([net, twin], cv / "ensemble" / "model.ts", torch.rand(2, 1, 32, 32))
    ens = load_clinical_model(CLS, root, model=cv / "ensemble" / "model.ts", device="cpu")
    assert ens.threshold == 0.25 and "out-of-fold" in ens.threshold_source
    uid = sorted(pydicom.dcmread(f).SeriesInstanceUID for f in study.iterdir())[0]
    a = infer_dicom(cls_model, study, tmp_path / "ckpt", series_uids=[uid])
    b = infer_dicom(ens, study, tmp_path / "ens", series_uids=[uid])
    assert [r["SeriesInstanceUID"] for r in b["results"]] == [uid]  # explicit series choice
    assert b["results"][0]["probabilities"] == pytest.approx(a["results"][0]["probabilities"], abs=1e-5)
    assert b["results"][0]["predicted"] == "malignant"  # p >= 0.25
    assert b["model"]["weights"].endswith("model.ts")
    assert read_classification_sr(tmp_path / "ens" / b["results"][0]["outputs"]["sr"])["threshold"] == 0.25
    # a TorchScript export of the checkpoint (logit output, like ckpt_export's): the run's validation threshold,
    # unless one is given
    torch.jit.save(torch.jit.script(net), root / "runs" / "model.ts")
    single = load_clinical_model(CLS, root, model=root / "runs" / "model.ts", device="cpu")
    assert single.threshold == cls_model.threshold and "validation" in single.threshold_source
    c = infer_dicom(single, study, tmp_path / "ts", series_uids=[uid])
    assert c["results"][0]["probabilities"] == pytest.approx(a["results"][0]["probabilities"], abs=1e-5)
    strict = load_clinical_model(CLS, root, model=root / "runs" / "model.ts", device="cpu", threshold=0.99)
    assert infer_dicom(strict, study, tmp_path / "strict", series_uids=[uid])["results"][0]["predicted"] == "benign"


def test_segmentation_writes_dicom_seg_referencing_the_source(tmp_path_factory, tmp_path):
    root = trained_segmenter(tmp_path_factory)
    study = copy_study(subject_dirs(root)[0], tmp_path / "study")
    before = checksums(study)
    with pytest.raises(ValueError, match="pass the overrides used in training"):
        load_clinical_model(SEG, root, overrides={"base_filters": 8}, device="cpu")  # trained with base_filters 4
    # without overrides: the width recorded in the run's network_plan.json
    model = load_clinical_model(SEG, root, device="cpu")
    assert model.task == "segmentation" and model.classes[0] == "background"
    result = infer_dicom(model, study, tmp_path / "out")
    assert checksums(study) == before
    sources = {pydicom.dcmread(f).SeriesInstanceUID: pydicom.dcmread(f) for f in study.iterdir()}
    assert {r["SeriesInstanceUID"] for r in result["results"]} == set(sources)
    for rec in result["results"]:
        src = sources[rec["SeriesInstanceUID"]]
        seg = hd.seg.segread(tmp_path / "out" / rec["outputs"]["seg"])
        assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.Modality == "SEG"
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
        mask = nib.load(tmp_path / "out" / rec["outputs"]["nifti"]).get_fdata()
        assert mask.shape[:2] == (src.Columns, src.Rows)
        n_frames = int(getattr(seg, "NumberOfFrames", 0))
        seg_pixels = int(np.asarray(seg.pixel_array).sum()) if n_frames else 0
        assert seg_pixels == int((mask == 1).sum())  # the SEG holds exactly the predicted lesion pixels
        spacing = float(np.prod([float(v) for v in src.PixelSpacing]))
        assert rec["volume_mm3"]["lesion"] == pytest.approx((mask == 1).sum() * spacing, rel=1e-3)
    _no_patient_data((tmp_path / "out" / "results.json").read_text())


def test_clear_errors(cls_root, cls_model, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no files found"):
        infer_dicom(cls_model, empty, tmp_path / "o1")
    text = tmp_path / "text"
    text.mkdir()
    (text / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="no DICOM files found"):
        infer_dicom(cls_model, text, tmp_path / "o2")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        infer_dicom(cls_model, tmp_path / "missing", tmp_path / "o3")
    # a 3-slice volume only: no series fits the 2D bundle; the message lists the series found
    vol = tmp_path / "volume"
    for k in range(3):
        write_slice(vol / f"{k}.dcm", np.full((8, 8), k, np.int16), series_uid="1.2.3.9", position=(0, 0, k))
    with pytest.raises(ValueError, match=r"no series fits a 2D bundle.*1\.2\.3\.9 \(MR, 3 image"):
        infer_dicom(cls_model, vol, tmp_path / "o4")
    # only derived objects (an earlier SR) in the folder
    derived = tmp_path / "derived"
    derived.mkdir()
    out = tmp_path / "o5"
    single = copy_study(subject_dirs(cls_root)[-1], tmp_path / "single")
    res = infer_dicom(cls_model, single, out)
    shutil.copy(out / res["results"][0]["outputs"]["sr"], derived / "sr.dcm")
    with pytest.raises(ValueError, match=r"no usable DICOM image series; 1 derived object"):
        infer_dicom(cls_model, derived, tmp_path / "o6")
    # results stored back beside the images are ignored on a second run
    shutil.copy(derived / "sr.dcm", single / "sr.dcm")
    again = infer_dicom(cls_model, single, tmp_path / "o7")
    assert again["input"]["n_derived_ignored"] == 1 and again["n_series"] == res["n_series"]
    with pytest.raises(ValueError, match="not found among the usable series"):
        infer_dicom(cls_model, single, tmp_path / "o8", series_uids=["9.9.9"])
    assert not (tmp_path / "o8").exists() and not (tmp_path / "o4").exists()  # nothing half-written
    # CLI: one clear line and exit status 2; an untrained bundle_root names the missing plan
    rc = main(["infer", str(CLS), str(text), "--out", str(tmp_path / "o9"), "--bundle-root", str(cls_root)])
    assert rc == 2 and "no DICOM files found" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="fingerprint.json: no preprocessing plan"):
        load_clinical_model(CLS, tmp_path / "untrained")
    # the training data moved: --set datalist=NEW; the run's cached plan is used and its files are not touched
    runs_before = checksums(cls_root / "runs")
    recorded = json.loads((cls_root / "runs" / "fingerprint.json").read_text())["datalist"]
    moved = tmp_path / "moved" / "datalist.json"
    moved.parent.mkdir()
    moved.write_text(open(recorded).read())
    with pytest.raises(FileNotFoundError, match="is missing"):
        load_clinical_model(CLS, cls_root, overrides={"datalist": str(tmp_path / "nowhere.json")})
    relocated = load_clinical_model(CLS, cls_root, overrides={"datalist": str(moved)}, device="cpu")
    assert relocated.classes == cls_model.classes
    again = infer_dicom(relocated, single, tmp_path / "o10")
    assert again["results"][0]["probabilities"] == pytest.approx(res["results"][0]["probabilities"], abs=1e-6)
    assert checksums(cls_root / "runs") == runs_before
    assert discover_series(single)[1]["n_derived"] == 1


def test_watch_folder_processes_each_study_once(cls_root, cls_model, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    subjects = subject_dirs(cls_root)
    copy_study(subjects[0], inbox / "a")
    first = watch_folder(cls_model, inbox, out, min_age_s=0, once=True)
    assert len(first["processed"]) == 1 and not first["failed"]
    study_a = first["processed"][0]
    results_a = out / study_a / "results.json"
    stamp = results_a.stat().st_mtime_ns
    state = json.loads((out / "watch_state.json").read_text())
    assert state["studies"][study_a]["status"] == "done"
    second = watch_folder(cls_model, inbox, out, min_age_s=0, once=True)
    assert second["processed"] == [] and second["already_done"] == [study_a]
    assert results_a.stat().st_mtime_ns == stamp  # not processed again
    copy_study(subjects[1], inbox / "b")
    waiting = watch_folder(cls_model, inbox, out, min_age_s=3600, once=True)  # b still "arriving"
    assert waiting["waiting"] == ["a", "b"] and waiting["processed"] == []
    third = watch_folder(cls_model, inbox, out, min_age_s=0, once=True)
    assert len(third["processed"]) == 1 and third["processed"][0] != study_a
    assert set(json.loads((out / "watch_state.json").read_text())["studies"]) == {study_a, third["processed"][0]}
