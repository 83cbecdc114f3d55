"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS) against a real Orthanc with its DICOMweb plugin, compared with the DIMSE path.

Skipped (with the reason) where Orthanc or its plugin is not installed, unless ``MEDMONAI_REQUIRE_ORTHANC=1`` (set by
``.ci/run`` once it has installed the Debian packages ``orthanc`` and ``orthanc-dicomweb``): then that is a failure.

What is byte-equal: the files retrieved over WADO-RS equal the files that were stored (STOW-RS) byte for byte, both
for the phantom images and for the SR and SEG results (Orthanc stores them as sent and, for these Explicit VR Little
Endian files, does not transcode). The C-GET copies carry pynetdicom's file meta information, so against them the
data sets (every element, pixel data included) are compared, not the files.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import highdicom as hd
import pydicom
import pytest

from medmonai.cli.main import main
from medmonai.data.dicom_output import read_classification_sr
from medmonai.deploy.pacs import OrthancServer, PacsClient, find_dicomweb_plugin, find_orthanc, free_port
from medmonai.deploy.pipeline import infer_dicom, result_files, watch_pacs
from tests.deploy._clinical_data import (
    PATIENT_ID,
    PATIENT_NAME,
    SEG_FAST,
    bundle_dir,
    copy_study,
    subject_dirs,
    trained_segmenter,
)

CLS = bundle_dir("classification_2d")
SEG = bundle_dir("segmentation_2d")
REQUIRE = os.environ.get("MEDMONAI_REQUIRE_ORTHANC") == "1"  # set by .ci/run once it has installed Orthanc


def _missing(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"MEDMONAI_REQUIRE_ORTHANC=1 but {what}")
    pytest.skip(what)


@pytest.fixture(scope="module")
def dicomweb():
    """The ``medmonai.deploy.dicomweb`` module (needs the extra ``medmonai[dicomweb]``)."""
    try:
        from medmonai.deploy import dicomweb
    except ImportError as e:  # pragma: no cover - the dev extra installs it
        _missing(f"dicomweb-client is not installed ({e}); pip install 'medmonai[dicomweb]'")
    try:
        import dicomweb_client  # noqa: F401
    except ImportError:
        _missing("dicomweb-client is not installed; pip install 'medmonai[dicomweb]'")
    return dicomweb


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """Orthanc with its DICOMweb plugin on loopback (free ports, temporary storage); stopped after the module."""
    if find_orthanc() is None:
        _missing("Orthanc is not installed (Debian/Ubuntu package 'orthanc'; .ci/run installs it)")
    if find_dicomweb_plugin() is None:
        _missing("Orthanc's DICOMweb plugin is not installed (Debian/Ubuntu package 'orthanc-dicomweb')")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc_web"), dicomweb=True)
    with server:
        yield server
    assert server._proc is None  # stopped


@pytest.fixture(scope="module")
def web(dicomweb, orthanc):
    return dicomweb.DicomWebClient(orthanc.dicomweb_url, timeout=30)


@pytest.fixture(scope="module")
def pacs(orthanc):
    return PacsClient("127.0.0.1", orthanc.dicom_port, orthanc.aet, calling_aet=orthanc.client_aet, timeout=30)


def _sources(folder):
    return {pydicom.dcmread(f).SOPInstanceUID: f for f in folder.rglob("*.dcm")}


def _data_set(path):
    """A file's data set without its file meta information."""
    ds = pydicom.dcmread(path)
    del ds.file_meta
    ds.preamble = None
    return ds


