from __future__ import annotations

import csv
import json
import os
import re
import warnings
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage
from PIL import Image

from medmonai.data.builders import (
    datalist_from_csv,
    datalist_from_dicom_folder,
    datalist_from_image_folder,
    datalist_from_medmnist,
    datalist_from_msd,
)
from medmonai.data.datalist import DatalistError, check_entries, load_datalist, write_datalist
from medmonai.data.dicom import DicomError, DicomSeriesReader, is_error
from medmonai.utils import shared_data_dir
from tests.data.dicom_factory import write_series

SHARED = shared_data_dir()


def _load(path, reader=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LoadImage(image_only=True)(path, reader=reader) if reader else LoadImage(image_only=True)(path)


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------------ MedMNIST


def _npz(path, image_shape, counts=(6, 2, 3), n_classes=2, dtype=np.uint8, label_cols=1, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), counts):
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(n, *image_shape)).astype(dtype)
        labels = np.arange(n) % n_classes
        arrays[f"{split}_labels"] = np.repeat(labels[:, None], label_cols, axis=1).astype(np.uint8)
    np.savez(path, **arrays)
    return arrays


def test_medmnist_2d_grey(tmp_path):
    arrays = _npz(tmp_path / "breastmnist.npz", (7, 5))
    dl = datalist_from_medmnist(tmp_path / "breastmnist.npz", tmp_path / "out", progress=False)
    assert dl["classes"] == ["malignant", "normal_benign"]
    assert dl["tensorImageSize"] == "2D" and "no patient ids" in dl["description"]
    assert [len(dl[k]) for k in ("training", "validation", "test")] == [6, 2, 3]
    subjects = [e["subject"] for k in ("training", "validation", "test") for e in dl[k]]
    assert len(set(subjects)) == len(subjects) == 11
    for key, split in (("training", "train"), ("validation", "val"), ("test", "test")):
        for e in dl[key]:
            assert e["image"].endswith(".png") and e["label"] == int(arrays[f"{split}_labels"][e["index"], 0])
    e = dl["validation"][1]
    original = arrays["val_images"][1]
    np.testing.assert_array_equal(np.asarray(Image.open(e["image"])), original)  # lossless, rows = H
    img = _load(e["image"])  # MONAI's PILReader: arr[i, j] = image[j, i]
    assert tuple(img.shape) == (5, 7)
    np.testing.assert_array_equal(img.numpy(), original.T)
    # round trip through the datalist file: relative paths, loads back
    out = write_datalist(tmp_path / "out" / "datalist.json", dl)
    raw = json.loads(out.read_text())
    first = dl["training"][0]
    assert raw["training"][0]["image"] == f"train/{dl['classes'][first['label']]}/breastmnist_train_00000.png"
    assert check_entries(load_datalist(out, "test"), dl["classes"]) == []


def test_medmnist_2d_rgb_and_unknown_name(tmp_path):
    arrays = _npz(tmp_path / "mystery_64.npz", (6, 4, 3), n_classes=3)
    dl = datalist_from_medmnist(tmp_path / "mystery_64.npz", tmp_path / "out", progress=False)
    assert dl["classes"] == ["class_0", "class_1", "class_2"] and dl["name"] == "mystery"
    e = dl["training"][2]
    assert e["label"] == 2
    img = _load(e["image"])
    assert tuple(img.shape) == (4, 6, 3)
    np.testing.assert_array_equal(img.numpy(), np.transpose(arrays["train_images"][2], (1, 0, 2)))


def test_medmnist_ordinal_sets_are_marked(tmp_path):
    from medmonai.data.datalist import is_ordinal

    _npz(tmp_path / "retinamnist.npz", (6, 4, 3), n_classes=5, counts=(10, 5, 5))
    dl = datalist_from_medmnist(tmp_path / "retinamnist.npz", tmp_path / "out", progress=False)
    assert dl["ordinal"] is True and dl["classes"][0] == "grade_0" and is_ordinal(dl)
    _npz(tmp_path / "bloodmnist.npz", (6, 4, 3), n_classes=8, counts=(16, 8, 8))
    assert not is_ordinal(datalist_from_medmnist(tmp_path / "bloodmnist.npz", tmp_path / "out2", progress=False))


