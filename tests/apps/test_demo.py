from __future__ import annotations

import json

import numpy as np
import pytest

from medmonai.apps.baseline import downsample_features, grouped_cv_baseline
from medmonai.apps.demo import run_demo


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(tmp_path, capsys):
    summary = run_demo(tmp_path / "demo", spatial_dims=3, seed=0, quick=True)
    out = tmp_path / "demo"
    for name in ("datalist_dicom.json", "labels.csv", "fingerprint.json", "preview.png", "baseline.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text()) == summary
    printed = capsys.readouterr().out
    assert "[8/8]" in printed and "non-image" not in printed  # the DICOM tree holds only DICOM files
    assert (out / "classification_2d" / "runs" / "eval" / "report.json").is_file()
    assert summary["classification_2d_test"]["auc"]["ci_low"] <= summary["classification_2d_test"]["auc"]["value"]
    dl = json.loads((out / "datalist_dicom.json").read_text())
    assert len(dl["training"]) == summary["n_series"] > 0
    plan = json.loads((out / "fingerprint.json").read_text())["plan"]
    assert summary["plan"]["spatial_size"] == plan["spatial_size"]
    acc = summary["baseline"]["accuracy"]["mean"]
    assert 0.0 <= acc <= 1.0


def test_grouped_cv_baseline_never_splits_a_subject_and_learns_signal():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"s{i}" for i in range(20)], 3)
    labels = np.repeat(np.arange(20) % 2, 3)
    x = rng.normal(size=(60, 5))
    x[:, 0] += 3.0 * labels  # a clear signal
    res = grouped_cv_baseline(x, labels, groups, n_splits=5)
    assert res["n_subjects"] == 20 and len(res["folds"]) == 5
    assert res["accuracy"]["mean"] > 0.9
    noise = grouped_cv_baseline(rng.normal(size=(60, 5)), labels, groups, n_splits=5)
    assert noise["accuracy"]["mean"] < 0.8


def test_downsample_features_shape():
    assert downsample_features(np.ones((1, 40, 40, 24)), 8).shape == (8**3,)
    assert downsample_features(np.ones((1, 64, 48)), 16).shape == (16**2,)
