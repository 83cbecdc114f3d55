"""``medmonai infer`` on a 3-class model: the multi-class decision rule of the evaluation is applied and recorded.

The rule (argmax, or argmax after a prior-shift correction, chosen on validation data: issue 21, item 7) is read
from ``runs/eval/report.json``; infer must give the label that :func:`apply_decision_rule` gives with it, and the
DICOM SR and the result tables must state that rule (not "arg-max decision").
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pydicom
import pytest

from medmonai.cli.main import main
from medmonai.data.dicom_output import read_classification_sr, write_classification_sr
from medmonai.deploy.models import load_clinical_model
from medmonai.deploy.pipeline import infer_dicom
from medmonai.metrics.clinical import apply_decision_rule
from tests.deploy._clinical_data import _run, bundle_dir, copy_study, subject_dirs

CLS = bundle_dir("classification_2d")
CLASSES = ["grade0", "grade1", "grade2"]
THREE = {
    "n_subjects": 30,
    "images_per_subject": [1, 1],
    "test_fraction": 0.25,
    "seed": 0,
    "classes": CLASSES,
    "class_ratio": [0.6, 0.25, 0.15],
    "intensity_scales": ["8bit"],  # the DICOM copies in the PNG (training) intensity range: in the training domain
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """classification_2d trained 1 epoch on 3-class phantoms (16x16), evaluated (rule chosen on validation)."""
    root = tmp_path_factory.mktemp("clinical_3cls")
    common = {"phantom": THREE, "batch_size": 8, "spatial_size": [16, 16]}
    _run("classification_2d", root, max_epochs=1, image_log_interval=100, **common)
    _run("classification_2d", root, "evaluate", n_boot=10, **common)
    return root


def _studies(root, dst):
    """Three phantom DICOM studies (one series each) in one input folder."""
    for k, subject in enumerate(subject_dirs(root)[:3]):
        copy_study(subject, dst / f"s{k}")
    return dst


def _probabilities(result):
    return np.asarray([[r["probabilities"][c] for c in result["classes"]] for r in result["results"]])


def test_infer_applies_and_records_the_rule_of_the_evaluation_report(root, tmp_path, capsys):
    report = json.loads((root / "runs" / "eval" / "report.json").read_text())
    rule = report["decision_rule"]
    assert report["classes"] == CLASSES and rule["method"] in ("argmax", "prior_shift")
    study = _studies(root, tmp_path / "study")
    out = tmp_path / "out"
    rc = main(["infer", str(CLS), str(study), "--out", str(out), "--bundle-root", str(root), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())
    assert result["classes"] == CLASSES and result["threshold"] is None and result["n_series"] == 3
    assert result["decision_rule"]["method"] == rule["method"] and "decision rule" in result["threshold_source"]
    assert result["decision_rule"].get("alpha") == rule.get("alpha")
    expected = [CLASSES[k] for k in apply_decision_rule(_probabilities(result), rule)]
    assert [r["predicted"] for r in result["results"]] == expected
    rows = {r["SeriesInstanceUID"]: r for r in csv.DictReader(open(out / "results.csv"))}
    for rec in result["results"]:
        back = read_classification_sr(out / rec["outputs"]["sr"])
        assert back["predicted"] == rec["predicted"] and back["threshold"] is None
        assert back["decision_rule"]["method"] == rule["method"]
        assert back["decision_rule"].get("alpha") == rule.get("alpha")
        assert any(p.startswith(f"decision rule {rule['method']}") for p in back["parameters"])
        assert "arg-max decision" not in back["parameters"]
        assert rows[rec["SeriesInstanceUID"]]["decision_rule"].startswith(rule["method"])


def test_a_prior_shift_rule_changes_the_label_and_the_sr_states_it(root, tmp_path):
    """A prior-shift rule that overrides the argmax on some series: infer follows it and the SR names it."""
    run = tmp_path / "root"
    shutil.copytree(root / "runs", run / "runs")
    shutil.copytree(root / "data", run / "data")
    study = _studies(root, tmp_path / "study")
    plain = infer_dicom(load_clinical_model(CLS, run, device="cpu"), study, tmp_path / "plain")
    probs = _probabilities(plain)
    # target prior: the class the model likes least on this study, strongly favoured
    least = int(np.argmin(probs.mean(axis=0)))
    priors = [0.05] * 3
    priors[least] = 0.9
    rule = {"method": "prior_shift", "alpha": 1.0, "class_priors": priors, "training_prior": [1 / 3] * 3}
    assert not np.array_equal(apply_decision_rule(probs, rule), probs.argmax(axis=1))  # the rule matters here
    report_file = run / "runs" / "eval" / "report.json"
    report = json.loads(report_file.read_text())
    report["decision_rule"] = {**rule, "chosen_on": "validation"}
    report_file.write_text(json.dumps(report))
    model = load_clinical_model(CLS, run, device="cpu")
    assert model.decision_rule["method"] == "prior_shift" and model.threshold is None
    result = infer_dicom(model, study, tmp_path / "shifted")
    assert _probabilities(result) == pytest.approx(probs, abs=1e-6)
    assert [r["predicted"] for r in result["results"]] == [CLASSES[k] for k in apply_decision_rule(probs, rule)]
    for rec in result["results"]:
        sr = tmp_path / "shifted" / rec["outputs"]["sr"]
        back = read_classification_sr(sr)
        assert back["decision_rule"]["alpha"] == 1.0 and back["decision_rule"]["class_priors"] == priors
        assert back["parameters"][0].startswith("decision rule prior_shift (chosen on validation)")
        assert "alpha 1" in back["parameters"][0] and "arg-max decision" not in back["parameters"]
        assert "arg-max decision" not in pydicom.dcmread(sr).to_json()  # not in any item of the SR
        # re-applying the rule read back from the SR to its probabilities gives its label
        p = np.asarray([back["probabilities"][c] for c in CLASSES])
        assert CLASSES[int(apply_decision_rule(p, back["decision_rule"]))] == back["predicted"]


def test_write_classification_sr_refuses_an_ambiguous_or_unfitting_rule(root, tmp_path):
    files = sorted(subject_dirs(root)[0].rglob("*.dcm"))[:1]
    args = (CLASSES, [0.2, 0.3, 0.5], 2)
    rule = {"method": "prior_shift", "alpha": 0.5, "class_priors": [0.5, 0.3, 0.2], "training_prior": [1 / 3] * 3}
    with pytest.raises(ValueError, match="not both"):
        write_classification_sr(tmp_path / "a.dcm", files, *args, 0.5, "m", "1", decision_rule=rule)
    with pytest.raises(ValueError, match="for 2 classes"):
        bad = {**rule, "class_priors": [0.5, 0.5], "training_prior": [0.5, 0.5]}
        write_classification_sr(tmp_path / "b.dcm", files, *args, None, "m", "1", decision_rule=bad)
    assert not (tmp_path / "a.dcm").exists() and not (tmp_path / "b.dcm").exists()
    argmax = write_classification_sr(
        tmp_path / "c.dcm", files, *args, None, "m", "1", decision_rule={"method": "argmax"}
    )
    back = read_classification_sr(argmax)
    assert back["decision_rule"] == {"method": "argmax"} and back["parameters"] == ["decision rule argmax"]
    none = read_classification_sr(write_classification_sr(tmp_path / "d.dcm", files, *args, None, "m", "1"))
    assert none["decision_rule"] is None and none["parameters"] == ["arg-max decision"]
