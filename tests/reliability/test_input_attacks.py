"""Input attacks of issue 21 (items 3, 4 and 10): every case ends in a clear error naming the file (or the datalist
entry) and the problem, or in a correct result; never a silent wrong one, a hang or a bare traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medmonai.cli.main import main
from medmonai.data.datalist import DatalistError, load_datalist
from medmonai.data.preflight import CLEANED_NAME, REPORT_NAME, PreflightError, preflight_datalist
from tests.data.dicom_factory import write_series

CLASSES = ["benign", "malignant"]


class Hung(BaseException):
    """Raised by the alarm: not an OSError (TimeoutError is one, and readers catch those)."""


@pytest.fixture(autouse=True)
def _no_hang():
    """Fail instead of hanging forever (opening a FIFO blocks): 60 s per test."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def _timeout(*_):
        raise Hung("the check hung (more than 60 s)")

    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(60)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _nifti(path: Path, arr: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    aff = np.diag([1.0, 1.0, 2.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(arr, dtype=np.float32), aff), str(path))
    return path


def _good(root: Path, n: int = 4) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"image": str(_nifti(root / f"good{i}.nii.gz", rng.random((8, 8, 6)))), "label": i % 2, "subject": f"s{i}"}
        for i in range(n)
    ]


def _write(root: Path, training: list, **extra) -> Path:
    dl = root / "datalist.json"
    dl.write_text(json.dumps({"name": "attacks", "classes": CLASSES, "training": training, **extra}))
    return dl


def _png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)
    return path


# ------------------------------------------------------------------------------------ bad entries (item 10)
# each maker gets the data folder (inside the datalist's folder) and returns
# (entry fields, the text the message must name: file or value, words of the reason)


def _affine_mismatch(root: Path):
    img = _nifti(root / "img.nii.gz", np.random.default_rng(1).random((8, 8, 6)))
    shifted = np.diag([1.0, 1.0, 2.0, 1.0])
    shifted[2, 3] = 50.0  # same grid, 50 mm along z
    mask = _nifti(root / "mask_shifted.nii.gz", np.zeros((8, 8, 6)), shifted)
    return {"image": str(img), "mask": str(mask)}, str(mask), "shifted by 50 mm"


def _entry_without_label(root: Path):
    img = _nifti(root / "nolabel.nii.gz", np.random.default_rng(2).random((8, 8, 6)))
    return {"image": str(img), "label": None}, str(img), "no 'label'"


def _image_null(root: Path):
    return {"image": None}, "'image'", "got null"


def _image_number(root: Path):
    return {"image": 12345}, "'image'", "got 12345"


def _rgba_transparent(root: Path):
    arr = np.random.default_rng(3).integers(0, 255, (8, 8, 4), dtype=np.uint8)
    arr[..., 3] = 255
    arr[:4, :, 3] = 0
    return {"image": str(_png(root / "rgba.png", arr, "RGBA"))}, str(root / "rgba.png"), "alpha channel"


def _la_transparent(root: Path):
    arr = np.random.default_rng(4).integers(0, 255, (8, 8, 2), dtype=np.uint8)
    arr[..., 1] = 255
    arr[0, 0, 1] = 10
    return {"image": str(_png(root / "la.png", arr, "LA"))}, str(root / "la.png"), "alpha channel"


def _fifo(root: Path, name: str = "pipe.dcm"):
    root.mkdir(parents=True, exist_ok=True)
    p = root / name
    os.mkfifo(p)
    return {"image": str(p)}, str(p), "FIFO"


def _fifo_png(root: Path):
    return _fifo(root, "pipe.png")


def _fifo_in_dicom_folder(root: Path):
    s = write_series(root / "series_with_fifo", shape=(6, 6, 4))
    os.mkfifo(s.folder / "zz_pipe.dcm")
    return {"image": [str(f) for f in s.files] + [str(s.folder / "zz_pipe.dcm")]}, "zz_pipe.dcm", "FIFO"


def _escaping_path(root: Path):
    return {"image": "../../../../etc/passwd"}, "../../../../etc/passwd", "leads outside the datalist's folder"


