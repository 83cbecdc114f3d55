"""The cross-validation runner (``medmonai cv``) on 2D phantoms with several images per subject."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from medmonai.apps.crossval import run_crossval
from medmonai.bundles import bundles_dir
from medmonai.cli.main import main
from medmonai.data.datalist import load_datalist
from medmonai.data.defaults import resolve_datalist
from medmonai.data.splits import case_id
from medmonai.engines.crossval import fold_dir
from medmonai.utils import read_json
from tests.conftest import require

BUNDLE = bundles_dir() / "classification"
FAST = {"max_epochs": 1, "spatial_size": [32, 32], "batch_size": 16}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """2D phantoms: 16 subjects with 1-3 images each, a test split."""
    root = tmp_path_factory.mktemp("phantoms")
    return resolve_datalist("", str(root / "data"), 2, n_subjects=16, images_per_subject=[1, 3], test_fraction=0.25)


def _subjects(datalist, ids):
    by_id = {case_id(e): e["subject"] for e in load_datalist(datalist, "training")}
    return {by_id[i] for i in ids}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def kfold_run(phantoms, tmp_path_factory):
    root = tmp_path_factory.mktemp("kfold")
    report = run_crossval(BUNDLE, bundle_root=root, n_folds=3, overrides={"datalist": phantoms, **FAST}, n_boot=50)
    return root, report


def test_kfold_folds_are_subject_disjoint_and_complete(phantoms, kfold_run):
    root, report = kfold_run
    splits = read_json(root / "runs" / "cv" / "splits.json")
    assert len(splits["folds"]) == 3 == report["n_folds"]
    val_ids = [i for f in splits["folds"] for i in f["val"]]
    assert sorted(val_ids) == sorted(splits["case_ids"])  # every pooled case is out-of-fold exactly once
    for f in splits["folds"]:
        assert not _subjects(phantoms, f["train"]) & _subjects(phantoms, f["val"])
    assert report["oof"]["n"] == len(splits["case_ids"])
    for k in range(3):  # each fold trained through the bundle: its own checkpoints and TensorBoard folder
        assert (fold_dir(root / "runs" / "cv", k) / "checkpoints" / "model.pt").is_file()
        assert any((fold_dir(root / "runs" / "cv", k) / "tensorboard").iterdir())


def test_exported_ensemble_reproduces_the_ensemble_report(phantoms, kfold_run):
    from medmonai.bundles import parse_bundle

    root, report = kfold_run
    cv_dir = root / "runs" / "cv"
    rows = _rows(cv_dir / "ensemble" / "predictions.csv")
    test = load_datalist(phantoms, "test")
    assert len(rows) == len(test) == report["ensemble"]["n"]
    parser = parse_bundle(
        BUNDLE, ("train", "crossval"), {"bundle_root": str(root), "datalist": phantoms, "n_folds": 3, **FAST}
    )
    transform = parser.get_parsed_content("preprocessing")
    x = torch.stack([torch.as_tensor(transform({"image": e["image"]})["image"]) for e in test]).float()
    model = torch.jit.load(str(cv_dir / "ensemble" / "model.ts"))
    with torch.no_grad():
        probs = model(x).numpy()
    classes = report["classes"]
    expected = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_resume_skips_finished_folds(phantoms, kfold_run, capsys):
    root, _ = kfold_run
    cv_dir = root / "runs" / "cv"
    mtimes = {k: os.path.getmtime(fold_dir(cv_dir, k) / "fold_predictions.npz") for k in range(3)}
    (fold_dir(cv_dir, 1) / "fold_predictions.npz").unlink()  # as if fold 1 had been interrupted
    run_crossval(BUNDLE, bundle_root=root, n_folds=3, overrides={"datalist": phantoms, **FAST}, n_boot=50)
    out = capsys.readouterr().out
    assert "2 of 3 folds already finished: skipped" in out
    assert "fold 2/3: training" in out and "fold 1/3: training" not in out
    for k in (0, 2):
        assert os.path.getmtime(fold_dir(cv_dir, k) / "fold_predictions.npz") == mtimes[k]
    assert (fold_dir(cv_dir, 1) / "fold_predictions.npz").is_file()


def test_other_settings_in_the_same_folder_are_refused(phantoms, kfold_run):
    root, _ = kfold_run
    with pytest.raises(ValueError, match="other settings"):
        run_crossval(BUNDLE, bundle_root=root, n_folds=4, overrides={"datalist": phantoms, **FAST}, n_boot=50)


@pytest.mark.slow
def test_loso_with_deep_features_leaves_each_subject_out_once(phantoms, tmp_path):
    report = run_crossval(
        BUNDLE, bundle_root=tmp_path, scheme="loso", classifier="logreg_l2",
        overrides={"datalist": phantoms, "spatial_size": [32, 32]}, n_boot=50,
    )  # fmt: skip
    splits = read_json(tmp_path / "runs" / "cv" / "splits.json")
    subjects = _subjects(phantoms, splits["case_ids"])
    assert report["n_folds"] == len(splits["folds"]) == len(subjects)
    held_out = [_subjects(phantoms, f["val"]) for f in splits["folds"]]
    assert all(len(s) == 1 for s in held_out)
    assert sorted(s.pop() for s in held_out) == sorted(subjects)
    assert (tmp_path / "runs" / "cv" / "ensemble" / "report.json").is_file()
    assert not (tmp_path / "runs" / "cv" / "fold0" / "checkpoints").exists()  # no network training on this path


def test_cli_loo_refuses_multi_image_subjects(phantoms, tmp_path, capsys):
    rc = main(["cv", str(BUNDLE), "--bundle-root", str(tmp_path), "--scheme", "loo", "--classifier", "logreg_l2",
               "--datalist", phantoms, "--set", "spatial_size=[32, 32]"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "loso" in err and "sub-" in err


@pytest.mark.slow
def test_one_fold_through_monai_bundle_run(phantoms, tmp_path):
    cfg = BUNDLE / "configs"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", f"['{cfg / 'train.yaml'}','{cfg / 'crossval.yaml'}']",
        "--meta_file", str(cfg / "metadata.json"), "--bundle_root", str(tmp_path), "--datalist", phantoms,
        "--fold", "1", "--n_folds", "3", "--max_epochs", "1", "--spatial_size", "[32,32]",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    cv_dir = tmp_path / "runs" / "cv"
    assert (fold_dir(cv_dir, 1) / "fold_predictions.npz").is_file()
    assert not fold_dir(cv_dir, 0).exists()
    assert len(read_json(cv_dir / "splits.json")["folds"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["repeated_kfold", "groupkfold", "holdout"])
def test_other_schemes_through_the_cli(phantoms, tmp_path, scheme):
    rc = main(["-q", "cv", str(BUNDLE), "--bundle-root", str(tmp_path), "--scheme", scheme, "--folds", "3",
               "--repeats", "2", "--classifier", "logreg_l2", "--datalist", phantoms, "--n-boot", "50",
               "--set", "spatial_size=[32, 32]", "--set", "group_key=subject"])  # fmt: skip
    assert rc == 0
    report = read_json(tmp_path / "runs" / "cv" / "cv_report.json")
    splits = read_json(tmp_path / "runs" / "cv" / "splits.json")
    assert report["n_folds"] == {"repeated_kfold": 6, "groupkfold": 3, "holdout": 1}[scheme]
    for f in splits["folds"]:
        assert not _subjects(phantoms, f["train"]) & _subjects(phantoms, f["val"])
    if scheme != "holdout":  # every pooled case is out-of-fold (once per repeat)
        assert report["oof"]["n"] == len(splits["case_ids"])


@pytest.mark.slow
def test_every_scheme_runs_on_breastmnist_through_the_cli(shared_data, tmp_path):
    """All schemes on real data (a stratified 40-image BreastMNIST subsample, deep-features path to stay fast)."""
    from medmonai.data.builders import datalist_from_medmnist
    from medmonai.data.datalist import write_datalist

    npz = require(shared_data / "medmnist" / "breastmnist.npz")
    full = datalist_from_medmnist(npz, tmp_path / "images", progress=False)
    keep = {"training": 32, "test": 8}
    small = {"classes": full["classes"]}
    for split, n in keep.items():
        entries = full[split]
        per_class = [[e for e in entries if e["label"] == c][: n // 2] for c in range(2)]
        small[split] = per_class[0] + per_class[1]
    datalist = tmp_path / "images" / "small.json"
    write_datalist(datalist, small)
    expected = {"kfold": 4, "repeated_kfold": 8, "groupkfold": 4, "holdout": 1, "loo": 32, "loso": 32}
    for scheme, n_folds in expected.items():
        root = tmp_path / scheme
        rc = main(["-q", "cv", str(BUNDLE), "--bundle-root", str(root), "--scheme", scheme, "--folds", "4",
                   "--repeats", "2", "--classifier", "logreg_l2", "--datalist", str(datalist), "--n-boot", "20",
                   "--set", "spatial_size=[28, 28]", "--set", "normalization=scale255"])  # fmt: skip
        assert rc == 0, scheme
        report = read_json(root / "runs" / "cv" / "cv_report.json")
        assert report["n_folds"] == n_folds, scheme
        assert report["ensemble"]["n"] == 8


def test_partial_folds_are_checked(phantoms, tmp_path):
    """folds= (medmonai train's rungs) trains only the named folds; bad ones are refused before any training."""
    with pytest.raises(ValueError, match=r"folds \[5\] out of range"):
        run_crossval(BUNDLE, bundle_root=tmp_path, n_folds=3, overrides={"datalist": phantoms, **FAST}, folds=[5])
    with pytest.raises(ValueError, match="plain network path"):
        run_crossval(BUNDLE, bundle_root=tmp_path, overrides={"datalist": phantoms}, classifier="logreg_l2", folds=[0])
    assert not any((tmp_path / "runs" / "cv").glob("fold*/fold_predictions.npz"))