def test_medmnist_3d(tmp_path):
    arrays = _npz(tmp_path / "nodulemnist3d.npz", (4, 5, 6), counts=(3, 1, 2))
    dl = datalist_from_medmnist(tmp_path / "nodulemnist3d.npz", tmp_path / "out", progress=False)
    assert dl["classes"] == ["benign", "malignant"] and dl["tensorImageSize"] == "3D"
    e = dl["test"][1]
    vol = arrays["test_images"][1]  # (D, H, W)
    nii = nib.load(e["image"])
    np.testing.assert_array_equal(nii.affine, np.eye(4))
    np.testing.assert_array_equal(np.asarray(nii.dataobj), np.transpose(vol, (2, 1, 0)))
    img = _load(e["image"])
    assert tuple(img.shape) == (6, 5, 4)
    np.testing.assert_array_equal(img.numpy(), np.transpose(vol, (2, 1, 0)))


def test_medmnist_errors(tmp_path):
    _npz(tmp_path / "chestmnist.npz", (4, 4), label_cols=14)
    with pytest.raises(DatalistError, match="multi-label"):
        datalist_from_medmnist(tmp_path / "chestmnist.npz", tmp_path / "o", progress=False)
    _npz(tmp_path / "three.npz", (4, 4), n_classes=3)
    with pytest.raises(DatalistError, match=r"train_labels'\[2\] = 2 is outside the class list \['a', 'b'\]"):
        datalist_from_medmnist(tmp_path / "three.npz", tmp_path / "o", classes=["a", "b"], progress=False)
    with pytest.raises(DatalistError, match="does not exist"):
        datalist_from_medmnist(tmp_path / "nope.npz", tmp_path / "o", progress=False)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DatalistError, match="not a MedMNIST file"):
        datalist_from_medmnist(tmp_path / "other.npz", tmp_path / "o", progress=False)


# -------------------------------------------------------------------------------------------- image folder


def _png(path, value=0, shape=(4, 3)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return path


def test_image_folder_class_folders(tmp_path):
    _png(tmp_path / "zebra" / "p1_a.png", 1)
    _png(tmp_path / "zebra" / "sub" / "p2_b.PNG", 2)  # nested, upper-case extension
    _png(tmp_path / "ant" / "p1_c.png", 3)
    (tmp_path / "ant" / "notes.txt").write_text("ignored")
    (tmp_path / "ant" / ".hidden.png").write_bytes(b"ignored")
    dl = datalist_from_image_folder(tmp_path)
    assert dl["classes"] == ["ant", "zebra"]
    assert set(dl) >= {"training"} and "validation" not in dl
    got = {os.path.basename(e["image"]): (e["label"], e["subject"]) for e in dl["training"]}
    # one subject per file, named by its relative path without extension (issue 21: no invented shared subjects)
    assert got == {"p1_c.png": (0, "ant/p1_c"), "p1_a.png": (1, "zebra/p1_a"), "p2_b.PNG": (1, "zebra/sub/p2_b")}
    dl = datalist_from_image_folder(tmp_path, subject_regex=r"^(p\d+)_", classes=["zebra", "ant", "bee"])
    got = {os.path.basename(e["image"]): (e["label"], e["subject"]) for e in dl["training"]}
    assert got == {"p1_c.png": (1, "p1"), "p1_a.png": (0, "p1"), "p2_b.PNG": (0, "p2")}
    assert _load(dl["training"][0]["image"]).shape == (3, 4)


def test_image_folder_split_folders(tmp_path):
    for split, n in (("Train", 3), ("valid", 1), ("testing", 2)):
        for c in ("benign", "malignant"):
            for i in range(n):
                _png(tmp_path / split / c / f"{split}_{c}_{i}.png", i)
    dl = datalist_from_image_folder(tmp_path)
    assert dl["classes"] == ["benign", "malignant"]
    assert [len(dl[k]) for k in ("training", "validation", "test")] == [6, 2, 4]
    assert Counter(e["label"] for e in dl["test"]) == {0: 2, 1: 2}
    assert all("valid_" in os.path.basename(e["image"]) for e in dl["validation"])


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatalistError, match="does not exist"):
        datalist_from_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatalistError, match="empty folder"):
        datalist_from_image_folder(tmp_path / "empty")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "x.txt").write_text("x")
    with pytest.raises(DatalistError, match=r"noimg/a: class folder has no images"):
        datalist_from_image_folder(tmp_path / "noimg")
    _png(tmp_path / "flat" / "x.png")
    with pytest.raises(DatalistError, match="images found directly in the folder"):
        datalist_from_image_folder(tmp_path / "flat")
    _png(tmp_path / "s" / "train" / "a" / "1.png")
    _png(tmp_path / "s" / "test" / "a" / "2.png")
    _png(tmp_path / "s" / "test" / "b" / "3.png")
    with pytest.raises(DatalistError, match=r"\['b'\] present in the test split but not in training"):
        datalist_from_image_folder(tmp_path / "s")
    _png(tmp_path / "m" / "train" / "a" / "1.png")
    _png(tmp_path / "m" / "b" / "2.png")
    with pytest.raises(DatalistError, match="mixes split folders"):
        datalist_from_image_folder(tmp_path / "m")
    _png(tmp_path / "c" / "a" / "1.png")
    with pytest.raises(DatalistError, match=r"\['a'\] are not in the given classes"):
        datalist_from_image_folder(tmp_path / "c", classes=["x"])
    with pytest.raises(DatalistError, match="1.png: subject_regex"):
        datalist_from_image_folder(tmp_path / "c", subject_regex=r"^patient(\d+)")