def test_qido_and_wado_give_what_c_find_and_c_get_give(web, pacs, dicomweb, cls_root, tmp_path, monkeypatch):
    study = copy_study(subject_dirs(cls_root)[0], tmp_path / "study")
    sources = _sources(study)
    study_uid = pydicom.dcmread(next(iter(sources.values()))).StudyInstanceUID
    assert sorted(web.store(sorted(sources.values()))) == sorted(sources)  # STOW-RS
    assert web.echo()
    # QIDO-RS answers exactly as C-FIND: the same keys and values, no patient attributes
    (found,) = [s for s in web.find_studies() if s["StudyInstanceUID"] == study_uid]
    assert found == next(s for s in pacs.find_studies() if s["StudyInstanceUID"] == study_uid)
    assert found["NumberOfStudyRelatedInstances"] == len(sources)
    assert not {"PatientName", "PatientID"} & set(found)
    assert web.find_studies(StudyInstanceUID=study_uid) == [found]  # a matching key
    assert web.find_studies(StudyInstanceUID="1.2.3.999") == []

    def by_uid(rows, key):
        return sorted(rows, key=lambda r: r[key])

    series = by_uid(web.find_series(study_uid), "SeriesInstanceUID")
    assert len(series) > 1 and series == by_uid(pacs.find_series(study_uid), "SeriesInstanceUID")
    with monkeypatch.context() as m:  # paging: one result per QIDO-RS request gives the same list
        m.setattr(dicomweb, "QIDO_PAGE", 1)
        assert by_uid(web.find_series(study_uid), "SeriesInstanceUID") == series
    for s in series:
        uid = s["SeriesInstanceUID"]
        assert by_uid(web.find_instances(study_uid, uid), "SOPInstanceUID") == by_uid(
            pacs.find_instances(study_uid, uid), "SOPInstanceUID"
        )
    # WADO-RS retrieves the same instances, in the same layout, as C-GET
    wado = web.retrieve(study_uid, tmp_path / "wado")
    cget = pacs.get_study(study_uid, tmp_path / "cget")
    rel = sorted(p.relative_to(tmp_path / "wado") for p in wado)
    assert rel == sorted(p.relative_to(tmp_path / "cget") for p in cget)
    assert {p.parent.name for p in wado} == {s["SeriesInstanceUID"] for s in series}
    assert sorted(p.stem for p in wado) == sorted(sources)
    for p in wado:
        uid = p.stem
        assert p.read_bytes() == sources[uid].read_bytes()  # byte-equal to the file stored
        assert _data_set(p) == _data_set(tmp_path / "cget" / p.relative_to(tmp_path / "wado"))
        assert pydicom.dcmread(p).PixelData == pydicom.dcmread(sources[uid]).PixelData
    # one series only
    one = series[0]["SeriesInstanceUID"]
    assert {p.parent.name for p in web.get_study(study_uid, tmp_path / "one", series_uids=[one])} == {one}


def test_stow_of_the_sr_reads_back_unchanged_and_equals_the_c_get_copy(web, pacs, cls_model, cls_root, tmp_path):
    study = copy_study(subject_dirs(cls_root)[2], tmp_path / "study")
    sources = _sources(study)
    study_uid = pydicom.dcmread(next(iter(sources.values()))).StudyInstanceUID
    web.store(sorted(sources.values()))
    retrieved = tmp_path / "retrieved"
    web.retrieve(study_uid, retrieved)
    result = infer_dicom(cls_model, retrieved, tmp_path / "out", allow_out_of_distribution=True)
    srs = result_files(result, tmp_path / "out")
    assert srs and len(web.store(srs)) == len(srs)  # STOW-RS of the results
    sr_series = [s["SeriesInstanceUID"] for s in web.find_series(study_uid, Modality="SR")]
    assert len(sr_series) == len(srs)
    back = web.retrieve(study_uid, tmp_path / "back", series_uids=sr_series)
    local = {pydicom.dcmread(f).SOPInstanceUID: f for f in srs}
    assert sorted(p.stem for p in back) == sorted(local)
    by_series = {r["SeriesInstanceUID"]: r for r in result["results"]}
    for p in back:
        assert p.read_bytes() == local[p.stem].read_bytes()  # the SR file as written by infer, byte for byte
        sr = read_classification_sr(p)
        assert sr["predicted"] == by_series[sr["referenced_series"][0]]["predicted"]
        ds = pydicom.dcmread(p)
        assert ds.StudyInstanceUID == study_uid and str(ds.PatientName) == PATIENT_NAME
    cget = pacs.get_study(study_uid, tmp_path / "cget", series_uids=sr_series)  # the DIMSE view of the same objects
    assert sorted(_data_set(p) == _data_set(local[p.stem]) for p in cget) == [True] * len(srs)


