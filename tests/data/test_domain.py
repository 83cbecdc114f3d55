"""Unit tests of the training-domain record and the input check (medmonai.data.domain)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import Compose, ScaleIntensityRanged

from medmonai.data.datalist import load_datalist
from medmonai.data.domain import (
    RECORD_FILE,
    DomainTolerances,
    OutOfDistributionError,
    check_input_domain,
    load_training_domain,
    screen_for_report,
    screen_inputs,
    training_domain_record,
)
from medmonai.data.fingerprint import ensure_plan
from medmonai.data.phantoms import ensure_phantom_dataset
from medmonai.handlers.domain import TrainingDomainHandler
from medmonai.transforms.io import load_image_transforms
from medmonai.transforms.preprocessing import build_preprocessing
from medmonai.transforms.segmentation import build_segmentation_preprocessing


def _nifti(path: Path, arr: np.ndarray, spacing: float = 1.0) -> str:
    nib.save(nib.Nifti1Image(arr.astype(np.float32), np.diag([spacing, spacing, spacing, 1.0])), str(path))
    return str(path)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Ten training volumes of a 'CT-like' domain (about -100..300), with the modality in the entries."""
    root = tmp_path_factory.mktemp("domain")
    rng = np.random.default_rng(0)
    train = []
    for i in range(10):
        arr = rng.normal(100 + 5 * i, 60, size=(12, 12, 10))
        train.append({"image": _nifti(root / f"t{i}.nii.gz", arr), "modality": "CT"})
    return root, train


@pytest.fixture(scope="module")
def preprocessing():
    """A fixed-window scaling (as a CT preset) after the medmonai loaders."""
    return Compose([*load_image_transforms("image"), ScaleIntensityRanged("image", -100, 300, 0, 1)])


@pytest.fixture(scope="module")
def record(volumes, preprocessing):
    return training_domain_record(volumes[1], preprocessing, spatial_dims=3, samples_per_image=2000)


def test_record_holds_the_fingerprint_of_the_training_inputs(record):
    assert record["spatial_dims"] == 3 and record["channels"] == [1] and record["preprocessed_channels"] == [1]
    assert record["modality"] == {"counts": {"CT": 10}, "sources": {"entry": 10}}
    assert record["spacing"]["min"] == [1.0, 1.0, 1.0] and record["shape"]["max"] == [12.0, 12.0, 10.0]
    raw = record["raw"][0]
    assert raw["p0_5"] < raw["p5"] < raw["p50"] < raw["p95"] < raw["p99_5"]
    assert 90 < raw["p50"] < 150 and 50 < raw["std"] < 70 and raw["n_samples"] == 10 * 1440
    assert raw["per_image"]["spread"][0] > 0 and record["preprocessed"][0]["p50"] == pytest.approx(0.55, abs=0.1)
    assert record["tolerances"] == {
        "raw_widen": 0.5, "post_widen": 1.0, "max_outside_fraction": 0.5, "spread_factor": 10.0,
        "spacing_factor": 3.0,
    }  # fmt: skip
    json.dumps(record)  # JSON-safe


def test_same_domain_input_passes(record, preprocessing, tmp_path):
    arr = np.random.default_rng(7).normal(120, 60, size=(14, 11, 9))
    assert (
        check_input_domain(record, {"image": _nifti(tmp_path / "new.nii.gz", arr), "modality": "CT"}, preprocessing)
        == []
    )


def test_another_intensity_scale_is_refused_naming_the_statistic(record, preprocessing, tmp_path):
    arr = np.random.default_rng(1).normal(3000, 800, size=(12, 12, 10))  # the same kind of image, other units
    problems = check_input_domain(record, {"image": _nifti(tmp_path / "big.nii.gz", arr)}, preprocessing)
    raw = next(p for p in problems if p.startswith("raw intensities"))
    assert "100% of the voxels" in raw and "training p0.5..p99.5" in raw and "input p5/p50/p95" in raw
    assert any(p.startswith("preprocessed intensities") for p in problems)


