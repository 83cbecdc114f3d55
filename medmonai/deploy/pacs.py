"""A small PACS client (DIMSE with ``pynetdicom``), an Orthanc REST helper and a local Orthanc launcher.

* :class:`PacsClient` — C-ECHO, C-STORE, C-FIND (study, series and instance level), C-GET and C-MOVE against any
  DICOM node (Orthanc, dcm4chee, a hospital PACS). C-MOVE is what most hospital PACS offer for retrieval: the PACS
  opens its own association back to a storage SCP that :meth:`PacsClient.move_study` runs for the duration of the
  retrieval, on the port under which our AE title is registered at the PACS. Retrieved instances are written
  atomically as ``out_dir/{SeriesInstanceUID}/{SOPInstanceUID}.dcm``. Queries ask for UIDs, dates, modalities and
  counts only — never for patient names or ids — and ``pynetdicom``'s own log is kept at WARNING so that no dataset
  dump reaches the logs.
* :class:`OrthancRest` — read-only checks through Orthanc's REST API (``urllib``, proxies bypassed): find a study by
  its StudyInstanceUID, list its series and instances, download an instance.
* :class:`OrthancServer` — starts the Debian/Ubuntu ``orthanc`` binary on loopback with a temporary storage folder
  and free ports, waits until it answers, and stops it (what the tests use; also handy for trying the pipeline).

Example::

    from medmonai.deploy.pacs import PacsClient

    pacs = PacsClient("127.0.0.1", 4242, "ORTHANC", calling_aet="MEDMONAI")
    pacs.store(files)                                  # C-STORE
    studies = pacs.find_studies()                      # C-FIND, [{"StudyInstanceUID": ..., ...}]
    files = pacs.get_study(studies[0]["StudyInstanceUID"], "retrieved/")   # C-GET
    mover = PacsClient("127.0.0.1", 4242, "ORTHANC", calling_aet="MEDMONAI", move_port=11112)
    files = mover.retrieve(studies[0]["StudyInstanceUID"], "retrieved/")     # C-MOVE (move_port set), else C-GET
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from medmonai.utils import PathLike, atomic_write, atomic_write_json, safe_output_path

__all__ = [
    "PacsError",
    "DicomNode",
    "PacsClient",
    "OrthancRest",
    "OrthancServer",
    "find_orthanc",
    "find_dicomweb_plugin",
    "free_port",
    "parse_node",
]

logger = logging.getLogger(__name__)

#: storage SOP classes requested for C-GET when the instance-level query gives none
_COMMON_STORAGE = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
)
_STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
_SERIES_KEYS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "NumberOfSeriesRelatedInstances")
_INSTANCE_KEYS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber")


class PacsError(RuntimeError):
    """A DICOM network operation failed; the message names the node, the operation and the DICOM status."""


def _quiet_pynetdicom() -> None:
    """Keep pynetdicom's logger at WARNING unless the user configured it (its debug output dumps datasets)."""
    log = logging.getLogger("pynetdicom")
    if log.level == logging.NOTSET:
        log.setLevel(logging.WARNING)


@dataclass(frozen=True)
class DicomNode:
    """A DICOM application entity: host, port and AE title."""

    host: str
    port: int
    aet: str

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


def parse_node(text: str) -> DicomNode:
    """Parse ``AET@HOST:PORT`` (e.g. ``ORTHANC@127.0.0.1:4242``).

    Raises:
        ValueError: for another form.
    """
    aet, sep, rest = text.partition("@")
    host, sep2, port = rest.rpartition(":")
    if not sep or not sep2 or not aet or not host or not port.isdigit():
        raise ValueError(f"expected a DICOM node as AET@HOST:PORT (e.g. ORTHANC@127.0.0.1:4242), got {text!r}")
    return DicomNode(host, int(port), aet)


def _status_text(status: Any) -> str:
    code = getattr(status, "Status", None)
    if code is None:
        return "no response (connection lost, timed out or aborted)"
    comment = getattr(status, "ErrorComment", "")
    return f"status 0x{int(code):04X}" + (f" ({comment})" if comment else "")


def _query_dataset(level: str, keys: Sequence[str], match: Mapping[str, str]) -> Any:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k in keys:
        setattr(ds, k, "")
    for k, v in match.items():
        setattr(ds, k, v)
    return ds