def test_infer_send_to_a_dicomweb_url_stores_the_seg_unchanged(web, orthanc, tmp_path_factory, tmp_path):
    """``medmonai infer --send-to URL`` (STOW-RS) of a SEG; WADO-RS gives the SEG file back byte for byte."""
    root = trained_segmenter(tmp_path_factory)
    study = copy_study(subject_dirs(root)[0], tmp_path / "study")
    study_uid = pydicom.dcmread(next(iter(_sources(study).values()))).StudyInstanceUID
    web.store(sorted(study.glob("*.dcm")))
    web.retrieve(study_uid, tmp_path / "retrieved")
    out = tmp_path / "out"
    argv = [
        "infer", str(SEG), str(tmp_path / "retrieved"), "--bundle-root", str(root), "--out", str(out),
        "--set", f"base_filters={SEG_FAST['base_filters']}", "--no-nifti", "--device", "cpu",
        "--allow-out-of-distribution", "--send-to", orthanc.dicomweb_url,
    ]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    local = {pydicom.dcmread(f).SOPInstanceUID: f for f in result_files(result, out)}
    seg_series = [s["SeriesInstanceUID"] for s in web.find_series(study_uid, Modality="SEG")]
    assert local and len(seg_series) == len(local)
    back = web.retrieve(study_uid, tmp_path / "back", series_uids=seg_series)
    assert sorted(p.stem for p in back) == sorted(local)
    for p in back:
        assert p.read_bytes() == local[p.stem].read_bytes()
        assert hd.seg.Segmentation.from_dataset(pydicom.dcmread(p)).StudyInstanceUID == study_uid


def test_watch_dicomweb_infers_a_new_study_and_stores_the_sr(web, orthanc, cls_model, cls_root, tmp_path):
    study = copy_study(subject_dirs(cls_root)[1], tmp_path / "study")
    sources = _sources(study)
    study_uid = pydicom.dcmread(next(iter(sources.values()))).StudyInstanceUID
    n_series = len({pydicom.dcmread(f).SeriesInstanceUID for f in sources.values()})
    assert main(["pacs", "store", orthanc.dicomweb_url, str(study)]) == 0  # STOW-RS through the CLI
    out = tmp_path / "out"
    argv = [
        "watch", str(CLS), "--dicomweb", orthanc.dicomweb_url, "--out", str(out), "--bundle-root", str(cls_root),
        "--once", "--stable-polls", "0", "--query", f"StudyInstanceUID={study_uid}", "--device", "cpu",
    ]  # fmt: skip
    assert main(argv) == 0  # one poll: QIDO-RS finds it, WADO-RS retrieves it, the SR goes back with STOW-RS
    state = json.loads((out / "watch_state.json").read_text())
    entry = state["studies"][study_uid]
    assert entry["status"] == "done" and len(entry["stored"]) == n_series
    assert not (out / study_uid / "input").exists()  # retrieved images are removed after the run
    sr_series = web.find_series(study_uid, Modality="SR")
    assert len(sr_series) == n_series
    assert PATIENT_NAME not in (out / study_uid / "results.json").read_text()
    assert PATIENT_ID not in (out / study_uid / "results.json").read_text()
    # the next poll skips it (the SR series are not taken as new input either)
    second = watch_pacs(cls_model, web, out, query={"StudyInstanceUID": study_uid}, once=True)
    assert second["already_done"] == [study_uid] and second["processed"] == []
    assert len(web.find_series(study_uid, Modality="SR")) == n_series
    # pacs find/get through the CLI with the URL
    assert main(["pacs", "get", orthanc.dicomweb_url, "--study-uid", study_uid, "--out", str(tmp_path / "g")]) == 0
    assert len(list((tmp_path / "g").rglob("*.dcm"))) == len(sources) + n_series


