"""Attack matrix, issue 21 item 8: output names built from DICOM tags never leave the output folder.

A SeriesInstanceUID of ``../../../tmp/x`` made ``medmonai infer`` write its SR outside ``--out``; a StudyInstanceUID
made ``medmonai watch`` write outside ``out_dir`` (relative UID) or replace it (absolute UID). Every name built from a
tag is now sanitised and checked to stay inside the output folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest

from medmonai.cli.main import main
from medmonai.data.dicom_output import read_classification_sr
from medmonai.deploy.pacs import PacsClient
from medmonai.deploy.pipeline import watch_folder
from medmonai.utils import safe_output_path
from tests.deploy._clinical_data import bundle_dir
from tests.reliability._domain_data import case_pixels, write_study

CLS = bundle_dir("classification_2d")
RELATIVE = "../../../tmp/x"


def _absolute(tmp_path: Path) -> str:
    """An absolute UID: a folder outside the output folder (under tmp_path, so a failing test litters nothing)."""
    return str(tmp_path / "abs" / "x")


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_infer_keeps_outputs_named_from_a_hostile_series_uid_inside_out(cls_root, tmp_path, kind):
    uid = RELATIVE if kind == "relative" else _absolute(tmp_path)
    study, _ = write_study(tmp_path / "in", case_pixels(cls_root), series_uid=uid)
    out = tmp_path / "o1" / "o2" / "o3" / "out"  # RELATIVE from here would be tmp_path/o1/tmp/x
    rc = main(["infer", str(CLS), str(study), "--out", str(out), "--bundle-root", str(cls_root), "--device", "cpu"])
    assert rc == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file() and tmp_path / "in" not in p.parents]
    assert written and all(p.parent == out for p in written)
    assert not (tmp_path / "o1" / "tmp").exists() and not (tmp_path / "abs").exists()
    result = json.loads((out / "results.json").read_text())
    (rec,) = result["results"]
    assert rec["SeriesInstanceUID"] == uid  # the result still names the real UID
    name = rec["outputs"]["sr"]
    assert "/" not in name and ".." not in name and (out / name).is_file()
    assert read_classification_sr(out / name)["referenced_series"] == [uid]


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_watch_keeps_a_study_named_by_a_hostile_study_uid_inside_out(cls_model, cls_root, tmp_path, kind):
    uid = RELATIVE if kind == "relative" else _absolute(tmp_path)
    inbox = tmp_path / "inbox"
    write_study(inbox / "a", case_pixels(cls_root), study_uid=uid)
    out = tmp_path / "o1" / "o2" / "o3" / "out"
    summary = watch_folder(cls_model, inbox, out, min_age_s=0, once=True)
    assert summary["processed"] == [uid] and not summary["failed"]
    assert not (tmp_path / "o1" / "tmp").exists() and not (tmp_path / "abs").exists()
    state = json.loads((out / "watch_state.json").read_text())
    folder = Path(state["studies"][uid]["outputs"])
    assert folder.parent == out and ".." not in folder.name and (folder / "results.json").is_file()
    assert {p.parent for p in out.rglob("*") if p.is_file()} <= {out, folder}


def test_pacs_retrieval_keeps_hostile_uids_inside_the_folder(tmp_path):
    """The C-STORE handler of C-GET / C-MOVE names files from the received Series/SOPInstanceUID."""
    out = tmp_path / "o1" / "o2" / "retrieved"
    written: list[Path] = []
    failures: list[str] = []
    handler = PacsClient._store_handler(out, written, failures)
    for series, sop in ((RELATIVE, "1.2.3"), (_absolute(tmp_path), "../../sop"), ("1.2.4", _absolute(tmp_path))):
        ds = pydicom.Dataset()
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID = series, sop, "1.2.840.10008.5.1.4.1.1.7"
        meta = pydicom.dataset.FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, "1.2.3.4"
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        assert handler(SimpleNamespace(dataset=ds, file_meta=meta)) == 0x0000, failures
    assert len(written) == 3 and not failures
    for p in written:
        assert p.parent.parent == out and p.is_file()
    assert not (tmp_path / "o1" / "tmp").exists() and not (tmp_path / "abs").exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1.2.840.113619.2.55", "1.2.840.113619.2.55_sr.dcm"), ("1.2.3", "1.2.3_sr.dcm")],
)
def test_safe_output_path_keeps_valid_uids(tmp_path, value, expected):
    assert safe_output_path(tmp_path, value, "_sr.dcm") == tmp_path / expected


@pytest.mark.parametrize("value", [RELATIVE, "/tmp/x", "..\\..\\x", "a/../../b", ".hidden", "1.2 3", "x" * 300])
def test_safe_output_path_sanitises_hostile_names(tmp_path, value):
    path = safe_output_path(tmp_path, value, ".dcm", "SeriesInstanceUID")
    assert path.parent == tmp_path and ".." not in path.name and not path.name.startswith(".")
    assert "/" not in path.name and "\\" not in path.name and len(path.name) < 160
    assert safe_output_path(tmp_path, value + "y", ".dcm") != path  # sanitised names do not collide


@pytest.mark.parametrize("value", ["", "..", "...", "/", "../", None])
def test_safe_output_path_refuses_names_that_give_nothing(tmp_path, value):
    with pytest.raises(ValueError, match="no usable file name"):
        safe_output_path(tmp_path, value, what="StudyInstanceUID")


def test_safe_output_path_refuses_a_symlink_leading_outside(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "out" / "1.2.3")
    with pytest.raises(ValueError, match="outside the output folder"):
        safe_output_path(tmp_path / "out", "1.2.3", what="StudyInstanceUID")
    assert not any((tmp_path / "elsewhere").iterdir())


class _FakePacs:
    """Just enough of PacsClient for watch_pacs: one study whose StudyInstanceUID is hostile."""

    def __init__(self, study_uid: str, source: Path) -> None:
        self.study_uid, self.source, self.retrieved_into = study_uid, source, None

    def find_studies(self, **query):
        return [{"StudyInstanceUID": self.study_uid, "NumberOfStudyRelatedInstances": 1}]

    def find_series(self, study_uid):
        return [{"SeriesInstanceUID": pydicom.dcmread(self.source).SeriesInstanceUID, "Modality": "OT"}]

    def retrieve(self, study_uid, out_dir, series_uids=None):
        self.retrieved_into = Path(out_dir)
        self.retrieved_into.mkdir(parents=True, exist_ok=True)
        target = self.retrieved_into / "image.dcm"
        target.write_bytes(self.source.read_bytes())
        return [target]


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_watch_pacs_keeps_a_hostile_study_uid_inside_out(cls_model, cls_root, tmp_path, kind):
    from medmonai.deploy.pipeline import watch_pacs

    uid = RELATIVE if kind == "relative" else _absolute(tmp_path)
    study, _ = write_study(tmp_path / "src", case_pixels(cls_root), study_uid=uid)
    client = _FakePacs(uid, study / "image.dcm")
    out = tmp_path / "o1" / "o2" / "o3" / "out"
    summary = watch_pacs(cls_model, client, out, store_results=False, stable_polls=0, once=True)
    assert summary["processed"] == [uid]
    assert client.retrieved_into.parent.parent == out  # out/<safe study name>/input
    assert not (tmp_path / "o1" / "tmp").exists() and not (tmp_path / "abs").exists()
    (results,) = list(out.glob("*/results.json"))
    assert results.parent.parent == out and ".." not in results.parent.name


def test_watch_fails_a_study_whose_uid_gives_no_name(cls_model, cls_root, tmp_path):
    inbox = tmp_path / "inbox"
    write_study(inbox / "a", case_pixels(cls_root), study_uid="..")
    out = tmp_path / "out"
    summary = watch_folder(cls_model, inbox, out, min_age_s=0, once=True)
    assert summary["failed"] == [".."] and not summary["processed"]
    state = json.loads((out / "watch_state.json").read_text())
    assert "StudyInstanceUID '..' gives no usable file name" in state["studies"][".."]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["watch_state.json"]