def _to_dict(ds: Any, keys: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in keys:
        if k not in ds:
            continue
        v = ds[k].value
        if v is None or v == "":
            out[k] = None
        elif isinstance(v, list | tuple) or type(v).__name__ == "MultiValue":
            out[k] = [str(x) for x in v]
        elif k.startswith("NumberOf") or k in ("SeriesNumber", "InstanceNumber"):
            try:
                out[k] = int(v)
            except (TypeError, ValueError):
                out[k] = str(v)
        else:
            out[k] = str(v)
    return out


class PacsClient:
    """DIMSE service user (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE) for one remote DICOM node, with ``pynetdicom``.

    Args:
        host: the node's host name or address.
        port: its DICOM port.
        called_aet: its AE title.
        calling_aet: our AE title (the node must know it, e.g. Orthanc's ``DicomModalities``).
        timeout: seconds for connection, DIMSE replies and network reads.
        move_port: the port of our storage SCP for C-MOVE, as registered at the node with ``calling_aet`` and this
            host's address; when set, :meth:`retrieve` uses C-MOVE instead of C-GET.
    """

    def __init__(
        self,
        host: str,
        port: int,
        called_aet: str,
        calling_aet: str = "MEDMONAI",
        timeout: float = 30.0,
        move_port: int | None = None,
    ) -> None:
        _quiet_pynetdicom()
        self.node = DicomNode(host, int(port), called_aet)
        self.calling_aet = calling_aet
        self.timeout = float(timeout)
        self.move_port = int(move_port) if move_port else None

    @classmethod
    def from_node(
        cls, node: DicomNode | str, calling_aet: str = "MEDMONAI", timeout: float = 30.0, move_port: int | None = None
    ) -> PacsClient:
        """A client for ``node`` (a :class:`DicomNode` or ``AET@HOST:PORT``)."""
        n = parse_node(node) if isinstance(node, str) else node
        return cls(n.host, n.port, n.aet, calling_aet=calling_aet, timeout=timeout, move_port=move_port)

    # ------------------------------------------------------------------------------------------ association
    def _ae(self) -> Any:
        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = self.timeout
        return ae

    def _associate(self, ae: Any, what: str, **kwargs: Any) -> Any:
        assoc = ae.associate(self.node.host, self.node.port, ae_title=self.node.aet, **kwargs)
        if not assoc.is_established:
            reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "could not connect"
            raise PacsError(
                f"{self.node}: association for {what} {reason} (is the node running, and does it accept the AE "
                f"title {self.calling_aet!r} from this host?)"
            )
        return assoc

    # ----------------------------------------------------------------------------------------------- echo
    def echo(self) -> bool:
        """C-ECHO: True when the node answers with success, else raises :class:`PacsError`."""
        ae = self._ae()
        ae.add_requested_context(Verification)
        assoc = self._associate(ae, "C-ECHO")
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if getattr(status, "Status", None) != 0:
            raise PacsError(f"{self.node}: C-ECHO failed ({_status_text(status)})")
        return True

    # ---------------------------------------------------------------------------------------------- store
    def store(self, files: Iterable[PathLike]) -> list[str]:
        """C-STORE every file (read whole, sent unchanged) in one association.

        Returns:
            The SOPInstanceUIDs stored.

        Raises:
            FileNotFoundError: for a missing file.
            ValueError: for a file that is not DICOM (naming it).
            PacsError: when the association fails or the node refuses an instance (naming the file and status).
        """
        paths = [Path(f) for f in files]
        if not paths:
            return []
        contexts: dict[str, set[str]] = {}
        headers = {}
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"{p}: file to store does not exist")
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True)
            except (InvalidDicomError, OSError) as e:
                raise ValueError(f"{p}: not a readable DICOM file ({e})") from e
            sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", ""))
            if not sop_class:
                raise ValueError(f"{p}: no SOPClassUID, cannot be stored")
            syntax = str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
            contexts.setdefault(sop_class, {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}).add(syntax)
            headers[p] = ds
        if len(contexts) > 128:
            raise ValueError(f"{len(contexts)} different SOP classes in one store; at most 128 per association")
        ae = self._ae()
        for sop_class, syntaxes in contexts.items():
            ae.add_requested_context(sop_class, sorted(syntaxes))
        assoc = self._associate(ae, "C-STORE")
        stored = []
        try:
            for p in paths:
                ds = pydicom.dcmread(p)
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None or (code != 0 and not (0xB000 <= code <= 0xBFFF)):  # success or warning
                    raise PacsError(f"{p}: C-STORE to {self.node} failed ({_status_text(status)})")
                stored.append(str(ds.SOPInstanceUID))
        finally:
            if assoc.is_established:
                assoc.release()
        logger.info(f"stored {len(stored)} instance(s) in {self.node}")
        return stored

    # ----------------------------------------------------------------------------------------------- find
    def _find(self, level: str, keys: Sequence[str], match: Mapping[str, str]) -> list[dict[str, Any]]:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = self._associate(ae, "C-FIND")
        out = []
        try:
            query = _query_dataset(level, keys, match)
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                code = getattr(status, "Status", None)
                if code in (0xFF00, 0xFF01):
                    if identifier is not None:
                        out.append(_to_dict(identifier, keys))
                elif code != 0:
                    raise PacsError(f"{self.node}: C-FIND at {level} level failed ({_status_text(status)})")
        finally:
            if assoc.is_established:
                assoc.release()
        return out

    def find_studies(self, **match: str) -> list[dict[str, Any]]:
        """C-FIND at study level; ``match`` holds matching keys (``StudyDate="20240101-"``, ``ModalitiesInStudy="CT"``).

        Returns:
            One dict per study with StudyInstanceUID, StudyDate, StudyTime, ModalitiesInStudy and the numbers of
            series and instances (no patient attributes).
        """
        return self._find("STUDY", _STUDY_KEYS, match)

    def find_series(self, study_uid: str, **match: str) -> list[dict[str, Any]]:
        """C-FIND of the series of a study: SeriesInstanceUID, Modality, SeriesNumber, description, instance count."""
        return self._find("SERIES", _SERIES_KEYS, {"StudyInstanceUID": study_uid, **match})

    def find_instances(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """C-FIND of the instances of a series: SOPInstanceUID, SOPClassUID, InstanceNumber."""
        match = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
        return self._find("IMAGE", _INSTANCE_KEYS, match)

    # ------------------------------------------------------------------------------------------ retrieve
    def retrieve(self, study_uid: str, out_dir: PathLike, series_uids: Sequence[str] | None = None) -> list[Path]:
        """Retrieve a study with C-MOVE when ``move_port`` is set, else with C-GET (see those methods)."""
        if self.move_port:
            return self.move_study(study_uid, out_dir, series_uids=series_uids)
        return self.get_study(study_uid, out_dir, series_uids=series_uids)

    def _series_and_classes(self, study_uid: str, series_uids: Sequence[str] | None) -> tuple[list[str], set[str]]:
        """The series to retrieve (all of the study's by default) and their storage SOP classes (C-FIND)."""
        series = list(series_uids or [s["SeriesInstanceUID"] for s in self.find_series(study_uid)])
        if not series:
            raise PacsError(f"{self.node}: study {study_uid} not found (C-FIND gave no series)")
        sop_classes: set[str] = set()
        for s in series:
            sop_classes.update(i["SOPClassUID"] for i in self.find_instances(study_uid, s) if i.get("SOPClassUID"))
        return series, sop_classes or set(_COMMON_STORAGE)

    @staticmethod
    def _store_handler(out: Path, written: list[Path], failures: list[str]) -> Any:
        """A C-STORE handler that writes each instance atomically as ``out/{series}/{sop}.dcm``, exactly as received.

        Both names go through :func:`medmonai.utils.safe_output_path` (UIDs from the network are untrusted): a UID
        such as ``../x`` or ``/tmp/x`` is sanitised and never leads outside ``out``.
        """

        def on_store(event: Any) -> int:
            try:
                ds = event.dataset
                ds.file_meta = event.file_meta
                folder = safe_output_path(out, ds.get("SeriesInstanceUID"), what="SeriesInstanceUID")
                name = safe_output_path(folder, ds.get("SOPInstanceUID"), ".dcm", what="SOPInstanceUID")
                written.append(atomic_write(name, lambda tmp: ds.save_as(tmp, enforce_file_format=True)))
                return 0x0000
            except Exception as e:  # noqa: BLE001 - answer the SCU with a failure status, report it below
                failures.append(f"{type(e).__name__}: {e}")
                return 0xA700

        return on_store

    def _check_retrieve_status(self, status: Any, what: str, series_uid: str) -> None:
        """Raise :class:`PacsError` unless a C-GET / C-MOVE response is pending, success or warning."""
        code = getattr(status, "Status", None)
        if code is None or (code not in (0x0000, 0xFF00) and not (0xB000 <= code <= 0xBFFF)):
            hint = ""
            if what == "C-MOVE" and code == 0xA801:
                hint = f"; the node does not know the move destination {self.calling_aet!r}: register it there"
            raise PacsError(f"{self.node}: {what} of series {series_uid} failed ({_status_text(status)}){hint}")
        failed = getattr(status, "NumberOfFailedSuboperations", None)
        if code != 0xFF00 and failed:
            raise PacsError(f"{self.node}: {what} of series {series_uid}: {failed} instance(s) were not delivered")

    def get_study(self, study_uid: str, out_dir: PathLike, series_uids: Sequence[str] | None = None) -> list[Path]:
        """C-GET a study (or some of its series) into ``out_dir/{SeriesInstanceUID}/{SOPInstanceUID}.dcm``.

        The storage SOP classes to accept are taken from an instance-level C-FIND first. Every file is written
        atomically, exactly as received (the dataset with its file meta).

        Returns:
            The files written.

        Raises:
            PacsError: when the study is unknown, the association fails, or an operation reports failure.
        """
        series, sop_classes = self._series_and_classes(study_uid, series_uids)
        written: list[Path] = []
        failures: list[str] = []
        on_store = self._store_handler(Path(out_dir), written, failures)
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        roles = []
        for sop_class in sorted(sop_classes)[:127]:
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
            roles.append(build_role(sop_class, scp_role=True))
        assoc = self._associate(ae, "C-GET", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        try:
            for s in series:
                query = _query_dataset("SERIES", (), {"StudyInstanceUID": study_uid, "SeriesInstanceUID": s})
                for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
                    self._check_retrieve_status(status, "C-GET", s)
        finally:
            if assoc.is_established:
                assoc.release()
        if failures:
            raise PacsError(f"{self.node}: {len(failures)} retrieved instance(s) could not be written: {failures[0]}")
        logger.info(f"retrieved {len(written)} instance(s) of {len(series)} series from {self.node}")
        return written

    def move_study(
        self,
        study_uid: str,
        out_dir: PathLike,
        series_uids: Sequence[str] | None = None,
        port: int | None = None,
        bind_address: str = "",
    ) -> list[Path]:
        """C-MOVE a study (or some of its series) to ourselves, into ``out_dir/{series UID}/{SOP instance UID}.dcm``.

        For the duration of the call a storage SCP with our AE title listens on ``port``; the node is asked to move
        each series to our AE title, and opens its own association to the address and port under which that AE title
        is registered there (e.g. Orthanc's ``DicomModalities``, a hospital PACS's AE list). Every file is written
        atomically, exactly as received.

        Args:
            study_uid: the study.
            out_dir: output folder.
            series_uids: only these series (default: all of the study's).
            port: the port to listen on (default ``move_port``); it must be the one registered at the node.
            bind_address: the address to listen on (default: every interface).

        Returns:
            The files written.

        Raises:
            ValueError: when no port is given.
            PacsError: when the study is unknown, the port cannot be opened, the node refuses the move (e.g. an
                unknown destination) or reports instances it could not deliver.
        """
        port = port or self.move_port
        if not port:
            raise ValueError(
                f"C-MOVE from {self.node} needs the port of our storage SCP (move_port / --move-port): the port under "
                f"which the AE title {self.calling_aet!r} and this host are registered at the node"
            )
        series, sop_classes = self._series_and_classes(study_uid, series_uids)
        written: list[Path] = []
        failures: list[str] = []
        scp = self._ae()
        for sop_class in sorted(sop_classes):
            scp.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        try:
            server = scp.start_server(
                (bind_address, int(port)),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, self._store_handler(Path(out_dir), written, failures))],
            )
        except OSError as e:
            raise PacsError(f"cannot listen on port {port} for C-MOVE from {self.node}: {e}") from e
        try:
            ae = self._ae()
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = self._associate(ae, "C-MOVE")
            try:
                for s in series:
                    query = _query_dataset("SERIES", (), {"StudyInstanceUID": study_uid, "SeriesInstanceUID": s})
                    responses = assoc.send_c_move(query, self.calling_aet, StudyRootQueryRetrieveInformationModelMove)
                    for status, _ in responses:
                        self._check_retrieve_status(status, "C-MOVE", s)
            finally:
                if assoc.is_established:
                    assoc.release()
        finally:
            server.shutdown()
        if failures:
            raise PacsError(f"{self.node}: {len(failures)} moved instance(s) could not be written: {failures[0]}")
        logger.info(f"moved {len(written)} instance(s) of {len(series)} series from {self.node} (C-MOVE)")
        return written