def _symlink_loop(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    a, b = root / "loop_a.nii.gz", root / "loop_b.nii.gz"
    os.symlink(b, a)
    os.symlink(a, b)
    return {"image": str(a)}, str(a), "symbolic link loop"


def _broken_symlink(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    a = root / "dangling.nii.gz"
    os.symlink(root / "gone.nii.gz", a)
    return {"image": str(a)}, str(a), "broken symbolic link"


def _dev_zero(root: Path):
    return {"image": "/dev/zero"}, "/dev/zero", "character device"


def _huge_header(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    p = root / "huge.nii"
    hdr = nib.Nifti2Header()  # NIfTI-2: 64-bit dimensions
    hdr.set_data_dtype(np.uint8)
    hdr.set_data_shape((100000, 100000, 100000))
    hdr["vox_offset"] = 544
    with open(p, "wb") as f:
        f.write(hdr.binaryblock)
        f.write(b"\0" * 4 + b"\1" * 64)  # no extension, then a few voxels
    return {"image": str(p)}, str(p), "more than the limit"


def _truncated_nii(root: Path):
    p = _nifti(root / "short.nii", np.random.default_rng(5).random((8, 8, 6)))
    p.write_bytes(p.read_bytes()[:-100])
    return {"image": str(p)}, str(p), "truncated NIfTI"


def _nifti_folder(root: Path):
    folder = root / "nifti_folder"
    for i in range(2):
        _nifti(folder / f"vol{i}.nii.gz", np.random.default_rng(6 + i).random((8, 8, 6)))
    return {"image": str(folder)}, str(folder), "not a DICOM series"


def _truncated_dicom_pixels(root: Path):
    s = write_series(root / "truncated_pixels", shape=(64, 64, 3))  # 8 kB of pixel data: read deferred
    data = s.files[1].read_bytes()
    s.files[1].write_bytes(data[:-3000])
    return {"image": str(s.folder)}, str(s.files[1]), "pixel data has 5192 bytes, expected 8192"


ENTRY_ATTACKS: dict[str, Callable] = {
    "image_mask_affine_mismatch": _affine_mismatch,
    "entry_without_label": _entry_without_label,
    "image_null": _image_null,
    "image_number": _image_number,
    "rgba_alpha_with_transparency": _rgba_transparent,
    "la_alpha_with_transparency": _la_transparent,
    "fifo_as_image": _fifo,
    "fifo_named_png": _fifo_png,
    "fifo_in_a_dicom_file_list": _fifo_in_dicom_folder,
    "path_escaping_the_data_folder": _escaping_path,
    "symlink_loop": _symlink_loop,
    "broken_symlink": _broken_symlink,
    "dev_zero": _dev_zero,
    "header_claiming_1e15_voxels": _huge_header,
    "truncated_uncompressed_nifti": _truncated_nii,
    "nifti_folder_as_image": _nifti_folder,
    "dicom_truncated_inside_pixel_data": _truncated_dicom_pixels,
}


@pytest.mark.parametrize("case", sorted(ENTRY_ATTACKS))
def test_bad_entry_is_an_error_naming_it_and_the_problem(case, tmp_path):
    entry, named, reason = ENTRY_ATTACKS[case](tmp_path / "data")
    entry = {"label": 1, "subject": "bad", **entry}
    dl = _write(tmp_path, _good(tmp_path / "data") + [entry])
    with pytest.raises(PreflightError) as err:
        preflight_datalist(dl, tmp_path / "out", spatial_dims=3)
    msg = str(err.value)
    assert named in msg and reason in msg, msg
    assert "\n4 " in msg, msg  # the table has the bad entry's row (index 4)
    for good in _good(tmp_path / "data"):
        assert f"{good['image']} " not in msg
    # the same through `medmonai check` (no --dims): exit 1, the table printed, no traceback
    assert main(["check", str(dl), "--dims", "3"]) == 1


@pytest.mark.parametrize("case", ["image_null", "fifo_as_image", "path_escaping_the_data_folder", "symlink_loop"])
def test_skip_mode_leaves_the_attack_out(case, tmp_path):
    entry, _, reason = ENTRY_ATTACKS[case](tmp_path / "data")
    good = _good(tmp_path / "data")
    dl = _write(tmp_path, good + [{"label": 1, "subject": "bad", **entry}])
    used = preflight_datalist(dl, tmp_path / "out", on_error="skip", spatial_dims=3)
    assert Path(used) == tmp_path / "out" / CLEANED_NAME
    assert [e["image"] for e in json.loads(Path(used).read_text())["training"]] == [e["image"] for e in good]
    (skipped,) = json.loads((tmp_path / "out" / REPORT_NAME).read_text())["skipped"]
    assert any(reason in r for r in skipped["problems"])


def test_load_datalist_refuses_malformed_and_escaping_entries(tmp_path):
    for value, words in ((None, "got null"), (12345, "got 12345"), ({"a": 1}, "got {"), ("", 'got ""')):
        dl = _write(tmp_path, [{"image": value, "label": 0}])
        with pytest.raises(DatalistError, match="entry 0 of 'training'") as e:
            load_datalist(dl)
        assert str(dl) in str(e.value) and words in str(e.value)
    dl = _write(tmp_path, [{"image": "../../../../etc/passwd", "label": 0}])
    with pytest.raises(DatalistError, match="leads outside the datalist's folder") as e:
        load_datalist(dl)
    assert str(dl) in str(e.value)
    # an absolute path outside the folder is allowed: it states where the data is
    outside = _nifti(tmp_path.parent / f"{tmp_path.name}_elsewhere" / "abs.nii.gz", np.ones((2, 2, 2)))
    dl = _write(tmp_path, [{"image": str(outside), "label": 0}])
    assert load_datalist(dl)[0]["image"] == str(outside)
    shutil.rmtree(outside.parent)


def test_opaque_alpha_is_a_warning_not_an_error(tmp_path):
    rng = np.random.default_rng(7)
    entries = []
    for i in range(4):
        arr = rng.integers(0, 255, (8, 8, 4), dtype=np.uint8)
        arr[..., 3] = 255
        entries.append({"image": str(_png(tmp_path / f"opaque{i}.png", arr, "RGBA")), "label": i % 2})
    dl = _write(tmp_path, entries)
    assert preflight_datalist(dl, tmp_path / "out", spatial_dims=2) == str(dl)
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert len(report["warnings"]) == 4 and all("fully opaque" in w["reason"] for w in report["warnings"])


# ------------------------------------------------------------------------ duplicates and leakage (item 10)


def test_duplicate_entry(tmp_path):
    good = _good(tmp_path / "data")
    dl = _write(tmp_path, good + [dict(good[1], subject="another")])
    with pytest.raises(PreflightError, match="duplicate entry: the same image as entry 1") as e:
        preflight_datalist(dl, tmp_path / "out", spatial_dims=3)
    assert good[1]["image"] in str(e.value)


@pytest.mark.parametrize("how", ["same_path", "copied_file", "symlink"])
def test_same_image_in_training_and_test_under_another_subject(how, tmp_path):
    good = _good(tmp_path / "data")
    src = Path(good[2]["image"])
    if how == "same_path":
        test_image = src
    elif how == "copied_file":
        test_image = tmp_path / "data" / "copy.nii.gz"
        shutil.copy(src, test_image)
    else:
        test_image = tmp_path / "data" / "link.nii.gz"
        os.symlink(src, test_image)
    dl = _write(tmp_path, good, test=[{"image": str(test_image), "label": 0, "subject": "other"}])
    with pytest.raises(PreflightError, match="an image in two splits is data leakage") as e:
        preflight_datalist(dl, tmp_path / "out", spatial_dims=3)
    msg = str(e.value)
    assert str(src) in msg and str(test_image) in msg and "another subject" in msg
    assert main(["check", str(dl), "--dims", "3", "--no-decode"]) == (0 if how == "copied_file" else 1)
    # a run whose leakage guard drops (or ignores) such entries is not stopped here: a warning, left to the guard
    assert preflight_datalist(dl, tmp_path / "out", spatial_dims=3, leakage="drop") == str(dl)
    (warning,) = json.loads((tmp_path / "out" / REPORT_NAME).read_text())["warnings"]
    assert "data leakage" in warning["reason"] and "left to the leakage guard" in warning["reason"]


# ------------------------------------------------------------------------------- datalist files (item 10)


def test_classes_given_as_a_string(tmp_path):
    dl = tmp_path / "datalist.json"
    dl.write_text(json.dumps({"classes": "benign,malignant", "training": _good(tmp_path / "data")}))
    with pytest.raises(DatalistError, match="'classes' must be a list of class names") as e:
        preflight_datalist(dl, None, spatial_dims=3)
    assert str(dl) in str(e.value)
    assert main(["check", str(dl)]) == 2  # the datalist cannot be read as one: exit 2, one line naming it


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"training": [', "not valid JSON"),
        (b'{"name": "\xe9", "training": []}', "not UTF-8 text"),
    ],
    ids=["malformed_json", "latin1_json"],
)
def test_unreadable_datalist_json_names_the_file(content, words, tmp_path, capsys):
    dl = tmp_path / "datalist.json"
    dl.write_bytes(content)
    assert main(["check", str(dl)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medmonai check: error: ") and str(dl) in err and words in err
    assert main(["fingerprint", str(dl)]) == 2
    err = capsys.readouterr().err
    assert str(dl) in err and words in err


def test_json_datalist_with_a_bom_is_accepted(tmp_path):
    good = _good(tmp_path / "data")
    dl = tmp_path / "datalist.json"
    dl.write_bytes(b"\xef\xbb\xbf" + json.dumps({"classes": CLASSES, "training": good}).encode())
    assert preflight_datalist(dl, None, spatial_dims=3) == str(dl)
    assert [e["image"] for e in load_datalist(dl)] == [e["image"] for e in good]


def test_non_utf8_csv_names_the_file_and_line(tmp_path, capsys):
    _png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes("path,label\na.png,benign\na.png,b\xe9nin\n".encode("latin-1"))
    assert main(["datalist", "csv", str(csv_path), "--out", str(tmp_path / "dl.json")]) == 2
    err = capsys.readouterr().err
    assert str(csv_path) in err and "not UTF-8" in err and "line 3" in err
    assert not (tmp_path / "dl.json").exists()


# ------------------------------------------------------------------------------------- dims (item 10)


def test_check_infers_2d_for_a_2d_dicom_datalist(tmp_path, capsys):
    for i in range(4):
        write_series(tmp_path / "dcm" / f"p{i}", shape=(6, 5, 1), patient_id=f"P{i}", seed=i)
    dl = tmp_path / "dl.json"
    assert main(["datalist", "dicom", str(tmp_path / "dcm"), "--out", str(dl)]) == 0
    assert json.loads(dl.read_text())["tensorImageSize"] == "2D"
    capsys.readouterr()
    assert main(["check", str(dl), "--report", str(tmp_path / "r.json")]) == 0, capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["spatial_dims"] == 2


def test_mixed_2d_and_3d_without_dims_is_an_error(tmp_path):
    good = _good(tmp_path / "data", 2)
    rng = np.random.default_rng(8)
    flat = [
        {"image": str(_png(tmp_path / f"flat{i}.png", rng.integers(0, 255, (6, 6), np.uint8))), "label": i % 2}
        for i in range(2)
    ]
    dl = _write(tmp_path, good + flat)
    with pytest.raises(PreflightError, match="mixed 2D and 3D images") as e:
        preflight_datalist(dl, None)
    assert "flat0.png" in str(e.value) and "good0.nii.gz" in str(e.value)


# --------------------------------------------------------------------------- truncated DICOM (item 4)


def test_dicom_truncated_inside_pixel_data(tmp_path, capsys):
    root = tmp_path / "dcm"
    for i in range(3):
        write_series(root / f"p{i}", shape=(64, 64, 3), patient_id=f"P{i}", seed=i)
    dl = tmp_path / "dl.json"
    assert main(["datalist", "dicom", str(root), "--out", str(dl)]) == 0  # built while the files were whole
    bad = sorted((root / "p2").glob("*.dcm"))[0]
    bad.write_bytes(bad.read_bytes()[:-3000])
    capsys.readouterr()
    # the scan refuses it, naming the file and the byte counts ...
    assert main(["datalist", "dicom", str(root), "--out", str(tmp_path / "new.json")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "corrupt or truncated" in err and "5192 bytes, expected 8192" in err
    assert not (tmp_path / "new.json").exists()
    # ... --skip-bad leaves it (and its series) out with that reason ...
    assert main(["datalist", "dicom", str(root), "--out", str(tmp_path / "new.json"), "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert str(bad) in out and "corrupt or truncated" in out
    assert len(json.loads((tmp_path / "new.json").read_text())["training"]) == 2
    # ... and reading it (fingerprint of the older datalist) names the file and the real cause
    assert main(["fingerprint", str(dl), "--out", str(tmp_path / "fp.json")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "5192 bytes, expected 8192" in err and "ImageIO" not in err


# ---------------------------------------------------------------------------- folder subjects (item 3)


def _folder_tree(root: Path) -> None:
    for rel, value in (
        ("train/Benign/1.jpg", 10),
        ("train/Malignant/1.jpg", 200),
        ("test/Benign/1.jpg", 90),
        ("test/Malignant/2.jpg", 150),
    ):
        _png(root / rel, np.full((6, 6), value, np.uint8))


def test_folder_builder_gives_one_subject_per_file(tmp_path):
    from medmonai.data.splits import check_leakage

    _folder_tree(tmp_path / "tree")
    out = tmp_path / "dl.json"
    assert main(["datalist", "folder", str(tmp_path / "tree"), "--out", str(out)]) == 0
    raw = json.loads(out.read_text())
    subjects = [e["subject"] for k in ("training", "test") for e in raw[k]]
    assert len(set(subjects)) == len(subjects) == 4
    assert {"train/Benign/1", "train/Malignant/1", "test/Benign/1"} <= set(subjects)
    check_leakage(
        {"training": load_datalist(out, "training"), "test": load_datalist(out, "test")}, group_key="subject"
    )  # no refusal


def test_folder_builder_groups_by_a_regex_over_the_relative_path(tmp_path):
    tree = tmp_path / "tree"
    for rel in ("train/Benign/pat01/a.png", "train/Benign/pat01/b.png", "train/Benign/pat02/a.png"):
        _png(tree / rel, np.zeros((4, 4), np.uint8))
    _png(tree / "train/Malignant/pat03/a.png", np.zeros((4, 4), np.uint8))
    out = tmp_path / "dl.json"
    assert main(["datalist", "folder", str(tree), "--out", str(out), "--subject-regex", r"/(?P<subject>pat\d+)/"]) == 0
    entries = load_datalist(out)
    got = sorted((Path(e["image"]).relative_to(tree).as_posix(), e["subject"]) for e in entries)
    assert got == [
        ("train/Benign/pat01/a.png", "pat01"),
        ("train/Benign/pat01/b.png", "pat01"),
        ("train/Benign/pat02/a.png", "pat02"),
        ("train/Malignant/pat03/a.png", "pat03"),
    ]


def test_folder_builder_groups_by_a_subjects_csv(tmp_path):
    _folder_tree(tmp_path / "tree")
    csv_path = tmp_path / "subjects.csv"
    csv_path.write_text(
        "path,subject\ntrain/Benign/1.jpg,P1\ntrain/Malignant/1.jpg,P2\ntest/Benign/1.jpg,P3\ntest/Malignant/2.jpg,P3\n"
    )
    out = tmp_path / "dl.json"
    assert main(["datalist", "folder", str(tmp_path / "tree"), "--out", str(out), "--subjects-csv", str(csv_path)]) == 0
    raw = json.loads(out.read_text())
    assert [e["subject"] for e in raw["training"]] == ["P1", "P2"]
    assert sorted(e["subject"] for e in raw["test"]) == ["P3", "P3"]
    csv_path.write_text("path,subject\ntrain/Benign/1.jpg,P1\n")
    with pytest.raises(DatalistError, match="not listed in the subjects CSV"):
        from medmonai.data.builders import datalist_from_image_folder

        datalist_from_image_folder(tmp_path / "tree", subjects_csv=csv_path)


def test_csv_builder_without_subject_column_gives_one_subject_per_file(tmp_path):
    from medmonai.data.builders import datalist_from_csv

    for rel in ("a/1.png", "b/1.png"):
        _png(tmp_path / rel, np.zeros((4, 4), np.uint8))
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("path,label\na/1.png,x\nb/1.png,y\n")
    dl = datalist_from_csv(csv_path)
    assert [e["subject"] for e in dl["training"]] == ["a/1", "b/1"]
