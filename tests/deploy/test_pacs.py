"""PACS round trip with a real Orthanc on loopback: store, query, retrieve, infer, store the SR/SEG back, verify.

Skipped (with the reason) where Orthanc is not installed; ``.ci/run`` installs the Debian package ``orthanc``.
"""

from __future__ import annotations

import io
import json
import os

import highdicom as hd
import pydicom
import pytest

from medmonai.cli.main import main
from medmonai.data.dicom_output import read_classification_sr
from medmonai.deploy.models import load_clinical_model
from medmonai.deploy.pacs import OrthancRest, OrthancServer, PacsClient, PacsError, find_orthanc, free_port, parse_node
from medmonai.deploy.pipeline import infer_dicom, result_files, watch_pacs
from tests.deploy._clinical_data import (
    PATIENT_ID,
    PATIENT_NAME,
    SEG_FAST,
    bundle_dir,
    copy_study,
    subject_dirs,
    trained_classifier,
    trained_segmenter,
)

CLS = bundle_dir("classification_2d")
SEG = bundle_dir("segmentation_2d")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """Orthanc on loopback: temporary storage, free ports, only our AE title; stopped after the module."""
    if find_orthanc() is None:
        if os.environ.get("MEDMONAI_REQUIRE_ORTHANC") == "1":  # set by .ci/run once it has installed Orthanc
            pytest.fail("MEDMONAI_REQUIRE_ORTHANC=1 but Orthanc is not installed")
        pytest.skip("Orthanc is not installed (Debian/Ubuntu package 'orthanc'; .ci/run installs it)")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"))
    with server:
        yield server
    assert server._proc is None  # stopped


@pytest.fixture(scope="module")
def pacs(orthanc):
    return PacsClient("127.0.0.1", orthanc.dicom_port, orthanc.aet, calling_aet=orthanc.client_aet, timeout=30)


@pytest.fixture(scope="module")
def rest(orthanc):
    return OrthancRest(orthanc.url)


def _sources(folder):
    return {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in folder.rglob("*.dcm")}


def _store_and_retrieve(pacs, rest, study_dir, tmp_path):
    """C-STORE a study, find it (study and series level), C-GET it back and check it is the same data."""
    sources = _sources(study_dir)
    study_uid = next(iter(sources.values())).StudyInstanceUID
    series_uids = {ds.SeriesInstanceUID for ds in sources.values()}
    assert sorted(pacs.store(sorted(study_dir.glob("*.dcm")))) == sorted(sources)
    found = [s for s in pacs.find_studies() if s["StudyInstanceUID"] == study_uid]
    assert len(found) == 1 and found[0]["NumberOfStudyRelatedInstances"] == len(sources)
    assert "PatientName" not in found[0] and "PatientID" not in found[0]  # we never ask for them
    assert {s["SeriesInstanceUID"] for s in pacs.find_series(study_uid)} == series_uids
    retrieved = pacs.get_study(study_uid, tmp_path / "retrieved")
    assert {p.parent.name for p in retrieved} == series_uids  # one folder per series
    for path in retrieved:
        ds = pydicom.dcmread(path)
        assert ds.PixelData == sources[ds.SOPInstanceUID].PixelData
        assert ds.StudyInstanceUID == study_uid
    assert {s["SeriesInstanceUID"] for s in rest.study_series(study_uid)} == series_uids
    return study_uid, series_uids, tmp_path / "retrieved"


def _orthanc_objects(rest, study_uid, modality):
    """The instances of ``modality`` in an Orthanc study, downloaded and parsed."""
    out = []
    for series in rest.study_series(study_uid):
        if series["Modality"] == modality:
            out += [pydicom.dcmread(io.BytesIO(rest.download(i))) for i in series["instances"]]
    return out