# ------------------------------------------------------------------------------------------------ Orthanc REST
class OrthancRest:
    """Read-only helpers over Orthanc's REST API (for checks; the pipeline itself uses DIMSE).

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8042``.
        timeout: seconds per request.
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy

    def _open(self, path: str, data: bytes | None = None) -> bytes:
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data is not None else "GET")
        try:
            with self._opener.open(req, timeout=self.timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            raise PacsError(f"{self.url}{path}: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError) as e:
            raise PacsError(f"{self.url}{path}: {e}") from e

    def get(self, path: str) -> Any:
        """GET a JSON resource (``/system``, ``/studies/{id}``...)."""
        return json.loads(self._open(path))

    def download(self, instance_id: str) -> bytes:
        """The DICOM file of an instance (Orthanc id)."""
        return self._open(f"/instances/{instance_id}/file")

    def lookup(self, uid: str, kind: str = "Study") -> str | None:
        """Orthanc id of the resource with this DICOM UID (``kind``: Study, Series or Instance), or None."""
        hits = json.loads(self._open("/tools/lookup", uid.encode("ascii")))
        return next((h["ID"] for h in hits if h.get("Type") == kind), None)

    def study_series(self, study_uid: str) -> list[dict[str, Any]]:
        """The series of a study: ``{"id", "SeriesInstanceUID", "Modality", "instances": [instance ids]}``.

        Raises:
            PacsError: when Orthanc does not hold the study.
        """
        sid = self.lookup(study_uid, "Study")
        if sid is None:
            raise PacsError(f"{self.url}: study {study_uid} is not in Orthanc")
        out = []
        for series in self.get(f"/studies/{sid}/series"):
            tags = series.get("MainDicomTags", {})
            out.append(
                {
                    "id": series["ID"],
                    "SeriesInstanceUID": tags.get("SeriesInstanceUID"),
                    "Modality": tags.get("Modality"),
                    "instances": list(series.get("Instances", [])),
                }
            )
        return out


# ------------------------------------------------------------------------------------------------ Orthanc server
def find_orthanc() -> str | None:
    """Path of the ``Orthanc`` executable (``PATH``, then ``/usr/sbin/Orthanc``), or None."""
    exe = shutil.which("Orthanc")
    if exe:
        return exe
    return "/usr/sbin/Orthanc" if os.access("/usr/sbin/Orthanc", os.X_OK) else None


#: where the Debian/Ubuntu package ``orthanc-dicomweb`` puts Orthanc's DICOMweb plugin
DICOMWEB_PLUGIN_PATHS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")


def find_dicomweb_plugin() -> str | None:
    """Path of Orthanc's DICOMweb plugin (Debian/Ubuntu package ``orthanc-dicomweb``), or None."""
    return next((p for p in DICOMWEB_PLUGIN_PATHS if os.path.isfile(p)), None)