# ------------------------------------------------------------------------------------------------------ CSV


def test_csv_names_ints_metadata_and_splits(tmp_path):
    for n in ("a", "b", "c"):
        _png(tmp_path / "img" / f"{n}.png")
    csv_path = _write_csv(
        tmp_path / "labels.csv",
        ["path", "label", "subject", "age", "site", "fold"],
        [["img/a.png", "malignant", "s1", "61", "A", "train"], ["img/b.png", "benign", "s2", "48.5", "B", "val"],
         [str(tmp_path / "img" / "c.png"), "benign", "s2", "", "B", "Test"]],
    )  # fmt: skip
    dl = datalist_from_csv(csv_path, split_col="fold")
    assert dl["classes"] == ["benign", "malignant"]
    a, b, c = dl["training"][0], dl["validation"][0], dl["test"][0]
    assert a["image"] == str(tmp_path / "img" / "a.png") and a["label"] == 1 and a["subject"] == "s1"
    assert a["age"] == 61 and b["age"] == 48.5 and c["age"] == "" and a["site"] == "A" and "fold" not in a
    assert b["label"] == 0 and c["subject"] == "s2"
    dl = datalist_from_csv(csv_path, classes=["malignant", "benign"])
    assert [e["label"] for e in dl["training"]] == [0, 1, 1] and len(dl["training"]) == 3
    # integer labels, other column names, no subject column
    csv2 = _write_csv(tmp_path / "ints.csv", ["file", "y"], [["img/a.png", "1"], ["img/b.png", "0"]])
    dl = datalist_from_csv(csv2, path_col="file", label_col="y", subject_col=None)
    assert dl["classes"] == ["class_0", "class_1"] and [e["label"] for e in dl["training"]] == [1, 0]
    assert dl["training"][0]["subject"] == "img/a"  # one subject per file: relative path without extension
    dl = datalist_from_csv(csv2, path_col="file", label_col="y", subject_col=None, classes=["neg", "pos"])
    assert dl["classes"] == ["neg", "pos"] and dl["training"][0]["label"] == 1


