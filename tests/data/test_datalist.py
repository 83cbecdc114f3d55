from __future__ import annotations

import json
from pathlib import Path

import pytest

from medmonai.data.datalist import (
    DatalistError,
    check_entries,
    load_datalist,
    load_datalist_file,
    make_datalist,
    validate_entries,
    write_datalist,
)
from medmonai.data.defaults import held_out_entries


def _touch(path, content=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_write_then_load_resolves_relative_paths(tmp_path):
    img = _touch(tmp_path / "imgs" / "a.nii.gz")
    series = [_touch(tmp_path / "dcm" / f"{i}.dcm") for i in range(3)]
    dl = make_datalist(
        {
            "training": [
                {"image": str(img), "label": 1, "subject": "s1"},
                {"image": [str(s) for s in series], "label": 0, "subject": "s2"},
            ],
            "test": [{"image": str(_touch(tmp_path / "imgs" / "t.nii.gz")), "label": 0, "subject": "s3"}],
        },
        classes=["a", "b"],
        name="t",
    )
    path = write_datalist(tmp_path / "datalist.json", dl)
    raw = json.loads(path.read_text())
    assert raw["training"][0]["image"] == "imgs/a.nii.gz"  # stored relative to the datalist folder
    assert raw["training"][1]["image"] == ["dcm/0.dcm", "dcm/1.dcm", "dcm/2.dcm"]
    assert raw["numTraining"] == 2 and raw["numTest"] == 1

    # moving the folder keeps the datalist valid
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    tmp_path.rename(moved)
    entries = load_datalist(moved / "datalist.json")
    assert entries[0]["image"] == str(moved / "imgs" / "a.nii.gz")
    assert entries[1]["image"][2] == str(moved / "dcm" / "2.dcm")
    both = load_datalist(moved / "datalist.json", key="all")
    assert [e["split"] for e in both] == ["training", "training", "test"]
    assert check_entries(both, classes=["a", "b"]) == []


def test_missing_split_and_bad_json_are_clear(tmp_path):
    p = tmp_path / "d.json"
    p.write_text("{not json")
    with pytest.raises(DatalistError, match="not valid JSON"):
        load_datalist_file(p)
    p.write_text(json.dumps({"training": [{"image": "a.png", "label": 0}]}))
    with pytest.raises(DatalistError, match="no split 'validation'"):
        load_datalist(p, key="validation")
    p.write_text(json.dumps({"training": [{"label": 0}]}))
    with pytest.raises(DatalistError, match="no 'image' key"):
        load_datalist(p)
    with pytest.raises(DatalistError, match="does not exist"):
        load_datalist(tmp_path / "nope.json")


def test_check_entries_reports_each_problem(tmp_path):
    ok = _touch(tmp_path / "ok.png")
    empty = _touch(tmp_path / "empty.nii.gz", b"")
    entries = [
        {"image": str(ok), "label": 0},
        {"image": str(tmp_path / "missing.png"), "label": 0},
        {"image": str(empty), "label": 0},
        {"image": str(ok), "label": 5},
    ]
    problems = check_entries(entries, classes=["neg", "pos"], source="dl.json")
    reasons = [(p.index, p.reason) for p in problems]
    assert (1, "file does not exist") in reasons
    assert (2, "file is empty (0 bytes)") in reasons
    assert any(i == 3 and "outside the class list" in r for i, r in reasons)
    # class 'pos' never appears -> empty class reported, naming the class
    assert any("class 1 ('pos') has no entries" in r for _, r in reasons)
    with pytest.raises(DatalistError, match=r"missing\.png\s+file does not exist"):
        validate_entries(entries, classes=["neg", "pos"])
    assert check_entries([], classes=["a"], source="dl.json")[0].reason == "the datalist has no entries"


def test_label_names_are_accepted(tmp_path):
    ok = _touch(tmp_path / "ok.png")
    entries = [{"image": str(ok), "label": "neg"}, {"image": str(_touch(tmp_path / "ok2.png")), "label": "pos"}]
    assert check_entries(entries, classes=["neg", "pos"]) == []
    bad = [{"image": str(ok), "label": "maybe"}]
    assert "outside the class list" in check_entries(bad, classes=["neg", "pos"])[0].reason


def test_relative_in_memory_paths_are_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "data" / "img.png")
    path = write_datalist(tmp_path / "out" / "d.json", {"training": [{"image": "data/img.png", "label": 0}]})
    assert json.loads(path.read_text())["training"][0]["image"] == str(tmp_path / "data" / "img.png")
    assert load_datalist(path)[0]["image"] == str(tmp_path / "data" / "img.png")
    path = write_datalist(tmp_path / "d.json", {"training": [{"image": "data/img.png", "label": 0}]})
    assert json.loads(path.read_text())["training"][0]["image"] == "data/img.png"


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os
    import stat

    from medmonai.utils import atomic_write_text

    umask = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary file left