def test_a_too_narrow_or_too_wide_spread_is_refused(record, tmp_path):
    rng = np.random.default_rng(2)
    narrow = _nifti(tmp_path / "narrow.nii.gz", 100 + rng.random((12, 12, 10)))  # 100..101: inside the range
    problems = check_input_domain(record, {"image": narrow}, None)
    assert len(problems) == 1 and "spread" in problems[0] and "smaller" in problems[0]


def test_channels_dimensionality_and_modality(record, tmp_path):
    four_d = np.random.default_rng(3).normal(100, 60, size=(12, 12, 10, 2))
    two = nib.Nifti1Image(four_d.astype(np.float32), np.eye(4))
    nib.save(two, str(tmp_path / "two.nii.gz"))
    problems = check_input_domain(record, {"image": str(tmp_path / "two.nii.gz")}, None)
    assert any("2 channel(s)" in p for p in problems)
    ct = _nifti(tmp_path / "ct.nii.gz", np.random.default_rng(4).normal(100, 60, size=(12, 12, 10)))
    assert any("modality MR" in p for p in check_input_domain(record, {"image": ct, "modality": "MR"}, None))
    assert check_input_domain(record, {"image": ct, "modality": "OT"}, None) == []  # says nothing: not compared
    assert any("2D image" in p for p in check_input_domain(record | {"spatial_dims": 2}, {"image": ct}, None))


def test_spacing_outside_the_range_is_only_a_warning(record, tmp_path, caplog):
    arr = np.random.default_rng(5).normal(100, 60, size=(12, 12, 10))
    caplog.set_level(logging.WARNING)
    assert check_input_domain(record, {"image": _nifti(tmp_path / "fine.nii.gz", arr, spacing=0.2)}, None) == []
    assert "spacing" in caplog.text and "not refused" in caplog.text


def test_tolerances_come_from_the_record(record, tmp_path):
    arr = np.random.default_rng(6).normal(380, 60, size=(12, 12, 10))  # beyond p99.5, within the widened range
    entry = {"image": _nifti(tmp_path / "shifted.nii.gz", arr)}
    assert check_input_domain(record, entry, None) == []
    strict = record | {"tolerances": {"raw_widen": 0.0}}
    assert any("raw intensities" in p for p in check_input_domain(strict, entry, None))
    assert DomainTolerances.from_mapping({"raw_widen": 2, "unknown": 1}) == DomainTolerances(raw_widen=2.0)


def test_screen_inputs_refuses_allows_and_warns(record, preprocessing, tmp_path, caplog):
    good = {"image": _nifti(tmp_path / "g.nii.gz", np.random.default_rng(8).normal(100, 60, (12, 12, 10)))}
    bad = {"image": _nifti(tmp_path / "b.nii.gz", np.random.default_rng(9).normal(5000, 900, (12, 12, 10)))}
    with pytest.raises(OutOfDistributionError, match=r"1 of 2 cases.*\n  case B: raw intensities"):
        screen_inputs(record, [good, bad], preprocessing, names=["A", "B"], what="case")
    found = screen_inputs(record, [good, bad], preprocessing, allow_out_of_distribution=True)
    assert found[0] == [] and found[1]
    caplog.set_level(logging.WARNING)
    assert screen_inputs(None, [bad], preprocessing) == [[]] and "NOT checked" in caplog.text
    report = screen_for_report(record, [good, {**bad, "case_id": "b1"}], preprocessing, allow_out_of_distribution=True)
    assert report["checked"] and [c["case_id"] for c in report["out_of_distribution"]] == ["b1"]
    assert screen_for_report(tmp_path / "missing.json", [bad], preprocessing)["checked"] is False


