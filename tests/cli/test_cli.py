from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from medmonai import __version__
from medmonai.bundles import bundles_dir
from medmonai.cli.main import _default_bundle_root, build_parser, main
from medmonai.data.datalist import load_datalist, load_datalist_file
from medmonai.data.splits import SCHEMES
from tests.conftest import require


@pytest.mark.slow
def test_console_entry_point_version():
    out = subprocess.run([sys.executable, "-m", "medmonai", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"medmonai {__version__}"


def test_phantoms_check_fingerprint_datalist_on_2d_phantoms(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["-q", "phantoms", str(out), "--dims", "2", "--small", "--formats", "png,nifti,dicom"]) == 0
    for fmt in ("png", "nifti", "dicom"):
        assert (out / f"datalist_{fmt}.json").is_file()
    assert main(["check", str(out / "datalist_png.json")]) == 0
    assert main(["-q", "fingerprint", str(out / "datalist_nifti.json"), "--out", str(tmp_path / "fp.json")]) == 0
    fp = json.loads((tmp_path / "fp.json").read_text())
    assert fp["plan"]["spatial_dims"] == 2
    assert len(fp["plan"]["spatial_size"]) == 2

    # hospital-style: scan the DICOM folder, join labels by PatientID
    truth = load_datalist_file(out / "datalist_dicom.json")
    classes = truth["classes"]
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["PatientID", "label"])
        for s, lab in sorted({(e["subject"], e["label"]) for e in truth["training"]}):
            w.writerow([s, classes[lab]])
    dl = tmp_path / "dicom.json"
    rc = main(
        ["-q", "datalist", "dicom", str(out / "dicom"), "--labels-csv", str(labels), "--classes", ",".join(classes)]
        + ["--out", str(dl)]
    )
    assert rc == 0
    entries = load_datalist(dl)
    assert len(entries) == len(truth["training"])
    by_subject = {e["subject"]: e["label"] for e in truth["training"]}
    assert all(e["label"] == by_subject[e["subject"]] for e in entries)
    # the same with pseudonymised subjects: same labels and grouping, no PatientID in the datalist
    key = tmp_path / "key.txt"
    key.write_text("a-long-enough-secret-key-for-the-test")
    dl_p = tmp_path / "dicom_pseudo.json"
    argv = ["-q", "datalist", "dicom", str(out / "dicom"), "--labels-csv", str(labels), "--out", str(dl_p)]
    assert main(argv + ["--classes", ",".join(classes), "--pseudonym-key-file", str(key)]) == 0
    pseudo = load_datalist(dl_p)
    assert [e["label"] for e in pseudo] == [e["label"] for e in entries]
    raw_to_pseudo = {e["subject"]: p["subject"] for e, p in zip(entries, pseudo)}
    assert len(set(raw_to_pseudo.values())) == len(raw_to_pseudo) and not set(raw_to_pseudo) & set(
        raw_to_pseudo.values()
    )
    assert main(argv + ["--pseudonym-key-file", str(tmp_path / "no_key.txt")]) != 0


def test_bad_input_gives_one_clear_error(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"x")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\na.png,cat\n")
    rc = main(["datalist", "csv", str(csv_path), "--classes", "benign,malignant", "--out", str(tmp_path / "d.json")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "labels.csv" in err and "cat" in err
    assert not (tmp_path / "d.json").exists()  # nothing half-written


def test_check_reports_problems_with_exit_code(tmp_path, capsys):
    (tmp_path / "d.json").write_text(json.dumps({"classes": ["a", "b"], "training": [{"image": "x.png", "label": 0}]}))
    assert main(["check", str(tmp_path / "d.json")]) == 1
    out = capsys.readouterr().out
    assert "x.png" in out and "file does not exist" in out and "class 1 ('b') has no entries" in out


def test_cli_on_breastmnist(shared_data, tmp_path):
    npz = require(shared_data / "medmnist" / "breastmnist.npz")
    dl = tmp_path / "breast" / "datalist.json"
    assert main(["-q", "datalist", "medmnist", str(npz), "--out", str(dl)]) == 0
    raw = load_datalist_file(dl)
    assert (len(raw["training"]), len(raw["validation"]), len(raw["test"])) == (546, 78, 156)
    assert main(["-q", "fingerprint", str(dl)]) == 0
    fp = json.loads((dl.parent / "fingerprint.json").read_text())
    assert fp["fingerprint"]["class_counts"] in ({"malignant": 147, "normal_benign": 399}, [147, 399])
    assert fp["plan"]["normalization"]["preset"] == "scale255"


@pytest.mark.slow
def test_cli_on_msd_hippocampus(shared_data, tmp_path):
    root = require(shared_data / "msd_hippocampus")
    dl = tmp_path / "hippo.json"
    assert main(["-q", "datalist", "msd", str(root), "--out", str(dl)]) == 0
    assert len(load_datalist(dl)) == 260
    assert main(["-q", "fingerprint", str(dl), "--out", str(tmp_path / "fp.json")]) == 0
    plan = json.loads((tmp_path / "fp.json").read_text())["plan"]
    assert plan["target_spacing"] == [1.0, 1.0, 1.0]
    assert plan["normalization"]["preset"] == "zscore"


def test_cli_on_mr_dicom(shared_data, tmp_path):
    root = require(shared_data / "dicom" / "mr_brain")
    dl = tmp_path / "mr.json"
    assert main(["-q", "datalist", "dicom", str(root), "--out", str(dl)]) == 0
    entries = load_datalist(dl)
    assert len(entries) == 4
    assert main(["-q", "fingerprint", str(dl), "--out", str(tmp_path / "fp.json")]) == 0
    fp = json.loads((tmp_path / "fp.json").read_text())
    assert fp["fingerprint"]["modality_counts"] == {"MR": 4}


def _parsers(parser, name="medmonai"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_help_has_help_for_every_option_defaults_and_no_rest_markup():
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        text = parser.format_help()
        assert "``" not in text, f"{name} --help shows reST markup"
    cv_help = " ".join(dict(_parsers(build_parser()))["medmonai cv"].format_help().split())
    assert "(default: 5)" in cv_help and "(default: kfold)" in cv_help  # defaults shown
    for scheme in SCHEMES:  # choices from the package constants
        assert scheme in cv_help


def test_bundle_root_defaults_to_the_bundles_run_folder_outside_the_source_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMONAI_HOME", str(tmp_path / "home"))
    bundle = bundles_dir() / "classification"
    args = build_parser().parse_args(["export", str(bundle), "--out", str(tmp_path / "m.onnx")])
    assert args.bundle_root is None
    _default_bundle_root(args)
    assert args.bundle_root == str(tmp_path / "home" / "classification_2d")
    repo = bundles_dir().parent
    assert not Path(args.bundle_root).resolve().is_relative_to(repo)
    given = build_parser().parse_args(["export", str(bundle), "--out", "m.onnx", "--bundle-root", str(tmp_path)])
    _default_bundle_root(given)
    assert given.bundle_root == str(tmp_path)