def test_dicomweb_errors_name_the_url_and_the_status(dicomweb, orthanc, web, tmp_path, capsys):
    with pytest.raises(dicomweb.DicomWebError, match=r"dicom-web/studies/1\.2\.3\.999.*HTTP 404|not found"):
        web.retrieve("1.2.3.999", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    wrong_root = dicomweb.DicomWebClient(orthanc.url + "/no-such-root")
    with pytest.raises(dicomweb.DicomWebError, match=r"/no-such-root/studies.*HTTP 404"):
        wrong_root.find_studies()
    port = free_port()  # nothing listens there
    with pytest.raises(dicomweb.DicomWebError, match=rf"http://127\.0\.0\.1:{port}/dicom-web: QIDO-RS.*failed"):
        dicomweb.DicomWebClient(f"http://127.0.0.1:{port}/dicom-web", timeout=5).echo()
    bad = tmp_path / "bad.dcm"
    bad.write_text("not dicom")
    with pytest.raises(ValueError, match="bad.dcm: not a readable DICOM file"):
        web.store([bad])
    for url in ("ftp://host/dicom-web", "127.0.0.1:8042", "http://u:p@127.0.0.1/dicom-web", "http://h/x?a=1"):
        with pytest.raises(ValueError):
            dicomweb.DicomWebClient(url)
    assert main(["pacs", "move", orthanc.dicomweb_url, "--study-uid", "1.2.3"]) == 2
    assert "C-MOVE is DIMSE only" in capsys.readouterr().err
    assert main(["watch", str(CLS), "--dicomweb", "ORTHANC@127.0.0.1:4242", "--out", str(tmp_path / "o")]) == 2
    assert "expects an http(s):// URL" in capsys.readouterr().err


class _Stub(BaseHTTPRequestHandler):
    """A fake DICOMweb service: records the Authorization header; answers by path."""

    seen: list[str | None] = []
    refused = ""

    def log_message(self, *args):  # keep the test output quiet
        pass

    def _answer(self, code, body=b"", ctype="application/dicom+json", headers=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - the http.server API
        _Stub.seen.append(self.headers.get("Authorization"))
        if self.path.startswith("/locked/"):
            self._answer(401, b"{}", headers=[("WWW-Authenticate", 'Basic realm="pacs"')])
        elif self.path.startswith("/no-paging/"):  # ignores offset and limit: always the same two studies
            rows = [{"0020000D": {"vr": "UI", "Value": [uid]}} for uid in ("1.2.1", "1.2.2")]
            self._answer(200, json.dumps(rows).encode())
        elif self.path.startswith("/moved/"):
            self._answer(302, headers=[("Location", "http://elsewhere.invalid/dicom-web/studies")])
        else:
            self._answer(200, b"[]")

    def do_POST(self):  # noqa: N802 - a STOW-RS that refuses every instance
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        failed = {
            "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.4"]},
            "00081155": {"vr": "UI", "Value": [_Stub.refused]},
            "00081197": {"vr": "US", "Value": [0xC000]},
        }
        body = {"00081198": {"vr": "SQ", "Value": [failed]}}
        self._answer(200, json.dumps(body).encode())


def test_auth_redirect_and_refused_store_against_a_stub(dicomweb, monkeypatch, tmp_path, cls_root):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _Stub.seen.clear()
        dicomweb.DicomWebClient(f"{base}/open", username="alice", password="s3cret").echo()
        dicomweb.DicomWebClient(f"{base}/open", token="tok-123").echo()
        assert _Stub.seen[0].startswith("Basic ") and _Stub.seen[1] == "Bearer tok-123"
        monkeypatch.setenv("MEDMONAI_DICOMWEB_TOKEN", "tok-env")
        dicomweb.make_client(f"{base}/open").echo()
        assert _Stub.seen[-1] == "Bearer tok-env"
        with pytest.raises(ValueError, match="MEDMONAI_DICOMWEB_PASSWORD"):
            dicomweb.make_client(f"{base}/open", username="alice")
        with pytest.raises(dicomweb.DicomWebError, match=r"/locked/studies.*HTTP 401.*credentials"):
            dicomweb.DicomWebClient(f"{base}/locked").find_studies()
        with pytest.raises(dicomweb.DicomWebError, match="redirects to http://elsewhere.invalid.*not followed"):
            dicomweb.DicomWebClient(f"{base}/moved").find_studies()
        monkeypatch.setattr(dicomweb, "QIDO_PAGE", 2)
        with pytest.raises(dicomweb.DicomWebError, match="repeats StudyInstanceUID 1.2.1.*does not page"):
            dicomweb.DicomWebClient(f"{base}/no-paging").find_studies()
        f = sorted(subject_dirs(cls_root)[0].glob("*.dcm"))[0]
        _Stub.refused = str(pydicom.dcmread(f).SOPInstanceUID)
        with pytest.raises(dicomweb.DicomWebError, match=rf"{f.name}: STOW-RS .* refused 1 instance.*0xC000"):
            dicomweb.DicomWebClient(f"{base}/open").store([f])
    finally:
        server.shutdown()
        server.server_close()
