"""The bad-input matrix: every case gets a clear error naming the file and the reason before any training starts, or
(``preflight: skip``) is left out and listed in the report."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medmonai.data.preflight import (
    CLEANED_NAME,
    REPORT_NAME,
    PreflightError,
    check_split_classes,
    preflight_datalist,
)
from medmonai.data.splits import train_val_entries
from tests.data.dicom_factory import SAGITTAL, write_series, write_slice

CLASSES = ["benign", "malignant"]


def _nifti(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(arr, dtype=np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def _good_entries(root: Path, n: int = 4) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"image": str(_nifti(root / f"good{i}.nii.gz", rng.random((8, 8, 6)))), "label": i % 2, "subject": f"s{i}"}
        for i in range(n)
    ]


@pytest.fixture(autouse=True)
def _data_folder(tmp_path):
    (tmp_path / "data").mkdir()


def _write(root: Path, training: list[dict], **extra) -> Path:
    dl = root / "datalist.json"
    dl.write_text(json.dumps({"name": "matrix", "classes": CLASSES, "training": training, **extra}))
    return dl


# --------------------------------------------------------------------------------------- the bad entries
# each maker writes one bad entry into `root` and returns (entry, the file the message must name, reason words)


def _truncated_dicom(root: Path):
    s = write_series(root / "truncated", shape=(6, 6, 5))
    data = s.files[2].read_bytes()
    s.files[2].write_bytes(data[: len(data) - 30])
    return {"image": str(s.folder)}, s.files[2], "truncated"


def _corrupt_dicom(root: Path):
    s = write_series(root / "corrupt", shape=(6, 6, 5))
    s.files[1].write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(1).bytes(300))
    return {"image": str(s.folder)}, s.files[1], "DICOM"


def _non_image_file(root: Path):
    p = root / "notes.txt"
    p.write_text("not an image")
    return {"image": str(p)}, p, "unsupported image type"


def _text_named_png(root: Path):
    p = root / "fake.png"
    p.write_text("not a PNG either")
    return {"image": str(p)}, p, "cannot read image"


def _dicom_without_pixels(root: Path):
    s = write_series(root / "nopixels", shape=(6, 6, 5))
    write_slice(s.files[1], np.zeros((6, 6)), series_uid=s.series_uid, position=s.positions[1], with_pixels=False)
    return {"image": str(s.folder)}, s.files[1], "without pixel data"


def _two_series_one_folder(root: Path):
    folder = root / "two_series"
    write_series(folder, shape=(6, 6, 4), seed=1)
    write_series(folder, shape=(6, 6, 4), seed=2, names=[f"other{i}.dcm" for i in range(4)])
    return {"image": str(folder)}, folder, "found 2"


def _missing_slice(root: Path):
    s = write_series(root / "missing_slice", shape=(6, 6, 6), shuffle_names=False)
    s.files[3].unlink()
    return {"image": str(s.folder)}, s.folder, "missing slice"


def _duplicate_slice(root: Path):
    positions = [(0.0, 0.0, 0.0), (0.0, 0.0, 2.0), (0.0, 0.0, 2.0), (0.0, 0.0, 4.0)]
    s = write_series(root / "duplicate_slice", shape=(6, 6, 4), positions=positions)
    return {"image": str(s.folder)}, s.folder, "duplicate slice position"


def _inconsistent_orientation(root: Path):
    s = write_series(root / "orientation", shape=(6, 6, 5))
    ds = pydicom.dcmread(s.files[2])
    ds.ImageOrientationPatient = list(SAGITTAL)
    ds.save_as(s.files[2])
    return {"image": str(s.folder)}, s.files[2], "inconsistent ImageOrientationPatient"


def _nan_voxels(root: Path):
    arr = np.random.default_rng(2).random((8, 8, 6))
    arr[1, 2, 3] = np.nan
    return {"image": str(_nifti(root / "nan.nii.gz", arr))}, root / "nan.nii.gz", "1 NaN"


def _inf_voxels(root: Path):
    arr = np.random.default_rng(3).random((8, 8, 6))
    arr[0, 0, 0] = np.inf
    arr[0, 0, 1] = -np.inf
    return {"image": str(_nifti(root / "inf.nii.gz", arr))}, root / "inf.nii.gz", "2 infinite"


def _constant_image(root: Path):
    return (
        {"image": str(_nifti(root / "constant.nii.gz", np.full((8, 8, 6), 7.0)))},
        root / "constant.nii.gz",
        ("constant image"),
    )


def _zero_byte_nifti(root: Path):
    p = root / "empty.nii.gz"
    p.write_bytes(b"")
    return {"image": str(p)}, p, "0 bytes"


def _four_d_nifti(root: Path):
    p = _nifti(root / "four_d.nii.gz", np.random.default_rng(4).random((8, 8, 6, 3)))
    return {"image": str(p)}, p, "4D image"


def _mask_shape_mismatch(root: Path):
    img = _nifti(root / "img_for_mask.nii.gz", np.random.default_rng(5).random((8, 8, 6)))
    mask = _nifti(root / "mask_small.nii.gz", np.zeros((8, 8, 5)))
    return {"image": str(img), "mask": str(mask)}, mask, "mask shape (8, 8, 5) differs"


def _label_outside_classes(root: Path):
    p = _nifti(root / "label7.nii.gz", np.random.default_rng(6).random((8, 8, 6)))
    return {"image": str(p), "label": 7}, p, "label 7 is outside the class list"


def _missing_file(root: Path):
    p = root / "not_there.nii.gz"
    return {"image": str(p)}, p, "does not exist"


def _mask_affine_differs(root: Path):  # issue 21: same grid, mask 50 mm away
    img = _nifti(root / "img_for_shifted_mask.nii.gz", np.random.default_rng(8).random((8, 8, 6)))
    mask = root / "mask_shifted.nii.gz"
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[0, 3] = 50.0
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 6), np.float32), affine), str(mask))
    return {"image": str(img), "mask": str(mask)}, mask, "not aligned with its image"


def _no_label(root: Path):  # issue 21: a classification entry without its class
    p = _nifti(root / "unlabelled.nii.gz", np.random.default_rng(9).random((8, 8, 6)))
    return {"image": str(p), "label": None}, p, "no 'label'"


def _image_not_a_path(root: Path):  # issue 21: "image": 12345 was an uncaught traceback
    return {"image": 12345}, root.parent / "datalist.json", "got 12345"


ENTRY_CASES: dict[str, Callable] = {
    "truncated_dicom": _truncated_dicom,
    "corrupt_dicom": _corrupt_dicom,
    "non_image_file": _non_image_file,
    "text_named_png": _text_named_png,
    "dicom_without_pixel_data": _dicom_without_pixels,
    "several_series_in_one_folder": _two_series_one_folder,
    "missing_slice": _missing_slice,
    "duplicate_slice": _duplicate_slice,
    "inconsistent_orientation": _inconsistent_orientation,
    "nan_voxels": _nan_voxels,
    "inf_voxels": _inf_voxels,
    "constant_image": _constant_image,
    "zero_byte_nifti": _zero_byte_nifti,
    "four_d_nifti_where_3d_expected": _four_d_nifti,
    "mask_shape_differs": _mask_shape_mismatch,
    "label_outside_class_list": _label_outside_classes,
    "missing_file": _missing_file,
    "mask_affine_differs": _mask_affine_differs,
    "entry_without_label": _no_label,
    "image_not_a_path": _image_not_a_path,
}


@pytest.mark.parametrize("case", sorted(ENTRY_CASES))
def test_bad_entry_is_an_error_naming_file_and_reason(case, tmp_path):
    entry, bad_file, reason = ENTRY_CASES[case](tmp_path / "data")
    entry = {"label": 1, "subject": "bad", **entry}
    dl = _write(tmp_path, _good_entries(tmp_path / "data") + [entry])
    with pytest.raises(PreflightError) as err:
        preflight_datalist(dl, tmp_path / "out", spatial_dims=3)
    msg = str(err.value)
    assert str(bad_file) in msg, msg
    assert reason in msg, msg
    assert "nothing was trained" in msg
    for good in _good_entries(tmp_path / "data"):  # only the bad entry is reported
        assert f"{good['image']} " not in msg
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert report["n_problems"] >= 1 and any(reason in p["reason"] or reason in p["file"] for p in report["problems"])


@pytest.mark.parametrize(
    "case",
    ["truncated_dicom", "nan_voxels", "four_d_nifti_where_3d_expected", "missing_file", "mask_affine_differs",
     "image_not_a_path"],
)  # fmt: skip
def test_skip_mode_leaves_the_bad_entry_out_and_reports_it(case, tmp_path):
    entry, _, reason = ENTRY_CASES[case](tmp_path / "data")
    good = _good_entries(tmp_path / "data")
    dl = _write(tmp_path, good + [{"label": 1, **entry}])
    used = preflight_datalist(dl, tmp_path / "out", on_error="skip", spatial_dims=3)
    assert Path(used) == tmp_path / "out" / CLEANED_NAME
    cleaned = json.loads(Path(used).read_text())
    assert [e["image"] for e in cleaned["training"]] == [e["image"] for e in good]
    assert cleaned["classes"] == CLASSES
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert report["mode"] == "skip" and report["datalist_used"] == used
    (skipped,) = report["skipped"]
    assert skipped["image"] == entry["image"] and any(reason in r for r in skipped["problems"])
    # a clean datalist is used as it is, and a stale cleaned copy is removed
    clean = _write(tmp_path, good)
    assert preflight_datalist(clean, tmp_path / "out", on_error="skip", spatial_dims=3) == str(clean)
    assert not (tmp_path / "out" / CLEANED_NAME).exists()


def test_empty_datalist(tmp_path):
    dl = _write(tmp_path, [])
    for mode in ("error", "skip"):
        with pytest.raises(PreflightError, match="the datalist has no entries") as err:
            preflight_datalist(dl, tmp_path / "out", on_error=mode)
        assert str(dl) in str(err.value)


def test_unwritable_output_folder(tmp_path):
    dl = _write(tmp_path, _good_entries(tmp_path / "data"))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "runs"  # cannot be created, even by root
    for mode in ("error", "skip"):
        with pytest.raises(PreflightError, match="output folder cannot be created") as err:
            preflight_datalist(dl, out, on_error=mode, spatial_dims=3)
        assert str(out) in str(err.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_output_folder(tmp_path):
    dl = _write(tmp_path, _good_entries(tmp_path / "data"))
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(PreflightError, match="output folder is not writable"):
            preflight_datalist(dl, out, spatial_dims=3)
    finally:
        out.chmod(0o700)


def test_class_absent_from_the_datalist_and_after_skipping(tmp_path):
    good = _good_entries(tmp_path / "data")
    only_benign = [e for e in good if e["label"] == 0]
    dl = _write(tmp_path, only_benign)
    with pytest.raises(PreflightError, match=r"class 1 \('malignant'\) has no entries"):
        preflight_datalist(dl, tmp_path / "out", spatial_dims=3)
    # skipping the only malignant entry would leave the class empty: an error even in skip mode
    entry, _, _ = _nan_voxels(tmp_path / "data")
    dl = _write(tmp_path, only_benign + [{"label": 1, **entry}])
    with pytest.raises(PreflightError, match="after skipping the bad entries"):
        preflight_datalist(dl, tmp_path / "out", on_error="skip", spatial_dims=3)


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_class_absent_from_a_fold(tmp_path):
    # one malignant subject: whichever side of the hold-out it lands on, the other side has no malignant case
    rng = np.random.default_rng(7)
    entries = [
        {"image": str(_nifti(tmp_path / f"b{i}.nii.gz", rng.random((8, 8, 6)))), "label": 0, "subject": f"b{i}"}
        for i in range(6)
    ] + [{"image": str(_nifti(tmp_path / "m0.nii.gz", rng.random((8, 8, 6)))), "label": 1, "subject": "m0"}]
    dl = _write(tmp_path, entries)
    split = train_val_entries(str(dl), val_fraction=0.5, seed=0)
    missing = r"class 1 \('malignant'\) has no entries in the (training|validation)"
    with pytest.raises(PreflightError, match=missing) as e:
        check_split_classes(split, CLASSES, source=f"{dl} (hold-out, seed 0)")
    assert str(dl) in str(e.value) and "b" in str(e.value)
    # a single-subject validation part (leave-one-subject-out) may lack a class: not an error
    loso = {"training": entries[1:], "validation": entries[:1]}
    assert check_split_classes(loso, CLASSES) is loso


def test_every_split_is_checked_and_a_clean_datalist_passes_with_a_data_fingerprint(tmp_path):
    good = _good_entries(tmp_path / "data", 6)
    entry, bad, _ = _constant_image(tmp_path / "data")
    dl = _write(tmp_path, good[:4], validation=good[4:], test=[{"label": 0, **entry}])
    with pytest.raises(PreflightError, match="test:image") as err:
        preflight_datalist(dl, tmp_path / "out", spatial_dims=3)
    assert str(bad) in str(err.value)
    dl = _write(tmp_path, good[:4], validation=good[4:])
    assert preflight_datalist(dl, tmp_path / "out", spatial_dims=3) == str(dl)
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert report["checked"] == {"training": 4, "validation": 2} and report["n_problems"] == 0
    assert len(report["data_sha1"]) == 40


def test_cache_reuses_results_until_a_file_changes(tmp_path, monkeypatch):
    import medmonai.data.preflight as pf

    good = _good_entries(tmp_path / "data")
    dl = _write(tmp_path, good)
    calls = []
    real = pf.check_image
    monkeypatch.setattr(pf, "check_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    preflight_datalist(dl, tmp_path / "out", spatial_dims=3)
    assert len(calls) == 4
    preflight_datalist(dl, tmp_path / "out", spatial_dims=3)
    assert len(calls) == 4  # nothing re-read
    _nifti(Path(good[0]["image"]), np.full((8, 8, 6), 1.0))  # replaced by a constant image
    os.utime(good[0]["image"], ns=(1, 1))
    with pytest.raises(PreflightError, match="constant image"):
        preflight_datalist(dl, tmp_path / "out", spatial_dims=3)
    assert calls[4:] == [good[0]["image"]]


def test_check_command_prints_the_table_and_exits_1(tmp_path, capsys):
    from medmonai.cli.main import main

    entry, bad, reason = _inf_voxels(tmp_path / "data")
    dl = _write(tmp_path, _good_entries(tmp_path / "data") + [{"label": 1, **entry}])
    report = tmp_path / "check.json"
    assert main(["check", str(dl), "--dims", "3", "--report", str(report)]) == 1
    out = capsys.readouterr().out
    assert str(bad) in out and reason in out
    assert json.loads(report.read_text())["problems"][0]["file"] == str(bad)
    dl = _write(tmp_path, _good_entries(tmp_path / "data"))
    assert main(["check", str(dl), "--dims", "3"]) == 0
    assert "no problems found" in capsys.readouterr().out