def test_csv_errors(tmp_path):
    _png(tmp_path / "a.png")
    bad = _write_csv(
        tmp_path / "bad.csv", ["path", "label", "subject"], [["a.png", "benign", "s"], ["a.png", "cat", "t"]]
    )
    with pytest.raises(DatalistError, match=r"bad.csv row 3: label 'cat' is not one of the classes"):
        datalist_from_csv(bad, classes=["benign", "malignant"])
    with pytest.raises(DatalistError, match=r"b2.csv row 2: label 5 is outside the class list"):
        datalist_from_csv(_write_csv(tmp_path / "b2.csv", ["path", "label", "subject"], [["a.png", "5", "s"]]),
                          classes=["x", "y"])  # fmt: skip
    with pytest.raises(DatalistError, match=r"bad.csv: missing column\(s\) \['diagnosis'\]"):
        datalist_from_csv(bad, label_col="diagnosis")
    with pytest.raises(DatalistError, match="row 2: file does not exist"):
        datalist_from_csv(_write_csv(tmp_path / "m.csv", ["path", "label", "subject"], [["zz.png", "a", "s"]]))
    with pytest.raises(DatalistError, match="row 2: unknown split 'later'"):
        datalist_from_csv(
            _write_csv(tmp_path / "s.csv", ["path", "label", "subject", "split"], [["a.png", "a", "s", "later"]]),
            split_col="split",
        )
    with pytest.raises(DatalistError, match="row 2: empty label"):
        datalist_from_csv(_write_csv(tmp_path / "e.csv", ["path", "label", "subject"], [["a.png", "", "s"]]))


# ---------------------------------------------------------------------------------------------------- DICOM


@pytest.fixture()
def dicom_tree(tmp_path):
    root = tmp_path / "dicom"
    s1 = write_series(root / "P1" / "t1", (4, 3, 3), patient_id="P1", study_uid="1.1")
    s2 = write_series(root / "P2" / "t1", (4, 3, 4), patient_id="P2", study_uid="2.1", seed=1)
    # two series of P2 in one folder: entries must list their files
    s3 = write_series(root / "P2" / "mixed", (4, 3, 2), patient_id="P2", study_uid="2.1", names=["a1.dcm", "a2.dcm"])
    s4 = write_series(root / "P2" / "mixed", (4, 3, 2), patient_id="P2", study_uid="2.1", names=["b1.dcm", "b2.dcm"])
    return root, [s1, s2, s3, s4]


def test_dicom_folder_without_labels(dicom_tree):
    root, (s1, s2, s3, s4) = dicom_tree
    dl, problems = datalist_from_dicom_folder(root, progress=False)
    assert problems == [] and "classes" not in dl
    by_uid = {e["SeriesInstanceUID"]: e for e in dl["training"]}
    assert len(by_uid) == 4 and all("label" not in e for e in by_uid.values())
    assert by_uid[s1.series_uid]["image"] == str(s1.folder) and by_uid[s1.series_uid]["subject"] == "P1"
    assert by_uid[s3.series_uid]["image"] == [str(f) for f in s3.files]
    assert by_uid[s2.series_uid]["shape"] == [4, 3, 4] and by_uid[s2.series_uid]["n_slices"] == 4
    assert "PatientName" not in json.dumps(dl) and "Test^Patient" not in json.dumps(dl)
    for e, s in ((by_uid[s2.series_uid], s2), (by_uid[s4.series_uid], s4)):
        np.testing.assert_allclose(_load(e["image"], DicomSeriesReader()).numpy(), s.physical, atol=1e-4)


def test_dicom_folder_labels_by_patient_and_series(dicom_tree, tmp_path):
    root, (s1, s2, s3, s4) = dicom_tree
    csv_p = _write_csv(tmp_path / "by_patient.csv", ["PatientID", "label"], [["P1", "tumour"], ["P2", "normal"],
                                                                            ["P9", "normal"]])  # fmt: skip
    dl, problems = datalist_from_dicom_folder(root, csv_p, key="PatientID", progress=False)
    assert dl["classes"] == ["normal", "tumour"]
    labels = {e["SeriesInstanceUID"]: e["label"] for e in dl["training"]}
    assert labels == {s1.series_uid: 1, s2.series_uid: 0, s3.series_uid: 0, s4.series_uid: 0}
    assert [p.reason for p in problems] == ["label row PatientID = 'P9' matches no DICOM series"]

    csv_s = _write_csv(tmp_path / "by_series.csv", ["SeriesInstanceUID", "dx"],
                       [[s1.series_uid, "1"], [s2.series_uid, "0"], [s3.series_uid, "1"]])  # fmt: skip
    with pytest.raises(DatalistError, match=f"series {s4.series_uid} .*no label row with SeriesInstanceUID"):
        datalist_from_dicom_folder(root, csv_s, key="SeriesInstanceUID", label_col="dx", progress=False)
    dl, problems = datalist_from_dicom_folder(
        root, csv_s, key="SeriesInstanceUID", label_col="dx", classes=["neg", "pos"], on_error="skip", progress=False
    )
    assert {e["SeriesInstanceUID"]: e["label"] for e in dl["training"]} == {
        s1.series_uid: 1,
        s2.series_uid: 0,
        s3.series_uid: 1,
    }
    assert len(problems) == 1 and s4.series_uid in problems[0].reason and problems[0].key == "label"
    with pytest.raises(DatalistError, match=r"by_series.csv: missing column\(s\) \['label'\]"):
        datalist_from_dicom_folder(root, csv_s, key="SeriesInstanceUID", progress=False)