def test_classification_round_trip_through_orthanc(orthanc, pacs, rest, tmp_path_factory, tmp_path):
    root = trained_classifier(tmp_path_factory)
    study = copy_study(subject_dirs(root)[0], tmp_path / "study")
    study_uid, series_uids, retrieved = _store_and_retrieve(pacs, rest, study, tmp_path)
    model = load_clinical_model(CLS, root, device="cpu")
    result = infer_dicom(model, retrieved, tmp_path / "out")
    assert {r["SeriesInstanceUID"] for r in result["results"]} == series_uids
    stored = pacs.store(result_files(result, tmp_path / "out"))
    assert len(stored) == len(series_uids)
    srs = _orthanc_objects(rest, study_uid, "SR")
    assert sorted(ds.SOPInstanceUID for ds in srs) == sorted(stored)
    by_series = {r["SeriesInstanceUID"]: r for r in result["results"]}
    for ds in srs:
        assert ds.StudyInstanceUID == study_uid and str(ds.PatientName) == PATIENT_NAME  # same study and patient
        hd.sr.Comprehensive3DSR.from_dataset(ds)  # a valid SR for highdicom
        back = read_classification_sr(ds)
        (ref,) = back["referenced_series"]
        assert ref in series_uids
        assert back["probabilities"] == pytest.approx(by_series[ref]["probabilities"], abs=1e-6)
        assert back["predicted"] == by_series[ref]["predicted"]
    assert len({read_classification_sr(ds)["referenced_series"][0] for ds in srs}) == len(series_uids)
    # the study now holds the images and one SR series per image series
    assert len(pacs.find_series(study_uid)) == 2 * len(series_uids)
    text = (tmp_path / "out" / "results.json").read_text()
    assert PATIENT_NAME not in text and PATIENT_ID not in text


