"""Security: checkpoints are only loaded with ``weights_only=True``, the docs state the trust model of bundle configs,
and no patient name or id reaches logs or reports by default."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from tests.data.dicom_factory import write_series, write_slice

REPO = Path(__file__).resolve().parents[2]
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "MRN-0042-7731"


def _torch_load_calls(path: Path) -> list[tuple[int, bool]]:
    """(line, has weights_only=True) of every ``torch.load(...)`` / ``load(...)`` imported from torch in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases = {"torch"}
    bare = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "torch"}
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            bare |= {a.asname or a.name for a in node.names if a.name == "load"}
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        is_load = (isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name)
                   and f.value.id in aliases) or (isinstance(f, ast.Name) and f.id in bare)  # fmt: skip
        if is_load:
            safe = any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            calls.append((node.lineno, safe))
    return calls


def test_every_torch_load_uses_weights_only():
    files = [p for d in ("medmonai", "benchmarks", "tests") for p in (REPO / d).rglob("*.py")]
    found, unsafe = 0, []
    for path in files:
        for line, safe in _torch_load_calls(path):
            found += 1
            if not safe:
                unsafe.append(f"{path.relative_to(REPO)}:{line}")
    assert found > 0  # the scan does find the calls
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


def test_the_scan_catches_an_unsafe_load(tmp_path):
    p = tmp_path / "bad.py"
    p.write_text("import torch as T\nfrom torch import load\nT.load('a.pt')\nload('b.pt', weights_only=False)\n")
    assert _torch_load_calls(p) == [(3, False), (4, False)]


def test_docs_state_the_trust_model_of_bundle_configs():
    for doc in ("docs/reliability.md", "README.md"):
        text = " ".join((REPO / doc).read_text(encoding="utf-8").split())
        assert "only run configs you trust" in text, doc
        assert "weights_only=True" in text, doc


def test_no_patient_name_or_id_in_datalists_reports_or_logs(tmp_path, caplog, capsys):
    from medmonai.cli.main import main
    from medmonai.data.builders import datalist_from_dicom_folder
    from medmonai.data.datalist import write_datalist
    from medmonai.data.preflight import PreflightError, preflight_datalist

    caplog.set_level(logging.DEBUG)
    dicom = tmp_path / "dicom"
    good = write_series(dicom / "a", shape=(6, 6, 4), patient_id=PATIENT_ID, study_uid="1.2.3.4.5")
    bad = write_series(dicom / "b", shape=(6, 6, 5), patient_id=PATIENT_ID, study_uid="1.2.3.4.6", seed=1)
    for f in good.files + bad.files:  # the factory's fixed name -> our patient's name
        data = f.read_bytes().replace(b"Test^Patient", PATIENT_NAME.encode().ljust(len("Test^Patient"), b" "))
        f.write_bytes(data)
    assert PATIENT_NAME.encode() in good.files[0].read_bytes()
    write_slice(bad.files[1], np.zeros((6, 6)), series_uid=bad.series_uid, patient_id=PATIENT_ID,
                position=bad.positions[1], with_pixels=False)  # fmt: skip
    dl, problems = datalist_from_dicom_folder(dicom, key="StudyInstanceUID", on_error="skip", progress=False)
    assert problems  # the broken series was reported (and named by its files, not its patient)
    dl["classes"] = ["a"]
    for e in dl["training"]:
        e["label"] = 0
    path = write_datalist(tmp_path / "datalist.json", dl)
    # and a datalist that still points at the broken series: the errors name files, never the patient
    raw = json.loads(path.read_text())
    raw["training"].append({"image": str(bad.folder), "label": 0})
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(raw))
    with pytest.raises(PreflightError) as err:
        preflight_datalist(broken, tmp_path / "out", spatial_dims=3)
    assert main(["check", str(broken), "--report", str(tmp_path / "check.json")]) == 1
    # the datalist holds PatientID only as the grouping key `subject` (by design, docs/data.md); no name, no metadata
    assert all(set(e) - {"subject"} and PATIENT_ID not in json.dumps({**e, "subject": ""}) for e in dl["training"])
    assert "Doe" not in path.read_text()
    texts = [
        str(err.value),
        (tmp_path / "out" / "preflight_report.json").read_text(),
        (tmp_path / "check.json").read_text(),
        " ".join(str(p) for p in problems),
        caplog.text,
        "".join(capsys.readouterr()),
    ]
    for text in texts:
        assert PATIENT_ID not in text and "Doe" not in text, text[:2000]