def test_dicom_folder_bad_series(dicom_tree):
    root, (s1, s2, *_) = dicom_tree
    os.unlink(s2.files[1])  # a missing slice in P2/t1
    with pytest.raises(DicomError, match="missing slice"):
        datalist_from_dicom_folder(root, progress=False)
    dl, problems = datalist_from_dicom_folder(root, on_error="skip", progress=False)
    assert len(dl["training"]) == 3 and s2.series_uid not in {e["SeriesInstanceUID"] for e in dl["training"]}
    errors = [p for p in problems if is_error(p)]
    assert len(errors) == 1 and str(s2.files[0]) in errors[0].reason


# ------------------------------------------------------------------------------------------------------ MSD


def _nii(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), path)


def test_msd_layout(tmp_path):
    for case in ("task_001", "task_002"):
        _nii(tmp_path / "imagesTr" / f"{case}.nii.gz", np.zeros((3, 4, 5), np.float32))
        _nii(tmp_path / "labelsTr" / f"{case}.nii.gz", np.ones((3, 4, 5), np.uint8))
    _nii(tmp_path / "imagesTs" / "task_003.nii.gz", np.zeros((3, 4, 5), np.float32))
    (tmp_path / "imagesTr" / "._task_001.nii.gz").write_bytes(b"mac junk")
    meta = {
        "name": "Task",
        "description": "fake",
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "organ"},
        "training": [
            {"image": "./imagesTr/task_001.nii.gz", "label": "./labelsTr/task_001.nii.gz"},
            {"image": "./imagesTr/task_002.nii.gz", "label": "./labelsTr/task_002.nii.gz"},
            {"image": "./imagesTr/._task_001.nii.gz", "label": "./labelsTr/._task_001.nii.gz"},
        ],
        "test": ["./imagesTs/task_003.nii.gz"],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    dl = datalist_from_msd(tmp_path)
    assert dl["name"] == "Task" and dl["mask_labels"] == {"0": "background", "1": "organ"}
    assert dl["modality"] == {"0": "MRI"} and dl["tensorImageSize"] == "3D" and "classes" not in dl
    assert dl["training"] == [
        {"image": str(tmp_path / f"imagesTr/{c}.nii.gz"), "mask": str(tmp_path / f"labelsTr/{c}.nii.gz"), "subject": c}
        for c in ("task_001", "task_002")
    ]
    assert dl["test"] == [{"image": str(tmp_path / "imagesTs/task_003.nii.gz"), "subject": "task_003"}]
    # no training list: pair imagesTr with labelsTr
    del meta["training"]
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    assert [e["subject"] for e in datalist_from_msd(tmp_path)["training"]] == ["task_001", "task_002"]
    # a listed file that is missing
    meta["training"] = [{"image": "./imagesTr/task_009.nii.gz", "label": "./labelsTr/task_009.nii.gz"}]
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatalistError, match="image file does not exist: .*task_009"):
        datalist_from_msd(tmp_path)
    with pytest.raises(DatalistError, match="no dataset.json"):
        datalist_from_msd(tmp_path / "imagesTr")


# ------------------------------------------------------------------------------------------------ real data


def _need(path: Path):
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set MEDMONAI_SHARED_DATA to the shared data folder)")