def test_segmentation_round_trip_through_orthanc(orthanc, pacs, rest, tmp_path_factory, tmp_path):
    root = trained_segmenter(tmp_path_factory)
    study = copy_study(subject_dirs(root)[0], tmp_path / "study")
    study_uid, series_uids, retrieved = _store_and_retrieve(pacs, rest, study, tmp_path)
    model = load_clinical_model(SEG, root, overrides={"base_filters": SEG_FAST["base_filters"]}, device="cpu")
    result = infer_dicom(model, retrieved, tmp_path / "out", nifti=False)
    assert all(set(r["outputs"]) == {"seg"} for r in result["results"])
    pacs.store(result_files(result, tmp_path / "out"))
    segs = _orthanc_objects(rest, study_uid, "SEG")
    assert len(segs) == len(series_uids)
    local = {r["SeriesInstanceUID"]: r for r in result["results"]}
    for ds in segs:
        seg = hd.seg.Segmentation.from_dataset(ds)
        assert seg.StudyInstanceUID == study_uid
        ref = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        assert ref in series_uids
        sources = {s.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
        assert sources <= {pydicom.dcmread(f).SOPInstanceUID for f in (retrieved / ref).iterdir()}
        original = pydicom.dcmread(tmp_path / "out" / local[ref]["outputs"]["seg"])
        assert ds.PixelData == original.PixelData  # the SEG reads back from Orthanc unchanged


def test_watch_pacs_processes_a_new_study_once_and_stores_the_results(orthanc, pacs, rest, tmp_path_factory, tmp_path):
    root = trained_classifier(tmp_path_factory)
    study = copy_study(subject_dirs(root)[1], tmp_path / "study")
    study_uid = next(iter(_sources(study).values())).StudyInstanceUID
    n_series = len({ds.SeriesInstanceUID for ds in _sources(study).values()})
    node = f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
    assert main(["pacs", "store", node, str(study), "--calling-aet", orthanc.client_aet]) == 0
    model = load_clinical_model(CLS, root, device="cpu")
    out = tmp_path / "out"
    query = {"StudyInstanceUID": study_uid}  # this module's other studies are not this test's business
    first = watch_pacs(model, pacs, out, query=query, once=True)  # stable_polls=1: seen once, not yet taken
    assert first["waiting"] == [study_uid] and first["processed"] == []
    second = watch_pacs(model, pacs, out, query=query, once=True)
    assert second["processed"] == [study_uid]
    state = json.loads((out / "watch_state.json").read_text())
    assert state["studies"][study_uid]["status"] == "done" and len(state["studies"][study_uid]["stored"]) == n_series
    assert not (out / study_uid / "input").exists()  # retrieved images are removed after the run
    assert len(_orthanc_objects(rest, study_uid, "SR")) == n_series
    # the next poll (here through the CLI) skips the study: nothing new is stored
    rc = main(
        ["watch", str(CLS), "--pacs", node, "--out", str(out), "--bundle-root", str(root), "--once",
         "--query", f"StudyInstanceUID={study_uid}", "--calling-aet", orthanc.client_aet, "--device", "cpu"]
    )  # fmt: skip
    assert rc == 0
    assert len(_orthanc_objects(rest, study_uid, "SR")) == n_series


def test_c_move_retrieves_what_was_stored(orthanc, pacs, tmp_path_factory, tmp_path):
    """C-MOVE to our own storage SCP (the port Orthanc has for our AE title), through the CLI and ``retrieve``."""
    root = trained_classifier(tmp_path_factory)
    study = copy_study(subject_dirs(root)[-1], tmp_path / "study")
    sources = _sources(study)
    study_uid = next(iter(sources.values())).StudyInstanceUID
    series_uids = {ds.SeriesInstanceUID for ds in sources.values()}
    pacs.store(sorted(study.glob("*.dcm")))
    node = f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
    rc = main(
        ["pacs", "move", node, "--study-uid", study_uid, "--out", str(tmp_path / "moved"),
         "--calling-aet", orthanc.client_aet, "--move-port", str(orthanc.client_port)]
    )  # fmt: skip
    assert rc == 0
    moved = sorted((tmp_path / "moved").rglob("*.dcm"))
    assert {p.parent.name for p in moved} == series_uids
    assert sorted(pydicom.dcmread(p).SOPInstanceUID for p in moved) == sorted(sources)
    for path in moved:
        ds = pydicom.dcmread(path)
        assert ds.PixelData == sources[ds.SOPInstanceUID].PixelData and ds.StudyInstanceUID == study_uid
    # retrieve() uses C-MOVE when the client has a move port; one series only
    mover = PacsClient.from_node(node, calling_aet=orthanc.client_aet, move_port=orthanc.client_port)
    one = sorted(series_uids)[0]
    files = mover.retrieve(study_uid, tmp_path / "one", series_uids=[one])
    assert files and {p.parent.name for p in files} == {one}
    with pytest.raises(ValueError, match="move_port"):
        pacs.move_study(study_uid, tmp_path / "no_port")
    # listening on a port the PACS does not send to: the PACS cannot deliver, and says so
    elsewhere = PacsClient.from_node(node, calling_aet=orthanc.client_aet, timeout=20, move_port=free_port())
    with pytest.raises(PacsError, match="C-MOVE"):
        elsewhere.move_study(study_uid, tmp_path / "elsewhere")
    assert not list((tmp_path / "elsewhere").rglob("*.dcm"))


def test_pacs_errors_are_clear(orthanc, tmp_path):
    stranger = PacsClient("127.0.0.1", orthanc.dicom_port, orthanc.aet, calling_aet="STRANGER", timeout=10)
    with pytest.raises(PacsError, match="rejected"):
        stranger.echo()
    assert PacsClient.from_node(parse_node(f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}")).echo()
    bad = tmp_path / "bad.dcm"
    bad.write_text("not dicom")
    with pytest.raises(ValueError, match="bad.dcm: not a readable DICOM file"):
        PacsClient("127.0.0.1", orthanc.dicom_port, orthanc.aet).store([bad])
    with pytest.raises(PacsError, match="not found"):
        PacsClient("127.0.0.1", orthanc.dicom_port, orthanc.aet).get_study("1.2.3.4.5.6.7", tmp_path / "x")
    with pytest.raises(ValueError, match="AET@HOST:PORT"):
        parse_node("127.0.0.1:4242")