def test_load_training_domain(record, tmp_path):
    assert load_training_domain(tmp_path / "nothing.json") is None and load_training_domain(None) is None
    (tmp_path / RECORD_FILE).write_text(json.dumps(record))
    assert load_training_domain(tmp_path)["_file"] == str(tmp_path / RECORD_FILE)  # the folder holding it
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_training_domain(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not a medmonai training-domain record"):
        load_training_domain(tmp_path / "other.json")


def test_handler_writes_the_record_once(volumes, preprocessing, tmp_path):
    handler = TrainingDomainHandler(tmp_path / "runs", volumes[1][:4], preprocessing, spatial_dims=3, plan={"a": 1})
    path = handler()
    record = json.loads(path.read_text())
    assert path == tmp_path / "runs" / RECORD_FILE and record["n_images"] == 4 and record["key"]
    mtime = path.stat().st_mtime_ns
    assert handler() == path and path.stat().st_mtime_ns == mtime  # a resumed run keeps the current record
    TrainingDomainHandler(tmp_path / "runs", volumes[1][:5], preprocessing, spatial_dims=3)()
    assert json.loads(path.read_text())["n_images"] == 5  # other training images: a new record
    with pytest.raises(ValueError, match="3D but the model is 2D"):
        training_domain_record(volumes[1][:2], None, spatial_dims=2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_2d_phantom_test_set_passes(tmp_path_factory, seed):
    """Same domain, other subjects: no phantom test image is refused (PNG and DICOM copies, as trained)."""
    root = tmp_path_factory.mktemp(f"ph2d_{seed}")
    ensure_phantom_dataset(
        root, spatial_dims=2, n_subjects=12, images_per_subject=[1, 3], test_fraction=0.25, seed=seed, progress=False
    )
    for fmt in ("png", "dicom"):
        datalist = root / f"datalist_{fmt}.json"
        plan = ensure_plan(datalist, root / f"fp_{fmt}.json", progress=False, spatial_size=[32, 32])
        pre = build_preprocessing(["image"], plan=plan, channels=1)
        record = training_domain_record(
            load_datalist(datalist, "training"), pre, spatial_dims=2, normalization=plan["normalization"]
        )
        for entry in load_datalist(datalist, "test"):
            assert check_input_domain(record, entry, pre) == [], (fmt, entry["image"])


def test_the_3d_phantom_test_set_passes(tmp_path_factory):
    root = tmp_path_factory.mktemp("ph3d")
    ensure_phantom_dataset(
        root, spatial_dims=3, n_subjects=8, images_per_subject=[1, 2], test_fraction=0.3, seed=0, progress=False
    )
    datalist = root / "datalist_nifti.json"
    plan = ensure_plan(datalist, root / "fp.json", progress=False)
    for pre in (build_preprocessing(["image"], plan=plan, channels=1), build_segmentation_preprocessing(plan)):
        record = training_domain_record(
            load_datalist(datalist, "training"), pre, spatial_dims=3, normalization=plan["normalization"]
        )
        for entry in load_datalist(datalist, "test"):
            assert check_input_domain(record, entry, pre) == [], entry["image"]


def test_a_per_image_normalization_makes_the_raw_scale_irrelevant(volumes, tmp_path):
    """MR has no absolute units: with a per-image z-score another gain is the same input to the model."""
    pre = build_preprocessing(["image"], normalization={"preset": "zscore"}, orientation=None)
    record = training_domain_record(volumes[1], pre, spatial_dims=3, normalization={"preset": "zscore"})
    assert record["raw_scale_checked"] is False
    arr = np.random.default_rng(10).normal(100, 60, size=(12, 12, 10)) * 40  # another gain
    assert check_input_domain(record, {"image": _nifti(tmp_path / "gain.nii.gz", arr)}, pre) == []
    fixed = training_domain_record(volumes[1], pre, spatial_dims=3, normalization="scale255")
    assert fixed["raw_scale_checked"] is True
    assert any("raw intensities" in p for p in check_input_domain(fixed, {"image": str(tmp_path / "gain.nii.gz")}, pre))


def test_an_input_that_cannot_be_checked_is_an_error_naming_it(record, tmp_path):
    arr = np.full((12, 12, 10), np.nan)
    with pytest.raises(ValueError, match=r"case nan\.nii\.gz: cannot check it against the training domain"):
        screen_inputs(
            record, [{"image": _nifti(tmp_path / "nan.nii.gz", arr)}], None, names=["nan.nii.gz"], what="case"
        )