@pytest.mark.shared_data
def test_real_breastmnist(tmp_path):
    npz = SHARED / "medmnist" / "breastmnist.npz"
    _need(npz)
    dl = datalist_from_medmnist(npz, tmp_path, progress=False)
    assert [len(dl[k]) for k in ("training", "validation", "test")] == [546, 78, 156]
    assert dl["classes"] == ["malignant", "normal_benign"]
    assert Counter(e["label"] for e in dl["training"]) == {0: 147, 1: 399}
    assert Counter(e["label"] for e in dl["validation"]) == {0: 21, 1: 57}
    assert Counter(e["label"] for e in dl["test"]) == {0: 42, 1: 114}
    original = np.load(npz)["test_images"][7]
    np.testing.assert_array_equal(_load(dl["test"][7]["image"]).numpy(), original.T)


@pytest.mark.shared_data
def test_real_msd_hippocampus():
    folder = SHARED / "msd_hippocampus"
    _need(folder)
    dl = datalist_from_msd(folder)
    assert len(dl["training"]) == 260 and "test" not in dl
    assert dl["mask_labels"] == {"0": "background", "1": "Anterior", "2": "Posterior"}
    assert all(os.path.isfile(e["image"]) and os.path.isfile(e["mask"]) for e in dl["training"])
    assert len({e["subject"] for e in dl["training"]}) == 260
    assert check_entries(dl["training"]) == []


@pytest.mark.shared_data
def test_real_mr_brain_dicom_folder():
    folder = SHARED / "dicom" / "mr_brain"
    _need(folder)
    dl, problems = datalist_from_dicom_folder(folder, progress=False)
    assert problems == [] and len(dl["training"]) == 4
    assert Counter(e["subject"] for e in dl["training"]) == {"PGBM-002": 1, "PGBM-003": 3}
    assert all(os.path.isdir(e["image"]) for e in dl["training"])
    shapes = sorted(tuple(e["shape"]) for e in dl["training"])
    assert shapes == [(34, 50, 40), (35, 51, 32), (280, 320, 22), (280, 320, 22)]