# -------------------------------------------------------------------------- issue 21: entry and file checks


def test_path_problem_names_the_kind_of_file(tmp_path):
    import os

    from medmonai.data.datalist import path_problem

    assert path_problem(_touch(tmp_path / "ok.png")) is None
    assert path_problem(tmp_path) is None  # a folder (a DICOM series) is fine
    assert path_problem(tmp_path / "nope.png") == "file does not exist"
    assert path_problem(_touch(tmp_path / "empty.png", b"")) == "file is empty (0 bytes)"
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    assert "broken symbolic link" in path_problem(tmp_path / "dangling.png")
    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    assert "symbolic link loop" in path_problem(tmp_path / "a.png")
    os.mkfifo(tmp_path / "fifo.png")
    assert "FIFO" in path_problem(tmp_path / "fifo.png")
    assert "character device" in path_problem("/dev/zero")


def test_entry_problems_and_path_escape(tmp_path):
    from medmonai.data.datalist import entry_problems, path_escape

    assert entry_problems({"image": "a.png", "label": 0}) == []
    assert entry_problems({"image": ["1.dcm", "2.dcm"], "mask": None, "label": "benign"}) == []
    assert entry_problems({"image": None})[0] == ("image", "'image' must be a path (a non-empty string) or a list "
                                                  "of DICOM file paths, got null")  # fmt: skip
    assert "got 12345" in entry_problems({"image": 12345})[0][1]
    assert entry_problems({"image": "a.png", "mask": 3})[0][0] == "mask"
    assert entry_problems({"image": "a.png", "label": [1]})[0][0] == "label"
    assert entry_problems("a.png")[0][0] == "entry"
    assert path_escape("sub/a.png", tmp_path) is None
    assert path_escape("sub/../a.png", tmp_path) is None
    assert path_escape("/elsewhere/a.png", tmp_path) is None  # absolute: allowed
    assert "leads outside" in path_escape("../../../../etc/passwd", tmp_path)
    assert "leads outside" in path_escape(["ok.dcm", "../x.dcm"], tmp_path)


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("classes", "benign,malignant", "'classes' must be a list of class names"),
        ("classes", ["a", ""], "'classes' must be a list of class names"),
        ("classes", ["a", "a"], "more than once"),
        ("mask_labels", ["background", "lesion"], "'mask_labels' must be an object"),
        ("training", "x.png", "'training' must be a list of entries"),
    ],
)
def test_malformed_top_level_fields_are_refused(tmp_path, field, value, words):
    p = tmp_path / "d.json"
    data = {"training": [{"image": "a.png", "label": 0}], "validation": [], field: value}
    p.write_text(json.dumps(data))
    with pytest.raises(DatalistError, match=words) as e:
        load_datalist_file(p)
    assert str(p) in str(e.value)


def test_bom_and_non_utf8_json(tmp_path):
    p = tmp_path / "d.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"training": [{"image": "a.png"}]}).encode())
    assert load_datalist_file(p)["training"] == [{"image": "a.png"}]
    p.write_bytes(b'{"training": [{"image": "\xe9.png"}]}')
    with pytest.raises(DatalistError, match="not UTF-8 text") as e:
        load_datalist_file(p)
    assert str(p) in str(e.value)


def test_labels_required_and_duplicates(tmp_path):
    a, b = _touch(tmp_path / "a.png"), _touch(tmp_path / "b.png")
    entries = [{"image": str(a), "label": 0}, {"image": str(b)}]
    problems = check_entries(entries, classes=["x", "y"], require_all_classes=False)
    assert [(p.index, p.key) for p in problems] == [(1, "label")] and "no 'label'" in problems[0].reason
    # an unlabelled list (e.g. a test split for inference) is fine unless labels are required
    assert check_entries([{"image": str(a)}], classes=["x"], require_all_classes=False) == []
    assert check_entries([{"image": str(a)}], classes=["x"], require_all_classes=False, require_labels=True)
    twice = [{"image": str(a), "label": 0}, {"image": str(tmp_path / "." / "a.png"), "label": 1}]
    (dup,) = check_entries(twice, classes=["x", "y"])
    assert dup.index == 1 and dup.reason == "duplicate entry: the same image as entry 0"


def test_held_out_entries_are_validation_plus_the_datalist_test_split(tmp_path):
    with_test = tmp_path / "with_test.json"
    entries = {"training": [{"image": "a.nii.gz", "label": 0}], "test": [{"image": "t.nii.gz", "label": 1}]}
    with_test.write_text(json.dumps(entries))
    without = tmp_path / "without.json"
    without.write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": 0}]}))
    split = {"training": [{"image": "a.nii.gz"}], "validation": [{"image": "v.nii.gz"}]}
    held = held_out_entries(split, str(with_test))
    assert [Path(e["image"]).name for e in held] == ["v.nii.gz", "t.nii.gz"]
    assert held_out_entries(split, str(without)) == [{"image": "v.nii.gz"}]