def free_port() -> int:
    """A TCP port free on loopback now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OrthancServer:
    """A throw-away Orthanc on loopback: temporary storage, free ports, only our AE title may connect.

    No plugins, except the DICOMweb plugin with ``dicomweb=True`` (``DicomWeb.Root`` ``/dicom-web/``, on the HTTP port).

    The configuration (``orthanc.json`` in ``workdir``) sets ``StorageDirectory`` / ``IndexDirectory`` under
    ``workdir``, ``RemoteAccessAllowed: false`` (HTTP from loopback only), ``AuthenticationEnabled: false``,
    and a ``DicomModalities`` entry for ``client_aet`` on 127.0.0.1 allowed to echo, store, find, get and move;
    unknown AE titles and other hosts are refused (``DicomAlwaysAllowStore: false``, ``DicomCheckModalityHost:
    true``).

    Use as a context manager::

        with OrthancServer(tmp_dir) as orthanc:
            pacs = PacsClient("127.0.0.1", orthanc.dicom_port, orthanc.aet)

    Args:
        workdir: folder for the configuration, the storage and the log (``orthanc.log``).
        executable: the Orthanc binary (default: :func:`find_orthanc`).
        aet: Orthanc's AE title.
        client_aet: the AE title allowed to connect (ours).
        client_port: the port of our own SCP (C-MOVE destination), default: a free port.
        startup_timeout: seconds to wait for the server to answer.
        dicomweb: load the DICOMweb plugin (:func:`find_dicomweb_plugin`; a path may be given instead of True),
            served under :attr:`dicomweb_url` (``{url}/dicom-web``).
    """

    def __init__(
        self,
        workdir: PathLike,
        executable: str | None = None,
        aet: str = "ORTHANC",
        client_aet: str = "MEDMONAI",
        client_port: int | None = None,
        startup_timeout: float = 60.0,
        dicomweb: bool | str = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.dicomweb_plugin = (dicomweb if isinstance(dicomweb, str) else find_dicomweb_plugin()) if dicomweb else None
        if dicomweb and not self.dicomweb_plugin:
            raise FileNotFoundError("Orthanc's DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")
        self.executable = executable or find_orthanc()
        if not self.executable:
            raise FileNotFoundError("Orthanc is not installed (Debian/Ubuntu: apt-get install orthanc)")
        self.aet = aet
        self.client_aet = client_aet
        self.client_port = client_port or free_port()
        self.startup_timeout = startup_timeout
        self.http_port = 0
        self.dicom_port = 0
        self._proc: subprocess.Popen | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """Base URL of the DICOMweb services (QIDO-RS, WADO-RS, STOW-RS) when the plugin is loaded."""
        return f"{self.url}/dicom-web"

    @property
    def node(self) -> DicomNode:
        """Orthanc's DICOM node."""
        return DicomNode("127.0.0.1", self.dicom_port, self.aet)

    @property
    def log_file(self) -> Path:
        """Orthanc's stdout/stderr."""
        return self.workdir / "orthanc.log"

    def config(self) -> dict[str, Any]:
        """The Orthanc configuration written to ``orthanc.json``."""
        return {
            "Name": "medmonai-local",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "DicomCheckCalledAet": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {
                "medmonai": {
                    "AET": self.client_aet,
                    "Host": "127.0.0.1",
                    "Port": self.client_port,
                    "AllowEcho": True,
                    "AllowFind": True,
                    "AllowGet": True,
                    "AllowMove": True,
                    "AllowStore": True,
                }
            },
            "Plugins": [self.dicomweb_plugin] if self.dicomweb_plugin else [],
            "DicomWeb": {"Enable": bool(self.dicomweb_plugin), "Root": "/dicom-web/", "EnableWado": False},
            "SaveJobs": False,
            "HttpCompressionEnabled": False,
            "DeidentifyLogs": True,
        }

    def _tail(self, n: int = 2000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def start(self) -> OrthancServer:
        """Write the configuration, start Orthanc and wait until its REST API and DICOM port answer.

        Raises:
            RuntimeError: when it exits or does not answer in time (with the end of its log).
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _attempt in range(3):  # a free port may be taken between probing and binding: retry with new ones
            self.http_port, self.dicom_port = free_port(), free_port()
            cfg = atomic_write_json(self.workdir / "orthanc.json", self.config())
            self._log = open(self.log_file, "ab")  # noqa: SIM115 - kept open while the server runs
            self._proc = subprocess.Popen(
                [self.executable, str(cfg)], stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=str(self.workdir), start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + self.startup_timeout
            rest = OrthancRest(self.url, timeout=2.0)
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    last_error = f"Orthanc exited with status {self._proc.returncode}"
                    break
                try:
                    rest.get("/system")
                    with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=2.0):
                        pass
                    logger.info(f"Orthanc {self.node} started (REST {self.url}, storage {self.workdir})")
                    return self
                except (PacsError, OSError) as e:
                    last_error = str(e)
                    time.sleep(0.2)
            else:
                last_error = f"no answer within {self.startup_timeout:.0f} s ({last_error})"
            self.stop()
        raise RuntimeError(f"{self.executable}: Orthanc did not start: {last_error}\n{self._tail()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 20 s)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