def test_medmnist_tree_reads_back_with_the_folder_builder(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "breastmnist.npz"
    arrays = {}
    for s, n in (("train", 6), ("val", 2), ("test", 3)):
        arrays[f"{s}_images"] = rng.integers(0, 256, size=(n, 5, 7), dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(npz, **arrays)
    dl = datalist_from_medmnist(npz, tmp_path / "out", progress=False)
    again = datalist_from_image_folder(tmp_path / "out")
    assert again["classes"] == dl["classes"]
    for split in ("training", "validation", "test"):
        a = sorted((e["image"], e["label"]) for e in dl[split])
        b = sorted((str(e["image"]), e["label"]) for e in again[split])
        assert a == b


def test_dicom_folder_pseudonymised_subjects(dicom_tree, tmp_path):
    from medmonai.data.builders import pseudonym, read_pseudonym_key

    root, (s1, s2, s3, s4) = dicom_tree
    key_file = tmp_path / "key.txt"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    key = read_pseudonym_key(key_file)
    assert key == b"0123456789abcdef0123456789abcdef"  # whitespace stripped
    csv_p = _write_csv(tmp_path / "labels.csv", ["PatientID", "label"], [["P1", "tumour"], ["P2", "normal"]])
    dl, problems = datalist_from_dicom_folder(root, csv_p, key="PatientID", progress=False, pseudonym_key=key)
    assert problems == []
    subject = {e["SeriesInstanceUID"]: e["subject"] for e in dl["training"]}
    label = {e["SeriesInstanceUID"]: e["label"] for e in dl["training"]}
    # the CSV still joins on the raw PatientID; a patient's series share one pseudonym, patients differ
    assert label == {s1.series_uid: 1, s2.series_uid: 0, s3.series_uid: 0, s4.series_uid: 0}
    assert subject[s2.series_uid] == subject[s3.series_uid] == subject[s4.series_uid] != subject[s1.series_uid]
    assert subject[s1.series_uid] == pseudonym("P1", key) and re.fullmatch(r"sub-[0-9a-f]{16}", subject[s1.series_uid])
    text = json.dumps(dl)
    assert '"P1"' not in text and '"P2"' not in text and "pseudonym" in dl["description"]
    assert pseudonym("P1", key) != pseudonym("P1", b"another key of 16+ bytes")  # keyed, not a plain hash
    # a missing or short key file is a clear error naming the file
    with pytest.raises(DatalistError, match=r"absent.txt: cannot read the pseudonym key"):
        read_pseudonym_key(tmp_path / "absent.txt")
    (tmp_path / "short.txt").write_text("secret")
    with pytest.raises(DatalistError, match=r"short.txt: the pseudonym key has 6 bytes"):
        read_pseudonym_key(tmp_path / "short.txt")


# ---------------------------------------------------------------------- issue 21: subjects, encodings, dims


def test_image_folder_subjects_default_regex_and_csv(tmp_path):
    for rel in ("train/Benign/1.jpg", "train/Malignant/1.jpg", "test/Benign/1.jpg", "test/Malignant/p2_x.png"):
        _png(tmp_path / rel, 5)
    dl = datalist_from_image_folder(tmp_path)
    subjects = [e["subject"] for k in ("training", "test") for e in dl[k]]
    assert subjects == ["train/Benign/1", "train/Malignant/1", "test/Benign/1", "test/Malignant/p2_x"]
    assert "one per file" in dl["description"]
    # a regex over the relative path: named group, else first group, else the whole match
    dl = datalist_from_image_folder(tmp_path, subject_regex=r"^(?P<split>\w+)/(?P<subject>\w+)/")
    assert [e["subject"] for e in dl["training"]] == ["Benign", "Malignant"]
    dl = datalist_from_image_folder(tmp_path, subject_regex=r"^\w+")
    assert {e["subject"] for e in dl["test"]} == {"test"}
    # a pattern written for the file name (anchored at its start) still works: the name is tried second
    dl = datalist_from_image_folder(tmp_path, subject_regex=r"^(\w)")
    assert [e["subject"] for e in dl["test"]] == ["t", "t"]  # matched on the path first
    dl = datalist_from_image_folder(tmp_path, subject_regex=r"^(\d|p\d)[._]")
    assert [e["subject"] for e in dl["test"]] == ["1", "p2"]
    with pytest.raises(DatalistError, match="not a valid regular expression"):
        datalist_from_image_folder(tmp_path, subject_regex="(")
    with pytest.raises(DatalistError, match="not both"):
        datalist_from_image_folder(tmp_path, subject_regex="x", subjects_csv=tmp_path / "s.csv")
    csv_path = _write_csv(
        tmp_path / "s.csv", ["path", "subject"],
        [["train/Benign/1.jpg", "A"], ["train/Malignant/1.jpg", "B"], ["test/Benign/1.jpg", "A"],
         [str(tmp_path / "test/Malignant/p2_x.png"), "C"]],
    )  # fmt: skip
    dl = datalist_from_image_folder(tmp_path, subjects_csv=csv_path)
    assert [e["subject"] for k in ("training", "test") for e in dl[k]] == ["A", "B", "A", "C"]
    bad = _write_csv(tmp_path / "bad.csv", ["path", "subject"], [["train/Benign/nope.jpg", "A"]])
    with pytest.raises(DatalistError, match=r"bad.csv row 2: file does not exist"):
        datalist_from_image_folder(tmp_path, subjects_csv=bad)


def test_csv_encodings(tmp_path):
    _png(tmp_path / "a.png")
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbfpath,label\na.png,x\n")  # Excel's "CSV UTF-8" writes a BOM
    assert datalist_from_csv(p)["training"][0]["label"] == 0
    p = tmp_path / "latin.csv"
    p.write_bytes("path,label\na.png,b\xe9nin\n".encode("latin-1"))
    with pytest.raises(DatalistError, match=r"latin.csv: not UTF-8 text \(line 2"):
        datalist_from_csv(p)


def test_dicom_folder_datalist_states_its_dims(tmp_path):
    for i in range(2):
        write_series(tmp_path / "flat" / f"p{i}", shape=(6, 5, 1), patient_id=f"P{i}", seed=i)
        write_series(tmp_path / "vol" / f"p{i}", shape=(6, 5, 3), patient_id=f"P{i}", seed=i)
    assert datalist_from_dicom_folder(tmp_path / "flat", progress=False)[0]["tensorImageSize"] == "2D"
    assert datalist_from_dicom_folder(tmp_path / "vol", progress=False)[0]["tensorImageSize"] == "3D"
    assert "tensorImageSize" not in datalist_from_dicom_folder(tmp_path, progress=False)[0]  # a mix: unstated
